"""Training stage: the hand-written GD / HB / NAG loop against an independent NumPy float64 reference (the paper's
recursions written out literally), against torch.optim.SGD with autograd, packed vs single runs, the CLI's
determinism and divergence handling, and the Gram-spectrum tracking.

    PYTHONPATH=src python -m pytest tests/test_train.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from momentum_ntk import devices, engine, gram, loop, model, train
from momentum_ntk.tables import RUN_COLUMNS
from momentum_ntk.entry import cli

N, D, M = 64, 37, 53  # odd sizes on purpose: per-run slices of packed buffers are not naturally aligned


# --------------------------------------------------------------------------------------------------------------------
# Independent float64 reference: eqs. (1)-(5) of the paper, written out in NumPy
# --------------------------------------------------------------------------------------------------------------------
def ref_trajectory(X, y, W0, a, method, eta, beta, steps):
    """Losses, max distances and weights W(t) of eq. (3) / (4) / (5) with w_r(−1) = w_r(0)."""
    m = W0.shape[1]
    W_prev, W, g_prev = W0.copy(), W0.copy(), None
    losses, dists, weights = [], [], []
    for t in range(steps + 1):
        Z = X @ W
        f = np.maximum(Z, 0.0) @ a / np.sqrt(m)
        r = f - y
        losses.append(0.5 * np.sum(r**2))
        dists.append(np.max(np.sqrt(np.sum((W - W0) ** 2, axis=0))))
        weights.append(W.copy())
        if t == steps:
            break
        g = X.T @ (np.outer(r, a / np.sqrt(m)) * (Z > 0))  # ∂ℓ/∂W, eq. (7)
        if g_prev is None:
            g_prev = g  # g(−1) = g(0)
        if method == "gd":
            W_next = W - eta * g
        elif method == "hb":
            W_next = W + beta * (W - W_prev) - eta * g
        else:
            W_next = W + beta * (W - W_prev) - eta * g - beta * eta * (g - g_prev)
        W_prev, W, g_prev = W, W_next, g
    return np.array(losses), np.array(dists), weights


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(N) < 0.5, 1.0, -1.0)
    W0, a = model.init_params(D, M, seed=3)
    Z = X @ W0
    S = (Z >= 0).astype(float)
    lam_max = np.linalg.eigvalsh((X @ X.T) * (S @ S.T) / M)[-1]
    return X, y, W0, a, 0.5 / lam_max  # η = 1 / (2 λmax(H(0)))


def rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.mark.parametrize("method,beta", [("gd", 0.0), ("hb", 0.9), ("nag", 0.9), ("nag", 0.5)])
def test_matches_independent_reference_float64(problem, method, beta):
    X, y, W0, a, eta = problem
    df = loop.train(X, y, W0, a, method=method, eta=eta, beta=beta, steps=60, gram_every=0)
    losses, dists, _ = ref_trajectory(X, y, W0, a, method, eta, beta, 60)
    assert list(df.columns) == list(RUN_COLUMNS)
    assert df["step"].tolist() == list(range(61)) and df["step"].dtype == np.int64
    assert rel(df["loss"].to_numpy(), losses) < 1e-10
    assert rel(df["max_dist"].to_numpy()[1:], dists[1:]) < 1e-10 and df["max_dist"].iloc[0] == 0.0
    assert losses[-1] < 0.5 * losses[0]  # it trains
    assert df.attrs["diverged"] is False and df.attrs["steps_done"] == 60
    assert np.flatnonzero(df["lambda_min_H"].notna()).tolist() == [0, 60]  # gram_every=0: first and last step


def test_methods_differ_as_the_paper_says(problem):
    """NAG's gradient correction changes the trajectory; NAG with β = 0 is GD."""
    X, y, W0, a, eta = problem
    hb = loop.train(X, y, W0, a, method="hb", eta=eta, beta=0.9, steps=20)
    nag = loop.train(X, y, W0, a, method="nag", eta=eta, beta=0.9, steps=20)
    gd = loop.train(X, y, W0, a, method="gd", eta=eta, beta=0.9, steps=20)
    nag0 = loop.train(X, y, W0, a, method="nag", eta=eta, beta=0.0, steps=20)
    assert hb["loss"].iloc[1] == nag["loss"].iloc[1]  # first step: both −η g(0)
    assert rel(hb["loss"].to_numpy()[2:], nag["loss"].to_numpy()[2:]) > 1e-6
    pd.testing.assert_frame_equal(gd, nag0, check_exact=True)


# --------------------------------------------------------------------------------------------------------------------
# Against autograd and torch.optim.SGD
# --------------------------------------------------------------------------------------------------------------------
def sgd_trajectory(X, y, W0, a, eta, beta, steps, nesterov):
    Xt, yt, at = (torch.tensor(v) for v in (X, y, a))
    W = torch.tensor(W0, requires_grad=True)
    opt = torch.optim.SGD([W], lr=eta, momentum=beta, nesterov=nesterov)
    losses, dists = [], []
    for t in range(steps + 1):
        loss = 0.5 * ((model.forward(Xt, W, at) - yt) ** 2).sum()
        losses.append(loss.item())
        dists.append((W.detach() - torch.tensor(W0)).norm(dim=0).max().item())
        if t == steps:
            break
        opt.zero_grad()
        loss.backward()
        if nesterov and t == 0:
            opt.state[W]["momentum_buffer"] = -W.grad.detach().clone() / beta  # b(−1) = −g(0)/β: g(−1) = g(0)
        opt.step()
    return np.array(losses), np.array(dists)


@pytest.mark.parametrize("method", ["hb", "nag"])
def test_matches_torch_sgd(problem, method):
    X, y, W0, a, eta = problem
    df = loop.train(X, y, W0, a, method=method, eta=eta, beta=0.9, steps=40)
    losses, dists = sgd_trajectory(X, y, W0, a, eta, 0.9, 40, nesterov=method == "nag")
    assert rel(df["loss"].to_numpy(), losses) < 1e-10
    assert rel(df["max_dist"].to_numpy()[1:], dists[1:]) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hand_gradient_equals_autograd(problem, dtype):
    X, y, W0, a, _ = problem
    Xt, yt, at = (torch.tensor(v, dtype=dtype) for v in (X, y, a))
    W = torch.tensor(W0 + 0.3, dtype=dtype, requires_grad=True)
    loss = 0.5 * ((model.forward(Xt, W, at) - yt) ** 2).sum()
    loss.backward()
    hand_loss, grad = engine.loss_and_grad(Xt, yt, W.detach(), at)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert abs(hand_loss - loss.item()) <= tol * abs(loss.item())
    torch.testing.assert_close(grad, W.grad, rtol=tol, atol=tol * W.grad.abs().max().item())


# --------------------------------------------------------------------------------------------------------------------
# Packing, precision, Gram tracking
# --------------------------------------------------------------------------------------------------------------------
def _assert_same_runs(got, want):
    for g, w in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(g, w, check_exact=True)
        assert g.attrs == w.attrs


@pytest.mark.parametrize("pack_size, sync_every", [(None, 3), (None, 50), (2, 7), (1, 1000)])
def test_lagged_metrics_give_the_outputs_of_a_check_every_step(problem, pack_size, sync_every):
    """Metrics reach the host only every ``sync_every`` steps, and runs go in batches of ``pack_size``; runs that
    diverge between two syncs still stop at their exact step with the same rows as a check after every step (the
    reference: sync_every=1, one run at a time). The diverged runs keep computing until the next sync, so this also
    checks that their extra steps never leak into the output or into the other runs of the pack."""
    X, y, W0, a, eta = problem
    runs = [
        {"method": "nag", "eta": eta, "beta": 0.9},
        {"method": "hb", "eta": eta * 40, "beta": 0.99},  # diverges after a few steps
        {"method": "hb", "eta": eta, "beta": 0.5},
        {"method": "nag", "eta": eta * 400, "beta": 0.5},  # diverges at once
        {"method": "gd", "eta": eta},
        {"method": "hb", "eta": eta * 12, "beta": 0.9},  # diverges later (step 11)
    ]
    kw = dict(steps=60, gram_every=5, gram_rows=np.arange(0, N, 3), divergence_factor=1e3)
    ref = [loop.train_many(X, y, W0, a, [r], **kw, sync_every=1)[0] for r in runs]
    steps = [df.attrs["diverged_step"] for df in ref]
    assert steps[0] is None and steps[2] is None and steps[4] is None
    assert all(s is not None for s in steps[1::2]) and len(set(steps[1::2])) > 1  # several divergence steps
    got = loop.train_many(X, y, W0, a, runs, **kw, pack_size=pack_size, sync_every=sync_every)
    _assert_same_runs(got, ref)


def test_gram_tracking_matches_an_independent_eigensolve(problem):
    """λmin/λmax of H(t) on the tracked rows and the changed pattern, at tracked steps, against NumPy on W(t)."""
    X, y, W0, a, eta = problem
    rows = np.arange(1, N, 2)
    runs = [{"method": "hb", "eta": eta, "beta": 0.9}, {"method": "nag", "eta": eta, "beta": 0.9}]
    frames = loop.train_many(X, y, W0, a, runs, steps=20, gram_every=10, gram_rows=rows, dtype="float64")
    for run, df in zip(runs, frames):
        *_, weights = ref_trajectory(X, y, W0, a, run["method"], run["eta"], run["beta"], 20)
        for t in (0, 10, 20):
            S = (X @ weights[t] >= 0).astype(float)
            ev = np.linalg.eigvalsh((X[rows] @ X[rows].T) * (S[rows] @ S[rows].T) / M)
            assert df["lambda_min_H"][t] == pytest.approx(ev[0], rel=1e-9, abs=1e-12)
            assert df["lambda_max_H"][t] == pytest.approx(ev[-1], rel=1e-9)
            assert df["pattern_changed"][t] == np.mean(S != (X @ W0 >= 0))
        assert df["lambda_min_H"].notna().sum() == 3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_packed_equals_single_bit_for_bit(problem, dtype):
    X, y, W0, a, eta = problem
    runs = [
        {"method": "hb", "eta": eta, "beta": 0.9},
        {"method": "nag", "eta": eta, "beta": 0.9},
        {"method": "gd", "eta": eta, "beta": 0.0},
        {"method": "nag", "eta": eta / 2, "beta": 0.5},
        {"method": "hb", "eta": eta * 400, "beta": 0.9},  # diverges: the pack shrinks mid-run
    ]
    packed = loop.train_many(X, y, W0, a, runs, steps=30, gram_every=10, dtype=dtype)
    assert packed[-1].attrs["diverged"] and not any(df.attrs["diverged"] for df in packed[:-1])
    for run, df in zip(runs, packed, strict=True):
        single = loop.train(X, y, W0, a, **run, steps=30, gram_every=10, dtype=dtype)
        pd.testing.assert_frame_equal(df, single, check_exact=True)
        assert df.attrs == single.attrs


def test_float32_close_to_float64(problem):
    X, y, W0, a, eta = problem
    d64 = loop.train(X, y, W0, a, method="nag", eta=eta, beta=0.9, steps=60, dtype="float64")
    d32 = loop.train(X, y, W0, a, method="nag", eta=eta, beta=0.9, steps=60, dtype="float32")
    assert rel(d32["loss"].to_numpy(), d64["loss"].to_numpy()) < 1e-3
    assert rel(d32["max_dist"].to_numpy()[1:], d64["max_dist"].to_numpy()[1:]) < 1e-3


def test_gram_tracking_equals_direct_eigvalsh(problem):
    X, y, W0, a, eta = problem
    rows = np.array([0, 3, 4, 9, 11, 17, 20, 41, 63])
    df = loop.train(X, y, W0, a, method="hb", eta=eta, beta=0.9, steps=25, gram_every=10, gram_rows=rows)
    tracked = df["lambda_min_H"].notna().to_numpy()
    assert np.flatnonzero(tracked).tolist() == [0, 10, 20, 25]
    assert df.loc[~tracked, ["lambda_max_H", "pattern_changed"]].isna().all().all()
    _, _, weights = ref_trajectory(X, y, W0, a, "hb", eta, 0.9, 25)
    S0 = X @ W0 >= 0
    for t in (0, 20, 25):
        S = X @ weights[t] >= 0
        Sr = S[rows].astype(float)
        ev = np.linalg.eigvalsh((X[rows] @ X[rows].T) * (Sr @ Sr.T) / M)
        row = df.iloc[t]
        assert abs(row["lambda_min_H"] - ev[0]) <= 1e-10 * ev[-1]
        assert abs(row["lambda_max_H"] - ev[-1]) <= 1e-10 * ev[-1]
        assert row["pattern_changed"] == np.mean(S != S0)
    assert df["pattern_changed"].iloc[25] > 0  # patterns do move at this η


def test_the_one_finite_gram_builder_is_exact(problem):
    """model.gram_from_pattern (float32 co-activation counts, one pattern or a batch) and the in-place
    model.gram_finite equal the float64 formula of eq. (9) bit for bit."""
    X, _, W0, _, _ = problem
    Xt = torch.tensor(X)
    S = model.activation_pattern(Xt, torch.tensor(W0))
    Sf = S.to(torch.float64)
    reference = (Xt @ Xt.T) * (Sf @ Sf.T) / S.shape[1]
    assert torch.equal(model.gram_from_pattern(Xt @ Xt.T, S), reference)
    assert torch.equal(model.gram_finite(Xt, torch.tensor(W0)), reference)
    batch = torch.stack([S, ~S])
    Sn = (~S).to(torch.float64)
    assert torch.equal(model.gram_from_pattern(Xt @ Xt.T, batch)[1], (Xt @ Xt.T) * (Sn @ Sn.T) / S.shape[1])


def test_gram_inf_closed_form_is_psd_with_half_diagonal(problem):
    X = problem[0]
    H = gram.ntk_gram(X)
    np.testing.assert_allclose(np.diag(H), 0.5)
    assert np.linalg.eigvalsh(H)[0] > 0


def test_bad_runs_are_user_errors(problem):
    X, y, W0, a, eta = problem
    for kw in ({"method": "adam"}, {"beta": 1.0}, {"eta": -1.0}):
        args = {"method": "hb", "eta": eta, "beta": 0.9} | kw
        with pytest.raises(train.UserError):
            loop.train(X, y, W0, a, **args, steps=2)


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def cli_inputs(tmp_path, problem):
    X, y, *_ = problem
    np.savez(tmp_path / "toy.npz", X=X, y=y, index=np.arange(N), label=np.zeros(N, dtype=np.int64))
    (tmp_path / "summary.json").write_text(json.dumps({"eta": {"10": 0.05, "20": 0.025}}))
    return tmp_path


def run_cli(tmp, name, *extra):
    argv = [
        "--data", str(tmp / "toy.npz"), "--ntk-summary", str(tmp / "summary.json"), "--dataset", "toy",
        "--method", "nag", "--width", "40", "--eta-divisor", "10", "--beta", "0.9", "--seed", "0",
        "--steps", "30", "--gram-every", "10", "--gram-max-n", "16", "--device", "cpu", "--threads", "1",
        "--no-progress", "--out", str(tmp / f"{name}.parquet"), "--meta", str(tmp / f"{name}.json"), *extra,
    ]  # fmt: skip
    return cli(train.main, argv)


def test_cli_same_seed_same_bytes(cli_inputs):
    assert run_cli(cli_inputs, "a") == 0
    assert run_cli(cli_inputs, "b") == 0
    assert (cli_inputs / "a.parquet").read_bytes() == (cli_inputs / "b.parquet").read_bytes()
    meta = json.loads((cli_inputs / "a.json").read_text())
    expected = {
        "dataset", "method", "width", "eta_divisor", "eta", "beta", "seed", "steps", "steps_done", "diverged",
        "diverged_step", "last_finite_loss", "gram_every", "gram_rows", "lambda0_rows", "dtype", "tf32", "device",
        "threads", "wall_s", "steps_per_s", "environment", "args",
    }  # fmt: skip
    assert expected <= set(meta)
    assert meta["eta"] == 0.05 and meta["dtype"] == "float32" and meta["tf32"] is False and meta["device"] == "cpu"
    assert meta["steps_done"] == 30 and meta["diverged"] is False and len(meta["gram_rows"]) == 16
    rows = np.array(meta["gram_rows"])
    X = np.load(cli_inputs / "toy.npz")["X"][rows]
    C = np.clip(X @ X.T, -1, 1)
    assert meta["lambda0_rows"] == pytest.approx(np.linalg.eigvalsh(C * (np.pi - np.arccos(C)) / (2 * np.pi))[0])
    df = pd.read_parquet(cli_inputs / "a.parquet")
    assert list(df.columns) == list(RUN_COLUMNS) and len(df) == 31
    assert (df.dtypes.iloc[1:] == np.float64).all()


def test_cli_huge_eta_is_recorded_as_diverged(cli_inputs):
    assert run_cli(cli_inputs, "big", "--eta", "1e6") == 0
    meta = json.loads((cli_inputs / "big.json").read_text())
    df = pd.read_parquet(cli_inputs / "big.parquet")
    assert meta["diverged"] is True and meta["eta"] == 1e6
    assert meta["steps_done"] == len(df) - 1 < 30
    assert np.isfinite(df["loss"]).all() and meta["last_finite_loss"] == df["loss"].iloc[-1]
    assert meta["diverged_step"] in (len(df) - 1, len(df))


def pack_cli(tmp, names, methods, divisors, betas, *extra):
    argv = [
        "--data", str(tmp / "toy.npz"), "--ntk-summary", str(tmp / "summary.json"), "--dataset", "toy",
        "--width", "40", "--seed", "0", "--method", *methods, "--eta-divisor", *divisors, "--beta", *betas,
        "--steps", "30", "--gram-every", "10", "--gram-max-n", "16", "--device", "cpu", "--threads", "1",
        "--no-progress", "--out", *[str(tmp / f"{n}.parquet") for n in names],
        "--meta", *[str(tmp / f"{n}.json") for n in names], *extra,
    ]  # fmt: skip
    return cli(train.main, argv)


@pytest.mark.parametrize("pack_size", ["0", "3"])
def test_cli_pack_writes_each_run_as_if_alone(cli_inputs, pack_size):
    """One job trains a pack of runs (one after another on a CPU by default, or batched): each run's Parquet is
    byte-identical to the run trained by its own job, and its sidecar differs only in timing and pack fields."""
    methods, divisors, betas = ["nag", "hb", "nag"], ["10", "20", "10"], ["0.9", "0.9", "0.5"]
    names = [f"p{pack_size}_{i}" for i in range(3)]
    assert pack_cli(cli_inputs, names, methods, divisors, betas, "--pack-size", pack_size) == 0
    for name, m, c, b in zip(names, methods, divisors, betas):
        assert pack_cli(cli_inputs, [f"{name}_alone"], [m], [c], [b]) == 0
        assert (cli_inputs / f"{name}.parquet").read_bytes() == (cli_inputs / f"{name}_alone.parquet").read_bytes()
        packed, alone = (json.loads((cli_inputs / f"{n}.json").read_text()) for n in (name, f"{name}_alone"))
        assert (packed["pack_size"], alone["pack_size"]) == (3, 1)
        assert packed["pack_batch"] == (1 if pack_size == "0" else 3)
        timing = {"wall_s", "steps_per_s", "cuda_init_s", "pack_size", "pack_batch", "args"}
        assert {k: v for k, v in packed.items() if k not in timing} == {
            k: v for k, v in alone.items() if k not in timing
        }
        assert (packed["method"], packed["eta_divisor"], packed["beta"]) == (m, int(c), float(b))


def test_cli_reads_lambda0_of_the_tracked_rows_from_the_ntk_summary(cli_inputs):
    """λ0 of the tracked rows comes from the ntk stage's summary when it was made for the same rows (max_n, seed,
    n); otherwise (other rows, or an older summary) the job computes it itself."""
    summary = json.loads((cli_inputs / "summary.json").read_text())
    summary["gram_rows"] = {"max_n": 16, "seed": 0, "n": N, "lambda0": 0.125}
    (cli_inputs / "summary.json").write_text(json.dumps(summary))
    assert run_cli(cli_inputs, "from_summary") == 0
    meta = json.loads((cli_inputs / "from_summary.json").read_text())
    assert meta["lambda0_rows"] == 0.125 and meta["lambda0_rows_source"].endswith("summary.json")
    assert run_cli(cli_inputs, "other_rows", "--gram-seed", "1") == 0
    meta = json.loads((cli_inputs / "other_rows.json").read_text())
    assert meta["lambda0_rows_source"] == "computed" and meta["lambda0_rows"] != 0.125
    rows = np.array(meta["gram_rows"])
    X = np.load(cli_inputs / "toy.npz")["X"][rows]
    C = np.clip(X @ X.T, -1, 1)
    assert meta["lambda0_rows"] == pytest.approx(np.linalg.eigvalsh(C * (np.pi - np.arccos(C)) / (2 * np.pi))[0])


def test_cli_job_holding_a_gpu_without_cuda_stops(cli_inputs, capsys):
    """A job that holds gpu=1 but sees no CUDA device stops (exit 2) instead of quietly training on the CPU."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    argv_extra = ("--gpus-held", "1")
    for device in ("auto", "cpu"):
        assert pack_cli(cli_inputs, [f"gpu_{device}"], ["nag"], ["10"], ["0.9"], *argv_extra, "--device", device) == 2
        err = capsys.readouterr().err
        assert "gpu=1" in err and "CPU-only build" in err and "--set-resources train:gpu=0" in err
        assert not (cli_inputs / f"gpu_{device}.parquet").exists()


def test_cli_pack_lists_must_match(cli_inputs, capsys):
    assert pack_cli(cli_inputs, ["a", "b"], ["nag", "hb"], ["10", "20", "10"], ["0.9"]) == 2
    assert "--eta-divisor" in capsys.readouterr().err
    assert pack_cli(cli_inputs, ["a", "a"], ["nag", "hb"], ["10"], ["0.9"]) == 2
    assert "same file" in capsys.readouterr().err


def test_sidecar_records_the_effective_tf32_state(cli_inputs, monkeypatch):
    """TF32 is off in torch, but the environment can force it on (or off) behind torch's back: the record sees both."""
    assert devices.tf32_state()["tf32"] is False
    monkeypatch.setenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1")
    assert run_cli(cli_inputs, "tf32") == 0
    meta = json.loads((cli_inputs / "tf32.json").read_text())
    assert meta["tf32"] is True and meta["environment"]["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] == "1"
    assert meta["environment"]["tf32_torch_flag"] is False and "torch_cuda" in meta["environment"]
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    assert devices.tf32_state()["tf32"] is False


def test_cli_missing_divisor_names_the_fix(cli_inputs, capsys):
    assert run_cli(cli_inputs, "x", "--eta-divisor", "40") == 2
    err = capsys.readouterr().err
    assert "eta divisor 40" in err and "grid.eta_divisors" in err
