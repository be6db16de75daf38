"""Trajectory error e(k) = ‖u(k) − u_lin(k)‖/‖u(0) − y‖ tracked by the training loop (momentum_ntk.trajectory),
against an independent float64 computation: the paper's recursions in NumPy for u(k), and the linearized residual
from the eigenmode recursion of momentum_ntk.dynamics on an eigendecomposition of H(0) / H∞ built here. Also the
reason the claims use it: two oscillating loss curves a little out of phase make the relative loss error blow up,
while e(k) stays small.

    PYTHONPATH=src python -m pytest tests/test_trajectory.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from momentum_ntk import compare, dynamics, loop, model
from test_train import ref_trajectory

N, D, M = 24, 13, 41


def _h0(X, W0):
    S = (X @ W0 >= 0).astype(float)
    return (X @ X.T) * (S @ S.T) / W0.shape[1]


def _hinf(X):
    G = X @ X.T
    cos = np.clip(G / np.outer(np.linalg.norm(X, axis=1), np.linalg.norm(X, axis=1)), -1, 1)
    H = G * (np.pi - np.arccos(cos)) / (2 * np.pi)
    np.fill_diagonal(H, np.diag(G) / 2)  # θ_ii = 0 exactly (arccos(1 − ε) ≈ √(2ε) would add ~1e-8)
    return H


def ref_errors(X, y, W0, a, H, method, eta, beta, steps):
    """e(k) from the measured outputs of the NumPy reference and the mode recursion of dynamics on H's eigenbasis."""
    m = W0.shape[1]
    _, _, weights = ref_trajectory(X, y, W0, a, method, eta, beta, steps)
    r = np.array([np.maximum(X @ W, 0) @ a / np.sqrt(m) - y for W in weights])  # (steps+1, n)
    lam, V = np.linalg.eigh(H)
    c = dynamics.linear_mode_trajectories(lam, V.T @ r[0], eta, beta, method, steps)  # (steps+1, n)
    xi = c @ V.T
    return np.linalg.norm(r - xi, axis=1) / np.linalg.norm(r[0])


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(N) < 0.5, 1.0, -1.0)
    W0, a = model.init_params(D, M, seed=2)
    eta = 0.5 / np.linalg.eigvalsh(_h0(X, W0))[-1]
    return X, y, W0, a, eta


@pytest.mark.parametrize("method,beta", [("gd", 0.0), ("hb", 0.9), ("nag", 0.9)])
def test_trajectory_error_matches_independent_float64(problem, method, beta):
    X, y, W0, a, eta = problem
    steps = 80
    df = loop.train(X, y, W0, a, method=method, eta=eta, beta=beta, steps=steps, gram_every=0, dtype="float64")
    for col, H in (("traj_err_h0", _h0(X, W0)), ("traj_err_inf", _hinf(X))):
        ref = ref_errors(X, y, W0, a, H, method, eta, beta, steps)
        got = df[col].to_numpy()
        assert got[0] == 0.0
        assert np.max(np.abs(got - ref)) < 1e-10, col
        assert ref.max() > 1e-3  # not trivially zero: a width-41 network is far from linear


def test_trajectory_error_shrinks_with_width(problem):
    """NTK theory: the linearization gets better as m grows (here 16× the width, NAG, same data and η)."""
    X, y, _, _, _ = problem
    sup = []
    for m in (64, 1024):
        W0, a = model.init_params(D, m, seed=0)
        eta = 0.5 / np.linalg.eigvalsh(_hinf(X))[-1]
        df = loop.train(X, y, W0, a, method="nag", eta=eta, beta=0.9, steps=150, gram_every=0, dtype="float64")
        sup.append(df["traj_err_h0"].max())
    assert sup[1] < 0.5 * sup[0]


def test_packed_trajectory_errors_equal_alone(problem):
    X, y, W0, a, eta = problem
    runs = [{"method": "hb", "eta": eta, "beta": 0.9}, {"method": "nag", "eta": eta, "beta": 0.5},
            {"method": "gd", "eta": eta}]
    packed = loop.train_many(X, y, W0, a, runs, steps=40, gram_every=0, dtype="float32", pack_size=3)
    for run, df in zip(runs, packed):
        alone = loop.train(X, y, W0, a, method=run["method"], eta=run["eta"], beta=run.get("beta", 0.0), steps=40,
                            gram_every=0, dtype="float32")
        for col in ("traj_err_h0", "traj_err_inf"):
            assert np.array_equal(df[col].to_numpy(), alone[col].to_numpy())


def test_diverged_run_keeps_errors_up_to_its_step(problem):
    X, y, W0, a, eta = problem
    df = loop.train(X, y, W0, a, method="gd", eta=50 * eta, beta=0.0, steps=200, gram_every=0, dtype="float64")
    assert df.attrs["diverged"]
    assert len(df) == df.attrs["steps_done"] + 1
    assert np.isfinite(df["traj_err_h0"]).all()


def test_phase_offset_blows_up_loss_ratio_not_trajectory_error():
    """Two damped oscillations of a residual 2 % out of phase: at the loss troughs |ℓ_lin − ℓ|/ℓ is huge, e(k) small."""
    k = np.arange(600)
    n = 8
    direction = np.ones(n) / np.sqrt(n)
    amp = np.exp(-k / 200)
    u = np.outer(amp * np.cos(0.05 * k), direction)  # residual u(k) − y of the "network"
    u_lin = np.outer(amp * np.cos(0.05 * k * 1.02), direction)  # ... and of the linearized model
    loss, loss_lin = 0.5 * (u**2).sum(1), 0.5 * (u_lin**2).sum(1)
    import pandas as pd

    table = pd.DataFrame({"step": k, "loss_measured": loss, "loss_lin_h0": loss_lin})
    loss_ratio = compare.max_relative_error(table, "lin_h0")
    e = np.linalg.norm(u - u_lin, axis=1) / np.linalg.norm(u[0])
    assert loss_ratio > 10.0  # the trough of one curve divides the other's value
    assert e.max() < 0.3
