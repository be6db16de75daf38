"""The row-space training engine (momentum_ntk.rowspace) against the direct engine and the independent NumPy float64
reference of tests/test_train.py: equal to rounding in float64 (loss, max distance, Gram spectrum, pattern changes,
divergence step), close in float32, packed equal to alone, the step interface's residuals, no d×m memory, the engine
choice and its record.

    PYTHONPATH=src python -m pytest tests/test_rowspace.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import pack_cli, ref_trajectory, rel

from momentum_ntk import engine, loop, model, plan, rowspace, train
from momentum_ntk.tables import RUN_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
N, M = 48, 53  # n < d (K = X Xᵀ invertible) and n > d (K singular: C has a null-space part that moves nothing)
SHAPES = {"n<d": (N, 90), "n>d": (N, 29)}
EXACT = 1e-12  # float64: row space vs direct, relative
# float32: the row-space run against the direct one, both float32, on runs whose activation patterns agree (an entry
# of Z within ~1e-6 of 0 can flip in either engine, as between float32 and float64, and the trajectories then part):
# loss relative per step while ℓ ≥ 1e-4·ℓ(0) (the residual's float32 floor sets the relative error of a smaller
# loss), max_dist relative to its largest value, λmin(H) relative at tracked steps, the trajectory errors e(k)
# (already relative to ‖r(0)‖) absolutely. Measured over 64 such runs (GD, HB, NAG, β 0.9 and 0.99, n/d = 48/90,
# 48/29, 32/784, 64/784, 200/784, 3 seeds, 100 steps): 2.5e-5, 4.1e-7, 0, 5.4e-7 (H(0)), 7.6e-7 (H∞). The direct
# engine's own float32 error against float64 is of the same size.
F32 = {"loss": 1e-4, "max_dist": 2e-6, "lambda_min_H": 1e-6, "traj_err_h0": 4e-6, "traj_err_inf": 4e-6}


def make_problem(n: int, d: int, seed: int = 1):
    """Unit rows, ±1 labels, W(0) and a of model.init_params, η = 1/(2 λmax(H(0)))."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    W0, a = model.init_params(d, M, seed=3)
    S = (X @ W0 >= 0).astype(float)
    lam_max = np.linalg.eigvalsh((X @ X.T) * (S @ S.T) / M)[-1]
    return X, y, W0, a, 0.5 / lam_max


@pytest.fixture(scope="module", params=list(SHAPES), ids=list(SHAPES))
def problem(request):
    return make_problem(*SHAPES[request.param])


def same_attrs(row: dict, direct: dict) -> None:
    """Equal run records (steps done, divergence step, ...) but the engine; the last finite loss to EXACT."""
    assert {k: v for k, v in row.items() if k != "last_finite_loss"} == {
        k: v for k, v in direct.items() if k != "last_finite_loss"
    } | {"engine": "rowspace"}
    assert row["last_finite_loss"] == pytest.approx(direct["last_finite_loss"], rel=EXACT)


def max_rel(a: pd.Series, b: pd.Series) -> float:
    """max |a − b| / |b| over the rows where b is finite (tracked steps of the Gram columns)."""
    u, v = a.to_numpy(), b.to_numpy()
    ok = np.isfinite(v)
    assert np.array_equal(ok, np.isfinite(u))
    return float(np.max(np.abs(u[ok] - v[ok]) / np.maximum(np.abs(v[ok]), 1e-300), initial=0.0))


RUNS = [("gd", 0.0), ("hb", 0.9), ("nag", 0.9)]
TRAJ = [c for c in RUN_COLUMNS if c.startswith("traj_err")]  # the trajectory errors e(k), read from p.f only


# --------------------------------------------------------------------------------------------------------------------
# float64: the same numbers as the direct engine and the reference
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,beta", RUNS)
def test_float64_equals_direct_engine_and_reference(problem, method, beta):
    X, y, W0, a, eta = problem
    kw = dict(method=method, eta=eta, beta=beta, steps=60, gram_every=10, dtype="float64")
    direct = loop.train(X, y, W0, a, engine="direct", **kw)
    row = loop.train(X, y, W0, a, engine="rowspace", **kw)
    same_attrs(row.attrs, direct.attrs)
    assert direct.attrs["engine"] == "direct"
    assert list(row.columns) == list(direct.columns) and row["step"].equals(direct["step"])
    for col in ("loss", "max_dist", "lambda_min_H", "lambda_max_H"):
        assert max_rel(row[col], direct[col]) <= EXACT, col
    for col in TRAJ:  # e(k) is relative to ‖r(0)‖ already: compare absolutely (it starts at 0)
        assert np.max(np.abs(row[col] - direct[col])) <= EXACT and row[col].iloc[-1] > 1e-6, col
    assert row["max_dist"].iloc[0] == 0.0 and row["pattern_changed"].equals(direct["pattern_changed"])
    assert row["pattern_changed"].iloc[-1] > 0  # patterns do move: the Gram columns are not trivially equal
    losses, dists, _ = ref_trajectory(X, y, W0, a, method, eta, beta, 60)  # the paper's recursion in NumPy
    assert rel(row["loss"].to_numpy(), losses) < 1e-10
    assert rel(row["max_dist"].to_numpy()[1:], dists[1:]) < 1e-10
    assert losses[-1] < 0.1 * losses[0]


def test_step_interface_holds_residuals_and_the_row_space_weights(problem):
    """After engine.forward, p.f holds r = f(W(t)) − y (k, n, 1) for every run, as in the direct engine (the contract
    per-step trackers read); W(0) + Xᵀ C(t) is the direct engine's W(t), step by step, for a pack of all methods."""
    X, y, W0, a, eta = problem
    specs = [engine.RunSpec(mth, eta, b) for mth, b in RUNS] + [engine.RunSpec("nag", eta / 3, 0.5)]
    sh = engine.shared_state(X, y, W0, a, dtype="float64", device="cpu")
    p = engine.new_pack(sh, specs)
    rsh = rowspace.row_shared_state(X, y, W0, a, dtype="float64", device="cpu")
    rp = rowspace.new_pack(rsh, specs)
    Xt = torch.tensor(X)
    for t in range(25):
        m_direct, _ = engine.forward(sh, p)
        m_row, _ = engine.forward(rsh, rp)
        assert rp.f.shape == p.f.shape == (len(specs), len(y), 1)
        f = torch.relu(Xt @ (torch.tensor(W0) + Xt.T @ rp.C)) @ torch.tensor(a) / np.sqrt(M)  # from C alone
        torch.testing.assert_close(rp.f[:, :, 0], f - torch.tensor(y), rtol=0, atol=1e-13)
        torch.testing.assert_close(rp.f, p.f, rtol=0, atol=1e-13)
        torch.testing.assert_close(m_row, m_direct, rtol=EXACT, atol=1e-300)
        W_row = torch.tensor(W0) + Xt.T @ rp.C
        torch.testing.assert_close(W_row, p.W, rtol=0, atol=1e-13 * float(p.W.abs().max()))
        engine.update(sh, p, t)
        engine.update(rsh, rp, t)


def test_divergence_at_the_same_step_and_packed_equals_alone():
    """Runs that diverge stop at the same step in both engines (float64), the pack shrinks mid-run, and every run of a
    row-space pack is bit-identical to it trained alone (float32 and float64), whatever the sync lag."""
    X, y, W0, a, eta = make_problem(*SHAPES["n<d"])
    runs = [
        {"method": "nag", "eta": eta, "beta": 0.9},
        {"method": "hb", "eta": eta * 40, "beta": 0.99},  # diverges after a few steps
        {"method": "gd", "eta": eta},
        {"method": "nag", "eta": eta * 400, "beta": 0.5},  # diverges at once
        {"method": "hb", "eta": eta * 24, "beta": 0.9},  # diverges later
        {"method": "nag", "eta": eta * 14, "beta": 0.9},  # and at yet another step
    ]
    kw = dict(steps=50, gram_every=5, gram_rows=np.arange(0, N, 3), divergence_factor=1e3)
    direct = loop.train_many(X, y, W0, a, runs, **kw, dtype="float64", engine="direct")
    row = loop.train_many(X, y, W0, a, runs, **kw, dtype="float64", engine="rowspace", sync_every=7)
    steps = [df.attrs["diverged_step"] for df in direct]
    assert steps[0] is None and steps[2] is None and None not in steps[3:] and len(set(steps[1::2] + steps[4:])) == 4
    for r, d_ in zip(row, direct, strict=True):
        same_attrs(r.attrs, d_.attrs)
        for col in ("loss", "max_dist", "lambda_min_H", "lambda_max_H"):
            assert max_rel(r[col], d_[col]) <= EXACT, col
        for col in TRAJ:
            assert np.max(np.abs(r[col] - d_[col])) <= EXACT, col
    for dtype in ("float64", "float32"):
        packed = loop.train_many(X, y, W0, a, runs, **kw, dtype=dtype, engine="rowspace", sync_every=4)
        for run, df in zip(runs, packed, strict=True):
            alone = loop.train_many(X, y, W0, a, [run], **kw, dtype=dtype, engine="rowspace", sync_every=1)[0]
            pd.testing.assert_frame_equal(df, alone, check_exact=True)
            assert df.attrs == alone.attrs


# --------------------------------------------------------------------------------------------------------------------
# float32: within the stated tolerance of the direct engine
# --------------------------------------------------------------------------------------------------------------------
def f32_errors(df: pd.DataFrame, ref: pd.DataFrame) -> dict[str, float]:
    """df against ref as F32 measures them: loss while ℓ ≥ 1e-4·ℓ(0), max_dist to its largest, λmin at tracked steps."""
    keep = ref["loss"] >= 1e-4 * ref["loss"].iloc[0]
    return {
        "loss": max_rel(df["loss"][keep], ref["loss"][keep]),
        "max_dist": float(np.max(np.abs(df["max_dist"] - ref["max_dist"])) / ref["max_dist"].max()),
        "lambda_min_H": max_rel(df["lambda_min_H"], ref["lambda_min_H"]),
    } | {col: float(np.max(np.abs(df[col] - ref[col]))) for col in TRAJ}


@pytest.mark.parametrize("method,beta", [("hb", 0.9), ("nag", 0.9), ("hb", 0.99), ("nag", 0.99)])
def test_float32_agrees_with_direct_engine(problem, method, beta):
    """The float32 row-space run within F32 of the float32 direct run, and both within F32 of the float64 run (same
    activation patterns at every tracked step); the float32 runs differ from the float64 one (not vacuous)."""
    X, y, W0, a, eta = problem
    kw = dict(method=method, eta=eta, beta=beta, steps=100, gram_every=10)
    ref = loop.train(X, y, W0, a, dtype="float64", engine="direct", **kw)
    direct, row = (loop.train(X, y, W0, a, dtype="float32", engine=e, **kw) for e in ("direct", "rowspace"))
    for df in (direct, row):
        assert df.attrs["steps_done"] == 100 and df["pattern_changed"].equals(ref["pattern_changed"])
    errors = {"row vs direct": f32_errors(row, direct), "row": f32_errors(row, ref), "direct": f32_errors(direct, ref)}
    for key, tol in F32.items():
        for which, err in errors.items():
            assert err[key] <= tol, (which, key, errors)
    assert errors["row"]["loss"] > 0 and errors["row vs direct"]["loss"] > 0


# --------------------------------------------------------------------------------------------------------------------
# W(0) through its pre-activations; memory
# --------------------------------------------------------------------------------------------------------------------
def test_init_preactivations_is_x_w0_of_init_params():
    """model.init_preactivations draws the same W(0) and a as model.init_params, a block of rows at a time, and sums
    X W(0) in exactly the order model.preactivations does (same bits), several blocks when d·m > 2^22."""
    X, *_ = make_problem(20, 300)
    m = 2**22 // 128 + 5  # 128 - 1 rows per block: 3 blocks of W(0)'s 300 rows
    W0, a = model.init_params(300, m, seed=7)
    pre, a2 = model.init_preactivations(X, m, seed=7)
    assert np.array_equal(a, a2)
    assert np.array_equal(pre.Z0, model.preactivations(X, W0).Z0)
    np.testing.assert_allclose(pre.Z0, X @ W0, rtol=0, atol=1e-12)


def test_preactivations_train_as_w0(problem):
    """Training from model.Preactivations (no d×m array) gives the bits of training from W(0) itself; auto picks the
    row-space engine for it; the direct engine refuses it."""
    X, y, W0, a, eta = problem
    kw = dict(method="nag", eta=eta, beta=0.9, steps=20, gram_every=5, dtype="float32")
    want = loop.train(X, y, W0, a, engine="rowspace", **kw)
    got = loop.train(X, y, model.preactivations(X, W0), a, engine="auto", **kw)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.attrs["engine"] == "rowspace"
    with pytest.raises(train.UserError, match="direct engine needs W"):
        loop.train(X, y, model.preactivations(X, W0), a, engine="direct", **kw)
    with pytest.raises(train.UserError, match="train.engine"):
        loop.train(X, y, W0, a, engine="fast", **kw)


def test_init_preactivations_holds_no_d_by_m_array():
    """X W(0) at d = 784, m = 2^15 drawn a block of rows at a time: NumPy's peak (tracemalloc) is the n×m result and
    one 2^22-entry block, far below W(0) itself (d·m doubles, 196 MiB)."""
    import tracemalloc

    X, *_ = make_problem(16, 784)
    m = 2**15
    tracemalloc.start()
    try:
        pre, _ = model.init_preactivations(X, m, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pre.shape == (16, m)
    assert peak <= 8 * 2**22 + 8 * 16 * m + 2**20, f"{peak / 2**20:.0f} MiB"  # one block and the result


MEMORY_PROBE = textwrap.dedent(
    """
    import numpy as np, torch
    from momentum_ntk import loop, model
    torch.set_num_threads(1)
    n, d, m = 64, 784, 2**17
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)); X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    pre, a = model.Preactivations(rng.standard_normal((n, m))), np.where(rng.random(m) < 0.5, 1.0, -1.0)
    small = model.Preactivations(pre.Z0[:, :8].copy())
    loop.train(X, y, small, a[:8], method="nag", eta=1e-3, beta=0.9, steps=1)  # torch's and MKL's start-up first

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as fh:  # the peak RSS (VmHWM) restarts from the current RSS
        fh.write("5")
    base = status("VmRSS:")
    df = loop.train(X, y, pre, a, method="nag", eta=0.1, beta=0.9, steps=3, gram_every=1, dtype="float32")
    assert df.attrs["engine"] == "rowspace" and df["loss"].notna().all()
    print(status("VmHWM:") - base)
    """
)


def test_training_memory_has_no_d_by_m_term():
    """A NAG run at n = 64, d = 784, m = 2^17 in float32 with Gram tracking at every step grows the peak RSS by n×m
    buffers only: measured 251 MiB (C, b, Z, M and X W(0) in float32, 160 MiB; the tracking's transient patterns; the
    bench's row_memory_formula gives 216 MiB without the float64 X W(0), which the probe holds before its baseline),
    below one d×m float32 buffer (392 MiB; the direct engine holds 4 of them and W(0) in float64: > 2.3 GiB)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.strip().splitlines()[-1])
    n, d, m = 64, 784, 2**17
    assert 5 * n * m * 4 < peak < 300 * 2**20, f"peak RSS growth {peak / 2**20:.0f} MiB"  # C, b, Z, M, Z0; no more
    assert peak < d * m * 4


# --------------------------------------------------------------------------------------------------------------------
# The engine choice: rule, CLI, sidecar, plan
# --------------------------------------------------------------------------------------------------------------------
def test_auto_rule_and_plan():
    """auto: row space when n ≤ plan.ROWSPACE_MAX_N_OVER_D · d, whatever m; the plan's memory has no d×m term then."""
    ratio = plan.ROWSPACE_MAX_N_OVER_D
    d = 784
    n_max = int(ratio * d)
    for m in (64, 2**20):
        assert plan.choose_engine("auto", n_max, d, m) == "rowspace"
        assert plan.choose_engine("auto", n_max + 1, d, m) == "direct"
        assert plan.choose_engine("direct", 8, d, m) == "direct"
        assert plan.choose_engine("rowspace", 10**4, d, m) == "rowspace"
    with pytest.raises(ValueError, match="engine"):
        plan.choose_engine("gpu", 8, d, 64)
    small, big = (plan.TrainJob(n=64, d=784, m=m, runs=8, steps=100, gram_rows=64, engine="rowspace",
                                w0_on_host=False) for m in (2**12, 2**17))  # fmt: skip
    per_m = (big.mem_mb() - small.mem_mb()) * 2**20 / (2**17 - 2**12)
    assert 4 * 64 * 4 <= per_m < 784 * 4  # bytes per unit of width: n×m buffers, less than one d×m float32 buffer
    direct = plan.TrainJob(n=64, d=784, m=2**17, runs=8, steps=100, gram_rows=64)
    assert direct.mem_mb() > 3 * big.mem_mb()
    assert big.flop() < direct.flop() / 3


@pytest.fixture()
def cli_inputs(tmp_path):
    """test_train's CLI toy data: n = 64 unit rows of d = 37, and an NTK summary with two learning rates."""
    X, y, *_ = make_problem(64, 37)
    np.savez(tmp_path / "toy.npz", X=X, y=y, index=np.arange(64), label=np.zeros(64, dtype=np.int64))
    (tmp_path / "summary.json").write_text(json.dumps({"eta": {"10": 0.05, "20": 0.025}}))
    return tmp_path


@pytest.mark.parametrize("engine,expected", [("auto", "direct"), ("rowspace", "rowspace")])
def test_cli_records_the_engine(cli_inputs, engine, expected):
    """The sidecar's `engine` is the engine used (the toy data has n = 64 > d = 37: auto takes the direct one); a
    row-space job's Parquet agrees with the direct job's within the float32 tolerance."""
    names = [f"{engine}_{i}" for i in range(2)]
    assert pack_cli(cli_inputs, names, ["nag", "hb"], ["10", "20"], ["0.9", "0.9"], "--engine", engine) == 0
    assert pack_cli(cli_inputs, ["ref_0", "ref_1"], ["nag", "hb"], ["10", "20"], ["0.9", "0.9"],
                    "--engine", "direct") == 0  # fmt: skip
    for name, ref in zip(names, ["ref_0", "ref_1"]):
        meta = json.loads((cli_inputs / f"{name}.json").read_text())
        assert meta["engine"] == expected and meta["args"]["engine"] == engine
        got, want = (pd.read_parquet(cli_inputs / f"{x}.parquet") for x in (name, ref))
        assert list(got.columns) == list(want.columns) and got["step"].equals(want["step"])
        errors = f32_errors(got, want)
        for key, tol in F32.items():
            assert errors[key] <= tol, (key, errors)
