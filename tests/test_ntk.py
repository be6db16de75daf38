"""Tests of the NTK stage (src/momentum_ntk/ntk.py) against independent computations.

Run: PYTHONPATH=src python -m pytest tests/test_ntk.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.integrate
import scipy.stats
import torch

from momentum_ntk import gram, ntk
from momentum_ntk.entry import cli
from momentum_ntk.model import init_params

CONTRACT_KEYS = {
    "dataset", "n", "d", "lambda0", "lambda_max", "lambda_m", "kappa", "eta_divisors", "eta", "eigvec_dtype",
    "device", "wall_s", "peak_rss_mb",
}  # fmt: skip


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """n random unit vectors in R^d (float64)."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def h_inf_pair(xi: np.ndarray, xj: np.ndarray) -> float:
    """E_w[x_iᵀx_j 1{wᵀx_i ≥ 0} 1{wᵀx_j ≥ 0}] with the angle θ = 2 atan2(‖x_i − x_j‖, ‖x_i + x_j‖) (no arccos)."""
    theta = 2.0 * math.atan2(np.linalg.norm(xi - xj), np.linalg.norm(xi + xj))
    return float(xi @ xj) * (math.pi - theta) / (2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------------------
# H∞ against independent computations
# ---------------------------------------------------------------------------------------------------------------


def test_gram_matches_per_pair_angle_formula():
    X = unit_rows(25, 4, seed=1)
    X[3] = -X[2]  # antipodal pair: θ = π, H∞ = 0
    X[5] = X[4] + 1e-3 * X[6]
    X[5] /= np.linalg.norm(X[5])  # near-parallel pair
    H = gram.ntk_gram(X)
    ref = np.array([[h_inf_pair(xi, xj) for xj in X] for xi in X])
    # arccos(c) near c = 1 − δ amplifies the dot product's rounding ε by 1/√(2δ): ~1e-13 for the near-parallel pair
    np.testing.assert_allclose(H, ref, rtol=0, atol=1e-13)
    off = ~np.isin(np.arange(25), [4, 5])
    np.testing.assert_allclose(H[np.ix_(off, off)], ref[np.ix_(off, off)], rtol=0, atol=1e-15)
    assert H[2, 3] == pytest.approx(0.0, abs=1e-15)


def test_gram_matches_gaussian_orthant_probability():
    """P(wᵀx_i ≥ 0, wᵀx_j ≥ 0) from scipy's bivariate normal CDF (Genz), with correlation ρ = x_iᵀx_j."""
    X = unit_rows(5, 6, seed=2)
    H = gram.ntk_gram(X)
    for i in range(5):
        for j in range(i + 1, 5):
            rho = float(X[i] @ X[j])
            p = scipy.stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([0, 0])
            assert H[i, j] == pytest.approx(rho * p, abs=1e-6)


def test_gram_matches_quadrature_in_two_dimensions():
    """In R², w/‖w‖ is uniform on the circle, so the expectation is a 1-D integral over w's direction φ."""
    angles = np.array([0.0, 0.4, 1.3, 2.9, 4.0])
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    H = gram.ntk_gram(X)
    for i in range(len(X)):
        for j in range(len(X)):

            def both_active(phi: float, i: int = i, j: int = j) -> float:
                w = np.array([math.cos(phi), math.sin(phi)])
                return float(w @ X[i] >= 0 and w @ X[j] >= 0)

            kinks = sorted({(a + s) % (2 * math.pi) for a in angles[[i, j]] for s in (math.pi / 2, -math.pi / 2)})
            p, _ = scipy.integrate.quad(both_active, 0, 2 * math.pi, points=kinks, limit=200)
            assert H[i, j] == pytest.approx(float(X[i] @ X[j]) * p / (2 * math.pi), abs=1e-9)


def test_gram_matches_monte_carlo_finite_width():
    """H(0) at m = 200k is an average of m i.i.d. terms; H∞ must lie within 5 standard errors of it."""
    n, d, m = 6, 5, 200_000
    X = unit_rows(n, d, seed=3)
    W, _ = init_params(d, m, seed=7)
    S = (X @ W >= 0).astype(np.float64)  # (n, m)
    p_hat = S @ S.T / m  # fraction of neurons active on both x_i and x_j
    G = X @ X.T
    H_mc = G * p_hat
    se = np.abs(G) * np.sqrt(np.maximum(p_hat * (1 - p_hat), 1e-12) / m)
    H = gram.ntk_gram(X)
    assert np.all(np.abs(H - H_mc) <= 5 * se + 1e-12), np.max(np.abs(H - H_mc) / (se + 1e-300))


def test_gram_blocked_equals_unblocked_and_is_exactly_symmetric():
    X = unit_rows(53, 7, seed=4)
    full = gram.ntk_gram(X, block_rows=10_000)
    for block in (1, 8, 17, 52):
        H = gram.ntk_gram(X, block_rows=block)
        np.testing.assert_allclose(H, full, rtol=0, atol=1e-15)
        assert np.array_equal(H, H.T)


def test_gram_is_psd_with_half_diagonal():
    X = unit_rows(60, 5, seed=5)
    H = gram.ntk_gram(X)
    np.testing.assert_allclose(np.diag(H), 0.5, rtol=0, atol=1e-15)  # ‖x_i‖² is 1 to a few ulps
    assert np.trace(H) == pytest.approx(60 / 2, abs=1e-12)
    assert np.linalg.eigvalsh(H)[0] > 0  # Lemma 1: no parallel rows


def test_gram_handles_non_unit_rows_by_angle():
    X = unit_rows(8, 3, seed=6)
    scale = np.linspace(0.5, 3.0, 8)
    H = gram.ntk_gram(X * scale[:, None])
    np.testing.assert_allclose(H, gram.ntk_gram(X) * np.outer(scale, scale), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="zero rows"):
        gram.ntk_gram(np.zeros((2, 3)))


def test_max_offdiag_cosine_matches_brute_force():
    X = unit_rows(37, 4, seed=8)
    C = X @ X.T
    np.fill_diagonal(C, -np.inf)
    i, j = np.unravel_index(np.argmax(C), C.shape)
    cos, a, b = gram.max_offdiag_cosine(X, block_rows=5)
    assert cos == pytest.approx(C[i, j], abs=1e-15)
    assert {a, b} == {int(i), int(j)} and a < b


# ---------------------------------------------------------------------------------------------------------------
# Spectrum, constants, learning rates
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", gram.EIGH_DRIVERS)
def test_spectrum_against_numpy(driver):
    X = unit_rows(40, 6, seed=9)
    H = gram.ntk_gram(X)
    ref = np.linalg.eigvalsh(H)
    w, V = gram.ntk_spectrum(H.copy(), vectors=True, driver=driver, overwrite=True)
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(H @ V, V * w, atol=1e-12)
    np.testing.assert_allclose(V.T @ V, np.eye(40), atol=1e-12)
    w_only, none = gram.ntk_spectrum(H.copy(), vectors=False, driver=driver)
    assert none is None
    np.testing.assert_allclose(w_only, ref, rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_spectrum_on_cuda_matches_cpu():
    H = gram.ntk_gram(unit_rows(64, 5, seed=10))
    w, V = gram.ntk_spectrum(H, vectors=True, device="cuda")
    np.testing.assert_allclose(w, np.linalg.eigvalsh(H), atol=1e-12)
    np.testing.assert_allclose(H @ V, V * w, atol=1e-12)


def test_lemma_constants_and_learning_rates():
    X = unit_rows(30, 5, seed=11)
    ref = np.linalg.eigvalsh(gram.ntk_gram(X))
    c = gram.lemma_constants(gram.ntk_spectrum(gram.ntk_gram(X), vectors=False)[0])
    assert c["lambda0"] == pytest.approx(ref[0], rel=1e-10)
    assert c["lambda_max"] == pytest.approx(ref[-1], rel=1e-12)
    assert c["lambda_m"] == pytest.approx(ref[-1] + ref[0] / 4, rel=1e-12)
    assert c["kappa"] == pytest.approx((ref[-1] + ref[0] / 4) / (ref[0] / 2), rel=1e-10)
    eta = gram.learning_rates(c["lambda_m"], [10, 20])
    assert set(eta) == {"10", "20"}
    assert eta["10"] * 10 * c["lambda_m"] == pytest.approx(1.0)
    assert eta["20"] == pytest.approx(eta["10"] / 2)


# ---------------------------------------------------------------------------------------------------------------
# Lemma 2 at finite width
# ---------------------------------------------------------------------------------------------------------------


def test_subsample_rows():
    np.testing.assert_array_equal(gram.subsample_rows(5, 10, seed=0), np.arange(5))
    r = gram.subsample_rows(100, 30, seed=3)
    assert r.dtype == np.int64 and len(np.unique(r)) == 30 and np.all(np.diff(r) > 0) and r.max() < 100
    np.testing.assert_array_equal(r, gram.subsample_rows(100, 30, seed=3))
    assert not np.array_equal(r, gram.subsample_rows(100, 30, seed=4))


def test_finite_width_gap_against_direct_numpy():
    X = unit_rows(40, 5, seed=12)
    df = gram.finite_width_gap(X, [100, 20_000], seed=2, max_n=25)
    rows = gram.subsample_rows(40, 25, seed=2)
    Xr = X[rows]
    C = np.clip(Xr @ Xr.T, -1, 1)
    H_inf = np.array([[h_inf_pair(a, b) for b in Xr] for a in Xr])
    lam0 = np.linalg.eigvalsh(H_inf)[0]
    for rec in df.to_dict("records"):
        W, _ = init_params(5, rec["width"], seed=2)
        S = (Xr @ W >= 0).astype(np.float64)
        H0 = C * (S @ S.T) / rec["width"]
        assert rec["rows"] == 25 and rec["subsampled"]
        assert rec["gap_norm"] == pytest.approx(np.linalg.norm(H0 - H_inf, 2), rel=1e-9)
        assert rec["lambda_min_H0"] == pytest.approx(np.linalg.eigvalsh(H0)[0], rel=1e-9, abs=1e-12)
        assert rec["lambda0_rows"] == pytest.approx(lam0, rel=1e-9)
        assert rec["gap_over_quarter_lambda0"] == pytest.approx(rec["gap_norm"] / (lam0 / 4), rel=1e-9)
        assert rec["lemma2_gap_holds"] == (rec["gap_norm"] <= lam0 / 4)
    small, large = df["gap_norm"]
    assert large < small / 3  # ‖H(0) − H∞‖ shrinks like m^{-1/2}: 200× the width, ~14× smaller


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def outputs(tmp_path: Path) -> dict[str, Path]:
    names = {"spectrum": "spectrum.parquet", "summary": "summary.json", "eigvecs": "eigvecs.npy",
             "gap": "finite_width.parquet", "plot": "spectrum.png"}  # fmt: skip
    return {k: tmp_path / "out" / v for k, v in names.items()}


def cli_args(data: Path, out: dict[str, Path], *extra: str) -> list[str]:
    args = ["--data", str(data), "--dataset", "tiny", "--eta-divisors", "10", "20", "--widths", "50", "400",
            "--gap-max-n", "30", "--gap-seed", "0", "--device", "cpu", "--threads", "1", *extra]  # fmt: skip
    for key, path in out.items():
        args += [f"--{key}", str(path)]
    return args


def test_cli_end_to_end(tmp_path):
    X = unit_rows(40, 6, seed=13)
    data = tmp_path / "tiny.npz"
    np.savez(data, X=X, y=np.where(np.arange(40) % 2 == 0, 1.0, -1.0))
    out = outputs(tmp_path)
    assert cli(ntk.main, cli_args(data, out, "--eigvec-dtype", "float32", "--block-rows", "7")) == 0

    H = np.array([[h_inf_pair(a, b) for b in X] for a in X])
    ref = np.linalg.eigvalsh(H)
    spec = pd.read_parquet(out["spectrum"])
    assert list(spec.columns) == ["k", "eigenvalue"]
    assert spec["k"].dtype == np.int64 and spec["eigenvalue"].dtype == np.float64
    np.testing.assert_array_equal(spec["k"], np.arange(40))
    np.testing.assert_allclose(spec["eigenvalue"], ref, atol=1e-12)

    summary = json.loads(out["summary"].read_text())
    assert CONTRACT_KEYS <= set(summary)
    assert (summary["dataset"], summary["n"], summary["d"], summary["device"]) == ("tiny", 40, 6, "cpu")
    assert summary["lambda0"] == pytest.approx(ref[0], rel=1e-9)
    assert summary["lambda_max"] == pytest.approx(ref[-1], rel=1e-12)
    assert summary["lambda_m"] == pytest.approx(ref[-1] + ref[0] / 4, rel=1e-12)
    assert summary["kappa"] == pytest.approx(summary["lambda_m"] / (ref[0] / 2), rel=1e-9)
    assert summary["eta_divisors"] == [10, 20]
    assert summary["eta"] == {c: pytest.approx(1 / (int(c) * summary["lambda_m"])) for c in ("10", "20")}
    assert summary["eigvec_dtype"] == "float32" and summary["trace"] == pytest.approx(20.0)
    assert summary["wall_s"] > 0 and summary["peak_rss_mb"] > 0
    assert set(summary["phase_s"]) == {"gram_s", "eigh_s", "write_s", "gap_s", "gram_rows_s"}
    # λ0 on the train stage's Gram-tracking rows (default 2000 ≥ n: all rows), for every train job to read
    assert summary["gram_rows"] == {"max_n": 2000, "seed": 0, "n": 40, "lambda0": pytest.approx(ref[0], rel=1e-9)}

    V = np.load(out["eigvecs"])
    assert V.dtype == np.float32 and V.shape == (40, 40)
    np.testing.assert_allclose((V * spec["eigenvalue"].to_numpy()) @ V.T, H, atol=1e-5)

    gap = pd.read_parquet(out["gap"])
    assert list(gap["width"]) == [50, 400] and gap["width"].dtype == np.int64
    assert gap["subsampled"].all() and (gap["rows"] == 30).all()
    for col in ("gap_norm", "lambda_min_H0", "lambda0_rows", "gap_over_lambda0"):
        assert np.isfinite(gap[col]).all()

    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the outputs, and beside each file a later stage reads the SHA-256 record its writer left (momentum_ntk.io)
    records = [f".{p.name}.sha256" for p in out.values() if p.suffix in (".parquet", ".json", ".npz", ".npy")]
    assert sorted(p.name for p in out["summary"].parent.iterdir()) == sorted([p.name for p in out.values()] + records)


def test_cli_gram_rows_lambda0_matches_the_lemma2_rows(tmp_path):
    """With the train stage's rows equal to the Lemma 2 rows (same max_n and seed), both stages report one λ0."""
    X = unit_rows(40, 6, seed=3)
    data = tmp_path / "tiny.npz"
    np.savez(data, X=X)
    out = outputs(tmp_path)
    assert cli(ntk.main, cli_args(data, out, "--gram-max-n", "30", "--gram-seed", "0")) == 0
    rec = json.loads(out["summary"].read_text())["gram_rows"]
    gap = pd.read_parquet(out["gap"])
    assert (rec["max_n"], rec["seed"], rec["n"]) == (30, 0, 40)
    assert rec["lambda0"] == pytest.approx(gap["lambda0_rows"].iloc[0], rel=1e-9)
    rows = gram.subsample_rows(40, 30, 0)
    C = np.clip(X[rows] @ X[rows].T, -1, 1)
    assert rec["lambda0"] == pytest.approx(np.linalg.eigvalsh(C * (np.pi - np.arccos(C)) / (2 * np.pi))[0], rel=1e-6)



def test_cli_float64_eigvecs_and_all_rows(tmp_path):
    X = unit_rows(12, 3, seed=14)
    data = tmp_path / "small.npz"
    np.savez(data, X=X)
    out = outputs(tmp_path)
    assert cli(ntk.main, cli_args(data, out, "--eigvec-dtype", "float64", "--eigh-driver", "evd")) == 0
    V = np.load(out["eigvecs"])
    assert V.dtype == np.float64
    np.testing.assert_allclose(V.T @ V, np.eye(12), atol=1e-12)
    gap = pd.read_parquet(out["gap"])
    assert not gap["subsampled"].any() and (gap["rows"] == 12).all()


def corrupt_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Bad input files, each with a phrase its error message must contain."""
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    no_x = tmp_path / "no_x.npz"
    np.savez(no_x, y=np.ones(3))
    not_unit = tmp_path / "not_unit.npz"
    np.savez(not_unit, X=2 * unit_rows(5, 3, seed=0))
    nan = tmp_path / "nan.npz"
    Xn = unit_rows(5, 3, seed=0)
    Xn[1, 1] = np.nan
    np.savez(nan, X=Xn)
    parallel = tmp_path / "parallel.npz"
    Xp = unit_rows(5, 3, seed=0)
    Xp[4] = Xp[1]
    np.savez(parallel, X=Xp)
    return {
        "missing": (tmp_path / "missing.npz", "not found"),
        "garbage": (garbage, "not a readable .npz"),
        "no_x": (no_x, "no array 'X'"),
        "not_unit": (not_unit, "unit norm"),
        "nan": (nan, "NaN"),
        "parallel": (parallel, "rows 1 and 4"),
    }


@pytest.mark.parametrize("case", ["missing", "garbage", "no_x", "not_unit", "nan", "parallel"])
def test_cli_bad_input_exits_2_without_outputs(tmp_path, capsys, case):
    path, phrase = corrupt_inputs(tmp_path)[case]
    out = outputs(tmp_path)
    assert cli(ntk.main, cli_args(path, out)) == 2
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1 and str(path) in message[0] and phrase in message[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    data = tmp_path / "ok.npz"
    np.savez(data, X=unit_rows(5, 3, seed=0))
    assert cli(ntk.main, cli_args(data, outputs(tmp_path), "--eta-divisors", "0")) == 2
    assert "--eta-divisors" in capsys.readouterr().err
