"""Predictions for a training run: NTK-linearized discrete dynamics, high-resolution ODEs and the theorem bounds.

Run (two subcommands; the n×n work happens once per (dataset, width, seed), each run's prediction is cheap):

    PYTHONPATH=src python -m momentum_ntk.theory modes --data results/data/D.npz \\
        --spectrum results/ntk/D/spectrum.parquet --eigvecs results/ntk/D/eigvecs.npy \\
        --width M --seed S --out results/theory/D/modes_mM_sS.parquet
    PYTHONPATH=src python -m momentum_ntk.theory predict --modes results/theory/D/modes_mM_sS.parquet \\
        --ntk-summary results/ntk/D/summary.json --method nag --eta-divisor 10 --beta 0.99 --steps T \\
        [--run results/runs/D/nag/mM_c10_b0.99_sS.parquet] --out results/theory/D/nag/mM_c10_b0.99_sS.parquet

Everything is written per eigenmode of a fixed Gram matrix H = V diag(λ) Vᵀ (H∞ of eq. 10, or the run's own
H(0) of eq. 9), with the residual Δ = f − y expanded as Δ_t = Σ_k c_k(t) v_k and the loss
ℓ(t) = ½‖Δ_t‖² = ½ Σ_k c_k(t)².

1. Linearized discrete dynamics (eqs. 4-5 with f linear in W, so f(t+1) − f(t) = J (W(t+1) − W(t)) and J Jᵀ = H):

       HB:  Δ_{t+1} = Δ_t + β(Δ_t − Δ_{t−1}) − ηHΔ_t
       NAG: Δ_{t+1} = Δ_t + β(Δ_t − Δ_{t−1}) − ηHΔ_t − βηH(Δ_t − Δ_{t−1})
       GD:  β = 0,                     Δ_{−1} = Δ_0.

   Per mode, with v_t = c_t − c_{t−1} (v_0 = 0), q = ηλ and the momentum factor b (GD 0, HB β, NAG β(1 − ηλ)):
   v_{t+1} = b v_t − q c_t, c_{t+1} = c_t + v_{t+1}; the companion polynomial is z² − (1 + b − q) z + b.

2. High-resolution ODEs (eqs. 25 and 27 with H fixed), s = η, continuous time t = k√s for iteration k,
   Δ(0) = Δ_0, Δ̇(0) = 0:

       HB:  Δ̈ + 2√α Δ̇ + (1 + √(αs)) HΔ = 0
       NAG: Δ̈ + 2√α Δ̇ + √s HΔ̇ + (1 + √(αs)) HΔ = 0

   with the damping α either matched to the run's β by Shi et al.'s relation β = (1 − √(αs))/(1 + √(αs)), i.e.
   α = ((1 − β)/(1 + β))² / s (``alpha_damping_from_beta``), or the paper's choice α = λ0/2. Per mode this is a
   damped oscillator ẍ + 2γẋ + ω²x = 0 with γ = √α (+ √s λ/2 for NAG) and ω² = (1 + √(αs)) λ.

3. Theorem bounds (eqs. 28-29) on the same axis t = k√s, with ℓ̂(0) = ½ Δ_0ᵀ H(0) Δ_0 and λ0 = λmin(H∞):

       HB:  ℓ(t) ≤ 6 ℓ̂(0)/λ0 · exp(−(2 − √2) √(λ0/2) t)
       NAG: ℓ(t) ≤ 26 ℓ̂(0)/(3λ0) · exp(−ρ*_NAG(α_thm2) √(λ0/2) t),  α_thm2 = √(2λ0 s)/4,
            ρ*_NAG(α) = ½(4 + 3α − √(8 + 16α + 9α²)).

   Note that the paper reuses the letter α: ``alpha_damping`` is the ODE damping, ``alpha_thm2`` Theorem 2's constant.

Rates are always loss exponents per iteration: r such that ℓ(k) ∝ exp(−r k) asymptotically.

Outputs. ``modes``: Parquet k int64, lambda_inf, coef_inf, lambda_h0, coef_h0 float64 (row k: k-th smallest eigenvalue
of H∞ resp. H(0) and Δ_0's coefficient on its eigenvector), with a JSON record under the schema metadata key
``momentum_ntk.theory`` (n, d, width, seed, dataset, loss0, pseudo_loss0 = ℓ̂(0), lambda_min_h0, lambda_max_h0,
lambda_min_inf); read it back with :func:`read_modes`. ``predict``: Parquet step int64, time, loss_lin_inf,
loss_lin_h0, loss_ode_beta, loss_ode_paper, bound_theorem (+ loss_measured, relerr_<prediction> with ``--run``), and a
sidecar ``.json`` (same path) with the asymptotic rates rate_lin_inf, rate_lin_h0, rate_ode_beta, rate_ode_paper,
rate_theorem, the damping constants, and with ``--run`` rate_measured (fit over steps K/2..K, K = --steps),
window_rate_<prediction> on the same window, max_relerr_<prediction> (whole run), max_relerr_<prediction>_horizon (steps
≤ T), ``horizon`` {step: T, fraction, floor_ratio}, bound_check and bound_margin.

The comparison horizon T (:func:`horizon_step`) is the last step ≤ fraction·K (default ½) before the measured loss first
falls below floor_ratio·ℓ(0) (default 1e-4): relative errors near a numerical floor or after a divergence say nothing
about the dynamics.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from momentum_ntk import io
from momentum_ntk.errors import UserError, cli

if TYPE_CHECKING:  # torch is imported where H(0) is built, so the rates and curves need numpy only
    import torch

METHODS = ("gd", "hb", "nag")
MODES_META_KEY = b"momentum_ntk.theory"
PREDICTIONS = ("lin_inf", "lin_h0", "ode_beta", "ode_paper")
_CHUNK = 1 << 21  # elements per (time × mode) block when evaluating the ODE solution


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ----------------------------------------------------------------------------------------------------------------------
# 1. NTK-linearized discrete dynamics
# ----------------------------------------------------------------------------------------------------------------------


def momentum_factor(lam: np.ndarray, eta: float, beta: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-mode momentum factor b and its complement 1 − b (computed without cancellation), shapes like ``lam``.

    GD: b = 0; HB: b = β; NAG: b = β(1 − ηλ), so 1 − b = (1 − β) + βηλ.
    """
    _check_method(method)
    lam = np.asarray(lam, dtype=np.float64)
    if method == "gd":
        b = np.zeros_like(lam)
        return b, np.ones_like(lam)
    if method == "hb":
        return np.full_like(lam, beta), np.full_like(lam, 1.0 - beta)
    q = eta * lam
    return beta * (1.0 - q), (1.0 - beta) + beta * q


def linear_mode_trajectories(
    lam: np.ndarray, coef0: np.ndarray, eta: float, beta: float, method: str, steps: int
) -> np.ndarray:
    """Mode coefficients c_k(t) (steps+1, n) of the linearized recursion, from c(0) = coef0 (n,) and c(−1) = c(0).

    Memory is (steps+1)·n: meant for small cases and tests; use :func:`linear_loss` for long runs.
    """
    lam = np.asarray(lam, dtype=np.float64)
    c = np.array(coef0, dtype=np.float64)
    b, _ = momentum_factor(lam, eta, beta, method)
    q = eta * lam
    v = np.zeros_like(c)
    out = np.empty((steps + 1, c.size))
    out[0] = c
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            v = b * v - q * c
            c = c + v
            out[t] = c
    return out


def linear_loss(lam: np.ndarray, coef0: np.ndarray, eta: float, beta: float, method: str, steps: int) -> np.ndarray:
    """Predicted loss ℓ(t) = ½ Σ_k c_k(t)² (steps+1,) of the linearized recursion; O(n) memory, O(n·steps) time."""
    lam = np.asarray(lam, dtype=np.float64)
    c = np.array(coef0, dtype=np.float64)
    b, _ = momentum_factor(lam, eta, beta, method)
    q = eta * lam
    v = np.zeros_like(c)
    out = np.empty(steps + 1)
    out[0] = 0.5 * float(c @ c)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            v *= b
            v -= q * c
            c += v
            out[t] = 0.5 * float(c @ c)
    return out


def linear_log_radius(lam: np.ndarray, eta: float, beta: float, method: str) -> np.ndarray:
    """log of the spectral radius (n,) of each mode's 2×2 companion matrix, z² − (1 + b − ηλ) z + b.

    With u = 1 − z the polynomial is u² − p u + q, p = (1 − b) + ηλ, q = ηλ, which keeps the roots near z = 1
    (the slow modes, u ≈ ηλ/(1 − b)) free of cancellation. Complex roots have |z|² = b.
    """
    lam = np.asarray(lam, dtype=np.float64)
    b, one_minus_b = momentum_factor(lam, eta, beta, method)
    q = eta * lam
    p = one_minus_b + q
    disc = p * p - 4.0 * q
    out = np.empty_like(lam)
    cplx = disc < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out[cplx] = 0.5 * np.log(b[cplx])
        real = ~cplx
        pr, qr, sq = p[real], q[real], np.sqrt(disc[real])
        big = np.where(pr >= 0, 0.5 * (pr + sq), 0.5 * (pr - sq))  # the root of u with the larger |u|
        small = np.where(big != 0, qr / np.where(big != 0, big, 1.0), 0.0)
        out[real] = np.maximum(_log_abs_one_minus(big), _log_abs_one_minus(small))
    return out


def _log_abs_one_minus(u: np.ndarray) -> np.ndarray:
    """log|1 − u|, accurate for small u."""
    with np.errstate(divide="ignore"):
        return np.where(np.abs(u) < 0.5, np.log1p(-np.clip(u, -0.5, 0.5)), np.log(np.abs(1.0 - u)))


def _excited(coef0: np.ndarray | None, n: int) -> np.ndarray:
    """Modes that carry initial residual (|c_k(0)| > 1e-12 ‖c(0)‖); all modes when ``coef0`` is None."""
    if coef0 is None:
        return np.ones(n, dtype=bool)
    c = np.abs(np.asarray(coef0, dtype=np.float64))
    mask = c > 1e-12 * max(float(np.linalg.norm(c)), np.finfo(float).tiny)
    return mask if mask.any() else np.ones(n, dtype=bool)


def linear_rate(lam: np.ndarray, eta: float, beta: float, method: str, coef0: np.ndarray | None = None) -> float:
    """Asymptotic loss exponent per iteration −2 log max_k ρ_k over the excited modes (ρ_k: companion radius)."""
    lam = np.asarray(lam, dtype=np.float64)
    logr = linear_log_radius(lam, eta, beta, method)[_excited(coef0, lam.size)]
    return float(-2.0 * np.max(logr))


# ----------------------------------------------------------------------------------------------------------------------
# 2. High-resolution ODEs
# ----------------------------------------------------------------------------------------------------------------------


def alpha_damping_from_beta(beta: float, s: float) -> float:
    """ODE damping α matched to momentum β by β = (1 − √(αs))/(1 + √(αs)):  α = ((1 − β)/(1 + β))² / s."""
    if not 0.0 <= beta < 1.0 or s <= 0:
        raise ValueError(f"need 0 <= beta < 1 and s > 0, got beta={beta}, s={s}")
    return ((1.0 - beta) / (1.0 + beta)) ** 2 / s


def ode_coefficients(lam: np.ndarray, alpha_damping: float, s: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-mode (γ, ω²) of ẍ + 2γẋ + ω²x = 0: γ = √α (+ √s λ/2 for NAG), ω² = (1 + √(αs)) λ."""
    _check_method(method)
    if method == "gd":
        raise ValueError("the high-resolution ODEs are defined for hb and nag only")
    lam = np.asarray(lam, dtype=np.float64)
    gamma = np.full_like(lam, math.sqrt(alpha_damping))
    if method == "nag":
        gamma = gamma + 0.5 * math.sqrt(s) * lam
    omega2 = (1.0 + math.sqrt(alpha_damping * s)) * lam
    return gamma, omega2


def _oscillator(gamma: np.ndarray, omega2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x(t)/x(0) (len(t), n) for ẍ + 2γẋ + ω²x = 0, ẋ(0) = 0, stable in every regime.

    Over-/critically damped (δ = √(γ² − ω²) ≥ 0, slow root μ₁ = −ω²/(γ + δ)):
        x/x0 = e^{μ₁t} [½(1 + e^{−2δt}) + γt·φ(2δt)],  φ(z) = (1 − e^{−z})/z, φ(0) = 1.
    Under-damped (ν = √(ω² − γ²)):  x/x0 = e^{−γt} [cos νt + γt·sinc(νt)],  sinc(z) = sin z / z.
    Both reduce to e^{−γt}(1 + γt) at critical damping; no term can overflow.
    """
    t = np.asarray(t, dtype=np.float64)[:, None]
    d2 = gamma * gamma - omega2
    real = d2 >= 0
    out = np.empty((t.shape[0], gamma.size))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g, w2 = gamma[real], omega2[real]
        delta = np.sqrt(d2[real])
        denom = g + delta
        mu1 = np.where(denom > 0, -w2 / np.where(denom > 0, denom, 1.0), 0.0)
        z = 2.0 * delta * t
        phi = np.where(z > 0, -np.expm1(-z) / np.where(z > 0, z, 1.0), 1.0)
        out[:, real] = np.exp(mu1 * t) * (0.5 * (1.0 + np.exp(-z)) + g * t * phi)
        g, nu = gamma[~real], np.sqrt(-d2[~real])
        out[:, ~real] = np.exp(-g * t) * (np.cos(nu * t) + g * t * np.sinc(nu * t / np.pi))
    return out


def ode_mode_solution(
    lam: np.ndarray, coef0: np.ndarray, alpha_damping: float, s: float, method: str, times: np.ndarray
) -> np.ndarray:
    """Mode coefficients c_k(t) (len(times), n) of the high-resolution ODE with c(0) = coef0, ċ(0) = 0."""
    gamma, omega2 = ode_coefficients(lam, alpha_damping, s, method)
    return _oscillator(gamma, omega2, times) * np.asarray(coef0, dtype=np.float64)[None, :]


def ode_loss(
    lam: np.ndarray, coef0: np.ndarray, alpha_damping: float, s: float, method: str, times: np.ndarray
) -> np.ndarray:
    """Predicted loss ½ Σ_k c_k(t)² (len(times),), evaluated in blocks of times to bound memory."""
    gamma, omega2 = ode_coefficients(lam, alpha_damping, s, method)
    c0 = np.asarray(coef0, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    out = np.empty(times.size)
    block = max(1, _CHUNK // max(1, c0.size))
    for i in range(0, times.size, block):
        x = _oscillator(gamma, omega2, times[i : i + block]) * c0[None, :]
        out[i : i + block] = 0.5 * np.einsum("tk,tk->t", x, x)
    return out


def ode_decay(lam: np.ndarray, alpha_damping: float, s: float, method: str) -> np.ndarray:
    """Per-mode decay exponent (n,) of |x(t)| per unit time: γ if under-damped, ω²/(γ + √(γ² − ω²)) otherwise."""
    gamma, omega2 = ode_coefficients(lam, alpha_damping, s, method)
    d2 = gamma * gamma - omega2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = gamma + np.sqrt(np.maximum(d2, 0.0))
        slow = np.where(denom > 0, omega2 / np.where(denom > 0, denom, 1.0), 0.0)
    return np.where(d2 >= 0, slow, gamma)


def ode_rate(lam: np.ndarray, alpha_damping: float, s: float, method: str, coef0: np.ndarray | None = None) -> float:
    """Asymptotic loss exponent per iteration: 2 · min_k decay_k · √s over the excited modes (t = k√s)."""
    lam = np.asarray(lam, dtype=np.float64)
    decay = ode_decay(lam, alpha_damping, s, method)[_excited(coef0, lam.size)]
    return float(2.0 * np.min(decay) * math.sqrt(s))


# ----------------------------------------------------------------------------------------------------------------------
# 3. Theorem bounds
# ----------------------------------------------------------------------------------------------------------------------


def rho_nag(alpha: float | np.ndarray) -> float | np.ndarray:
    """ρ*_NAG(α) = ½(4 + 3α − √(8 + 16α + 9α²)) of Theorem 2 (α = α_thm2 = √(2λ0 s)/4).

    Increasing on (0, 0.5], from 2 − √2 at α → 0 to (11 − √73)/4 at α = 0.5.
    """
    a = np.asarray(alpha, dtype=np.float64)
    out = 0.5 * (4.0 + 3.0 * a - np.sqrt(8.0 + 16.0 * a + 9.0 * a * a))
    return float(out) if out.ndim == 0 else out


def alpha_thm2(lambda0: float, s: float) -> float:
    """Theorem 2's α = √(2 λ0 s)/4 (not the ODE damping)."""
    return math.sqrt(2.0 * lambda0 * s) / 4.0


def theorem_constants(method: str, lambda0: float, s: float, pseudo_loss0: float) -> tuple[float, float]:
    """(prefactor C, exponent E per unit time) with ℓ(t) ≤ C e^{−E t}; (nan, nan) for GD (no theorem)."""
    _check_method(method)
    if method == "gd":
        return math.nan, math.nan
    root = math.sqrt(lambda0 / 2.0)
    if method == "hb":
        return 6.0 * pseudo_loss0 / lambda0, (2.0 - math.sqrt(2.0)) * root
    return 26.0 * pseudo_loss0 / (3.0 * lambda0), rho_nag(alpha_thm2(lambda0, s)) * root


def theorem_bound(method: str, lambda0: float, s: float, pseudo_loss0: float, times: np.ndarray) -> np.ndarray:
    """Bound C e^{−E t} (len(times),) of eq. (28) (HB) or eq. (29) (NAG); NaN for GD."""
    c, e = theorem_constants(method, lambda0, s, pseudo_loss0)
    return c * np.exp(-e * np.asarray(times, dtype=np.float64))


# ----------------------------------------------------------------------------------------------------------------------
# Comparisons with a measured run
# ----------------------------------------------------------------------------------------------------------------------


def relative_error(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Signed relative error (predicted − measured)/measured, NaN where the measured loss is missing or ≤ 0."""
    meas = np.asarray(measured, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(meas) & (meas > 0), (pred - meas) / meas, np.nan)


def max_relative_error(table: pd.DataFrame, prediction: str = "lin_h0", upto: int | None = None) -> float:
    """max |relative error| of ``loss_<prediction>`` vs ``loss_measured`` over steps ≤ ``upto`` (NaN if no data)."""
    rows = table if upto is None else table[table["step"] <= upto]
    err = np.abs(relative_error(rows["loss_measured"].to_numpy(), rows[f"loss_{prediction}"].to_numpy()))
    err = err[np.isfinite(err)]
    return float(err.max()) if err.size else math.nan


def bound_check(table: pd.DataFrame, upto: int | None = None) -> dict[str, Any]:
    """Does the measured loss stay below ``bound_theorem``?

    Returns ``{"steps_checked", "fraction_holds", "first_violation_step"}`` (step None if it always holds) over the
    steps ≤ ``upto`` with a finite measured loss and bound.
    """
    rows = table if upto is None else table[table["step"] <= upto]
    meas, bound = rows["loss_measured"].to_numpy(), rows["bound_theorem"].to_numpy()
    ok = np.isfinite(meas) & np.isfinite(bound)
    holds = meas[ok] <= bound[ok]
    steps = rows["step"].to_numpy()[ok]
    bad = np.flatnonzero(~holds)
    return {
        "steps_checked": int(ok.sum()),
        "fraction_holds": float(holds.mean()) if holds.size else math.nan,
        "first_violation_step": int(steps[bad[0]]) if bad.size else None,
    }


def fit_rate(step: np.ndarray, loss: np.ndarray, lo: int, hi: int) -> float:
    """Least-squares loss exponent per iteration −d ln ℓ / dk over steps lo ≤ k ≤ hi with finite ℓ > 0 (NaN if < 2)."""
    step = np.asarray(step, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    ok = (step >= lo) & (step <= hi) & np.isfinite(loss) & (loss > 0)
    if ok.sum() < 2:
        return math.nan
    slope = np.polyfit(step[ok], np.log(loss[ok]), 1)[0]
    return float(-slope)


HORIZON_FRACTION = 0.5  # default T: at most this fraction of the run ...
HORIZON_FLOOR_RATIO = 1e-4  # ... and only while the measured loss stays above this fraction of ℓ(0)


def horizon_step(
    step: np.ndarray,
    measured: np.ndarray,
    fraction: float = HORIZON_FRACTION,
    floor_ratio: float = HORIZON_FLOOR_RATIO,
) -> int | None:
    """Comparison horizon T: the last step k ≤ fraction·K (K: last step with a finite measured loss) such that every
    measured loss up to k is finite and ≥ floor_ratio·ℓ(0).

    Relative errors are only meaningful while the loss is well above its numerical floor (float32 rounding, a
    plateau), and a diverged run has no loss after it stopped. None when not even step 0 qualifies.
    """
    step = np.asarray(step)
    meas = np.asarray(measured, dtype=np.float64)
    order = np.argsort(step, kind="stable")
    step, meas = step[order], meas[order]
    good = np.isfinite(meas) & (meas > 0)
    if not good.size or not good[0]:
        return None
    resolved = good & (meas >= floor_ratio * meas[0])
    n_ok = int(np.argmin(resolved)) if not resolved.all() else resolved.size  # length of the resolved prefix
    last = float(step[np.flatnonzero(good)[-1]])
    limit = math.floor(fraction * last)
    within = step[:n_ok][step[:n_ok] <= limit]
    return int(within[-1]) if within.size else int(step[0])


def bound_margin(table: pd.DataFrame, upto: int | None = None) -> dict[str, Any]:
    """Largest measured / bound ratio (> 1 means the bound is violated) and its step, over steps ≤ ``upto`` with a
    finite measured loss and bound; also the measured loss over ℓ(0) at the first violation (None if none), which
    says whether a violation happens while the loss is still large or only near its floor."""
    rows = table if upto is None else table[table["step"] <= upto]
    meas, bound = rows["loss_measured"].to_numpy(), rows["bound_theorem"].to_numpy()
    ok = np.isfinite(meas) & np.isfinite(bound) & (bound > 0)
    if not ok.any():
        return {"max_ratio": None, "step_of_max": None, "measured_ratio_at_first_violation": None}
    ratio = meas[ok] / bound[ok]
    steps = rows["step"].to_numpy()[ok]
    i = int(np.argmax(ratio))
    bad = np.flatnonzero(ratio > 1.0)
    loss0 = float(table["loss_measured"].iloc[0])
    at_first = float(meas[ok][bad[0]] / loss0) if bad.size and loss0 > 0 else None
    return {"max_ratio": float(ratio[i]), "step_of_max": int(steps[i]), "measured_ratio_at_first_violation": at_first}


# ----------------------------------------------------------------------------------------------------------------------
# Modes of one initialisation, and predictions for one run
# ----------------------------------------------------------------------------------------------------------------------


def initial_residual(X: np.ndarray, y: np.ndarray, W0: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Δ_0 = f(W0, a, X) − y (n,), f = m^{-1/2} relu(X W0) a, in float64."""
    m = W0.shape[1]
    return np.maximum(X @ W0, 0.0) @ a / math.sqrt(m) - y


def project(V: np.ndarray, delta: np.ndarray, block: int = 2048) -> np.ndarray:
    """Coefficients Vᵀδ (n,) for V (n, n) of any float dtype (e.g. a float32 memory map), in float64, reading V in
    row blocks so no float64 copy of V is made."""
    out = np.zeros(V.shape[1])
    for i in range(0, V.shape[0], block):
        out += np.asarray(V[i : i + block], dtype=np.float64).T @ delta[i : i + block]
    return out


def finite_gram(X: np.ndarray, W0: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """H(0) = (X Xᵀ) ⊙ (S Sᵀ) / m (n, n) float64 of eq. (9), equal to ``model.gram_finite`` but built in place.

    S Sᵀ counts co-activations, integers ≤ m < 2^24, so the float32 GEMM is exact; peak memory ≈ two n×n float64.
    """
    import torch

    from momentum_ntk import model

    Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
    S = model.activation_pattern(Xt, torch.as_tensor(W0, dtype=torch.float64, device=device))
    m = S.shape[1]
    Sf = S.to(torch.float32 if m < 2**24 else torch.float64)
    del S
    H = (Sf @ Sf.T).to(torch.float64)
    del Sf
    H.mul_(Xt @ Xt.T).div_(m)
    return H


def mode_table(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    lambda_inf: np.ndarray,
    eigvecs_inf: np.ndarray,
    device: str = "cpu",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Δ_0's coefficients on H∞'s eigenvectors and on H(0)'s, plus the constants of this initialisation.

    ``lambda_inf`` (n,) ascending with ``eigvecs_inf`` (n, n) columns. Row k pairs the k-th smallest eigenvalue of
    H∞ and of H(0) (two independent orderings). H(0) eigenvalues are clipped at 0 (H(0) is PSD; eigh may give −1e-16).
    Returns (DataFrame k, lambda_inf, coef_inf, lambda_h0, coef_h0; meta with loss0 = ½‖Δ_0‖²,
    pseudo_loss0 = ½Δ_0ᵀH(0)Δ_0, lambda_min_h0, lambda_max_h0, n, d, width).
    """
    import torch

    n, d = X.shape
    delta0 = initial_residual(X, y, W0, a)
    coef_inf = project(eigvecs_inf, delta0)
    h0 = finite_gram(X, W0, device)
    d0 = torch.as_tensor(delta0, dtype=torch.float64, device=device)
    pseudo_loss0 = 0.5 * float(d0 @ (h0 @ d0))
    evals, evecs = torch.linalg.eigh(h0)
    del h0
    coef_h0 = (d0 @ evecs).cpu().numpy()
    lam_h0 = np.clip(evals.cpu().numpy(), 0.0, None)
    table = pd.DataFrame(
        {
            "k": np.arange(n, dtype=np.int64),
            "lambda_inf": np.asarray(lambda_inf, dtype=np.float64),
            "coef_inf": coef_inf,
            "lambda_h0": lam_h0,
            "coef_h0": coef_h0,
        }
    )
    meta = {
        "n": int(n),
        "d": int(d),
        "width": int(W0.shape[1]),
        "loss0": 0.5 * float(delta0 @ delta0),
        "pseudo_loss0": pseudo_loss0,
        "lambda_min_h0": float(lam_h0[0]),
        "lambda_max_h0": float(lam_h0[-1]),
        "lambda_min_inf": float(np.min(lambda_inf)),
        "coef_norm_ratio_inf": float(np.linalg.norm(coef_inf) / max(np.linalg.norm(delta0), 1e-300)),
    }
    return table, meta


def predict_table(
    modes: pd.DataFrame,
    *,
    method: str,
    eta: float,
    beta: float,
    lambda0: float,
    pseudo_loss0: float,
    steps: int,
    ode_gram: str = "inf",
) -> pd.DataFrame:
    """One row per step 0..steps: step, time (= k√η), loss_lin_inf, loss_lin_h0, loss_ode_beta, loss_ode_paper,
    bound_theorem. The ODE columns use H∞'s modes (``ode_gram="inf"``) or H(0)'s (``"h0"``); NaN for GD."""
    _check_method(method)
    s = eta
    k = np.arange(steps + 1, dtype=np.int64)
    times = k * math.sqrt(s)
    lam_inf, c_inf = modes["lambda_inf"].to_numpy(), modes["coef_inf"].to_numpy()
    lam_h0, c_h0 = modes["lambda_h0"].to_numpy(), modes["coef_h0"].to_numpy()
    out = {
        "step": k,
        "time": times,
        "loss_lin_inf": linear_loss(lam_inf, c_inf, eta, beta, method, steps),
        "loss_lin_h0": linear_loss(lam_h0, c_h0, eta, beta, method, steps),
    }
    if method == "gd":
        nan = np.full(steps + 1, np.nan)
        out |= {"loss_ode_beta": nan, "loss_ode_paper": nan.copy()}
    else:
        lam_o, c_o = (lam_inf, c_inf) if ode_gram == "inf" else (lam_h0, c_h0)
        out["loss_ode_beta"] = ode_loss(lam_o, c_o, alpha_damping_from_beta(beta, s), s, method, times)
        out["loss_ode_paper"] = ode_loss(lam_o, c_o, lambda0 / 2.0, s, method, times)
    out["bound_theorem"] = theorem_bound(method, lambda0, s, pseudo_loss0, times)
    return pd.DataFrame(out)


def prediction_rates(
    modes: pd.DataFrame, *, method: str, eta: float, beta: float, lambda0: float, ode_gram: str = "inf"
) -> dict[str, Any]:
    """Asymptotic loss exponents per iteration (ℓ(k) ∝ e^{−r k}) of every prediction, and the damping constants."""
    s = eta
    lam_inf, c_inf = modes["lambda_inf"].to_numpy(), modes["coef_inf"].to_numpy()
    lam_h0, c_h0 = modes["lambda_h0"].to_numpy(), modes["coef_h0"].to_numpy()
    rec: dict[str, Any] = {
        "rate_lin_inf": linear_rate(lam_inf, eta, beta, method, c_inf),
        "rate_lin_h0": linear_rate(lam_h0, eta, beta, method, c_h0),
        "alpha_damping_beta": alpha_damping_from_beta(beta, s) if method != "gd" else None,
        "alpha_damping_paper": lambda0 / 2.0,
    }
    if method == "gd":
        rec |= {"rate_ode_beta": None, "rate_ode_paper": None, "rate_theorem": None}
        return rec
    lam_o, c_o = (lam_inf, c_inf) if ode_gram == "inf" else (lam_h0, c_h0)
    rec["rate_ode_beta"] = ode_rate(lam_o, rec["alpha_damping_beta"], s, method, c_o)
    rec["rate_ode_paper"] = ode_rate(lam_o, lambda0 / 2.0, s, method, c_o)
    rec["rate_theorem"] = theorem_constants(method, lambda0, s, 1.0)[1] * math.sqrt(s)
    if method == "nag":
        rec["alpha_thm2"] = alpha_thm2(lambda0, s)
        rec["rho_nag"] = rho_nag(rec["alpha_thm2"])
    return rec


def attach_run(pred: pd.DataFrame, run: pd.DataFrame) -> pd.DataFrame:
    """Add ``loss_measured`` (NaN past the run's last step) and ``relerr_<prediction>`` = (pred − meas)/meas."""
    meas = run.set_index("step")["loss"].astype(np.float64)
    out = pred.copy()
    out["loss_measured"] = meas.reindex(out["step"].to_numpy()).to_numpy()
    for name in PREDICTIONS:
        out[f"relerr_{name}"] = relative_error(out["loss_measured"].to_numpy(), out[f"loss_{name}"].to_numpy())
    return out


def comparison_record(
    table: pd.DataFrame,
    window: tuple[int, int],
    horizon_fraction: float = HORIZON_FRACTION,
    horizon_floor_ratio: float = HORIZON_FLOOR_RATIO,
) -> dict[str, Any]:
    """Window-fitted rates of the measured and predicted curves, max relative errors (over the whole run and up to the
    horizon T of :func:`horizon_step`), the bound check and the bound margin."""
    lo, hi = window
    step = table["step"].to_numpy()
    T = horizon_step(step, table["loss_measured"].to_numpy(), horizon_fraction, horizon_floor_ratio)
    rec: dict[str, Any] = {
        "window": [lo, hi],
        "window_rate_measured": fit_rate(step, table["loss_measured"], lo, hi),
        "horizon": {"step": T, "fraction": horizon_fraction, "floor_ratio": horizon_floor_ratio},
    }
    for name in PREDICTIONS:
        rec[f"window_rate_{name}"] = fit_rate(step, table[f"loss_{name}"], lo, hi)
        rec[f"max_relerr_{name}"] = max_relative_error(table, name)
        rec[f"max_relerr_{name}_horizon"] = max_relative_error(table, name, upto=T) if T is not None else math.nan
    rec["bound_check"] = bound_check(table)
    rec["bound_margin"] = bound_margin(table)
    return rec


# ----------------------------------------------------------------------------------------------------------------------
# Figures helpers (used by the figures stage)
# ----------------------------------------------------------------------------------------------------------------------

_STYLE = {
    "measured": ("k", "-", "measured"),
    "lin_h0": ("C0", "--", "linearized, H(0)"),
    "lin_inf": ("C1", ":", "linearized, H∞"),
    "ode_beta": ("C2", "-.", "ODE, α from β"),
    "ode_paper": ("C3", "-.", "ODE, α = λ0/2"),
    "theorem": ("C7", "-", "theorem bound"),
}


def plot_overlay(table: pd.DataFrame, ax: Any, title: str | None = None) -> None:
    """Semilog-y overlay of the measured loss (if present), the four predictions and the bound vs iteration."""
    for key, (color, ls, label) in _STYLE.items():
        col = "bound_theorem" if key == "theorem" else f"loss_{key}"
        if col in table and np.isfinite(table[col]).any():
            ax.semilogy(table["step"], table[col], color=color, ls=ls, lw=1.2, label=label)
    ax.set_xlabel("iteration k")
    ax.set_ylabel("training loss ℓ")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")


def plot_width_error(errors: pd.DataFrame, ax: Any, prediction: str = "lin_h0") -> None:
    """Log-log max relative error of ``loss_<prediction>`` vs width, one line per method.

    ``errors``: columns method, width, max_relerr (e.g. :func:`max_relative_error` per run, averaged over seeds).
    """
    for method, grp in errors.groupby("method"):
        g = grp.groupby("width")["max_relerr"].mean().sort_index()
        ax.loglog(g.index, g.to_numpy(), marker="o", label=str(method).upper())
    ax.set_xlabel("width m")
    ax.set_ylabel(f"max relative error ({prediction})")
    ax.legend(fontsize="small")


# ----------------------------------------------------------------------------------------------------------------------
# File I/O and CLI
# ----------------------------------------------------------------------------------------------------------------------


def write_modes(path: str | Path, table: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write the mode table with ``meta`` as JSON under the Parquet schema metadata key ``momentum_ntk.theory``."""
    import pyarrow as pa

    tab = pa.Table.from_pandas(table, preserve_index=False)
    tab = tab.replace_schema_metadata({MODES_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    io.write_parquet(path, tab)


MODES_COLUMNS = ("k", "lambda_inf", "coef_inf", "lambda_h0", "coef_h0")
MODES_META_KEYS = ("loss0", "pseudo_loss0", "lambda_min_h0")


def read_modes(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mode table and its metadata record (see :func:`mode_table`)."""
    fix = io.rebuild_fix(path)
    tab = io.read_table(path, MODES_COLUMNS, what="modes file", fix=fix)
    raw = (tab.schema.metadata or {}).get(MODES_META_KEY)
    if raw is None:
        raise UserError(f"{path}: modes file has no '{MODES_META_KEY.decode()}' metadata; {fix}")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"{path}: modes file metadata is not valid JSON ({exc}); {fix}") from None
    missing = [k for k in MODES_META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise UserError(f"{path}: modes file metadata lacks key(s) {missing}; {fix}")
    return tab.to_pandas(), meta


def _load_ntk(spectrum: str, eigvecs: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    table = io.read_table(spectrum, ["eigenvalue"], what="NTK spectrum", fix=io.rebuild_fix(spectrum))
    lam = table.to_pandas()["eigenvalue"].to_numpy(dtype=np.float64)
    V = io.read_npy(eigvecs, what="NTK eigenvectors", fix=io.rebuild_fix(eigvecs), mmap_mode="r")
    if lam.shape != (n,) or V.shape != (n, n):
        raise UserError(
            f"{spectrum} / {eigvecs} have {lam.shape[0]} eigenvalues and shape {V.shape}, but the data has n={n}: "
            "they belong to another dataset or preset; rerun the ntk stage for this dataset"
        )
    if np.any(np.diff(lam) < 0):
        raise UserError(f"{spectrum}: 'eigenvalue' must be ascending (columns of eigvecs.npy in the same order)")
    return lam, V


def modes_of_job(X: np.ndarray, y: np.ndarray, W0: np.ndarray, a: np.ndarray, *, spectrum: str | Path,
                 eigvecs: str | Path, dataset: str, seed: int, out: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Expand Δ0 of one (dataset, width, seed) on H∞'s and H(0)'s eigenvectors (:func:`mode_table`) and write the
    modes file; returns its metadata record. The one path from a job's arrays to the modes file: the theory stage's
    ``modes`` command and a packed train job (which holds X, W(0) and a already) both call it."""
    lam, V = _load_ntk(str(spectrum), str(eigvecs), X.shape[0])
    table, meta = mode_table(X, y, W0, a, lam, V, device=device)
    if abs(meta["coef_norm_ratio_inf"] - 1.0) > 1e-3:
        raise UserError(
            f"{eigvecs}: ‖Vᵀ Δ0‖/‖Δ0‖ = {meta['coef_norm_ratio_inf']:.6f}, not 1; the columns are not "
            f"orthonormal eigenvectors of this dataset's H∞; {io.rebuild_fix(eigvecs)}"
        )
    meta |= {"dataset": dataset, "seed": int(seed)}
    write_modes(out, table, meta)
    print(
        f"modes: n={meta['n']} m={W0.shape[1]} seed={seed} loss0={meta['loss0']:.6g} "
        f"pseudo_loss0={meta['pseudo_loss0']:.6g} lambda_min(H0)={meta['lambda_min_h0']:.4g} -> {out}",
        file=sys.stderr,
    )
    return meta


def cmd_modes(args: argparse.Namespace) -> int:
    from momentum_ntk import model

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be a positive integer")
        torch.set_num_threads(args.threads)
    data = io.read_npz(args.data, ("X", "y"), what="binarized data file", fix=io.rebuild_fix(args.data))
    X, y = np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"], dtype=np.float64)
    _load_ntk(args.spectrum, args.eigvecs, X.shape[0])  # a bad spectrum stops before the lease
    W0, a = model.init_params(X.shape[1], args.width, args.seed)
    from momentum_ntk.lease import check_gpu_held, device_lease  # a GPU job gets a device no concurrent job holds

    with device_lease(args.device) as device:
        check_gpu_held(args.gpus_held, device, "theory_modes")
        modes_of_job(X, y, W0, a, spectrum=args.spectrum, eigvecs=args.eigvecs, dataset=Path(args.data).stem,
                     seed=args.seed, out=args.out, device=device)  # fmt: skip
    return 0


def _read_run_sidecar(run_path: Path) -> dict[str, Any] | None:
    """The run's sidecar JSON when there is one (UserError if it does not parse)."""
    side = run_path.with_suffix(".json")
    if not side.is_file():
        return None
    return io.read_record(side, what=f"sidecar JSON of run {run_path}", fix=io.rebuild_fix(side))


def read_measured(run: str | Path) -> pd.DataFrame:
    """Columns step, loss of a run Parquet file; its sidecar, if present, must parse too (UserError otherwise)."""
    run_path = Path(run)
    fix = io.rebuild_fix(run_path)
    measured = io.read_table(run_path, ["step", "loss"], what="run Parquet file", fix=fix)
    measured = measured.select(["step", "loss"]).to_pandas()
    if measured.empty:
        raise UserError(f"{run_path}: run Parquet file has no rows; {fix}")
    _read_run_sidecar(run_path)
    return measured


def _check_run_sidecar(run_path: Path, want: dict[str, Any]) -> None:
    side = run_path.with_suffix(".json")
    rec = _read_run_sidecar(run_path)
    if rec is None:
        return
    for key, val in want.items():
        got = rec.get(key)
        if got is None or val is None:
            continue
        same = math.isclose(float(got), float(val), rel_tol=1e-9) if isinstance(val, float) else got == val
        if not same:
            raise UserError(f"{side}: {key}={got!r} but the prediction uses {key}={val!r}; pass the matching run")


def _finite_or_none(obj: Any) -> Any:
    """The record with every NaN / ±inf float replaced by None, so the sidecar is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        return None
    return obj


def cmd_predict(args: argparse.Namespace) -> int:
    """Predictions for every run given (one --method/--eta-divisor/--beta/--out, and --run, per run): the runs of a
    pack share the modes of their (dataset, width, seed), read once."""
    modes, meta = read_modes(args.modes)
    fix = io.rebuild_fix(args.ntk_summary)
    summary = io.read_record(args.ntk_summary, ("lambda0", "eta"), what="NTK summary", fix=fix)
    k = len(args.method)
    runs = args.run if args.run else [None] * k
    lists = {"--eta-divisor": args.eta_divisor, "--beta": args.beta, "--out": args.out, "--run": runs}
    bad = {key: len(v) for key, v in lists.items() if len(v) != k}
    if bad:
        raise UserError(f"{k} runs (--method) but {bad} values: give one --eta-divisor/--beta/--out/--run per run")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not 0.0 < args.horizon_fraction <= 1.0 or not 0.0 <= args.horizon_floor_ratio < 1.0:
        raise UserError(
            f"--horizon-fraction must lie in (0, 1] and --horizon-floor-ratio in [0, 1), got "
            f"{args.horizon_fraction} and {args.horizon_floor_ratio}"
        )
    # every run file is read before any output is written: a corrupt one stops the pack with nothing written
    measured = [read_measured(run) if run else None for run in runs]
    per_run = zip(args.method, args.eta_divisor, args.beta, args.out, runs, measured)
    for method, divisor, beta, out, run, meas in per_run:
        predict_one(args, modes, meta, summary, method, divisor, beta, Path(out), run, meas)
    return 0


def predict_one(
    args: argparse.Namespace,
    modes: pd.DataFrame,
    meta: dict[str, Any],
    summary: dict[str, Any],
    method: str,
    eta_divisor: int,
    beta: float,
    out: Path,
    run: str | None,
    measured: pd.DataFrame | None = None,
) -> None:
    """One run's prediction Parquet and rates record (``out`` and ``out`` with suffix .json); ``measured``: the
    run's step and loss when already read (:func:`read_measured`)."""
    try:
        lambda0 = float(summary["lambda0"])
        eta_map = summary["eta"]
    except KeyError as exc:
        raise UserError(f"{args.ntk_summary} lacks key {exc}; rerun the ntk stage") from None
    if str(eta_divisor) not in eta_map:
        raise UserError(
            f"{args.ntk_summary} has no eta for divisor {eta_divisor} (has {sorted(eta_map)}); "
            "add it to eta_divisors in the config and rerun the ntk stage"
        )
    eta = float(eta_map[str(eta_divisor)])
    if not 0.0 <= beta < 1.0:
        raise UserError(f"--beta must lie in [0, 1), got {beta}")
    kw = {"method": method, "eta": eta, "beta": beta, "lambda0": lambda0, "ode_gram": args.ode_gram}
    table = predict_table(modes, pseudo_loss0=meta["pseudo_loss0"], steps=args.steps, **kw)
    rec: dict[str, Any] = {
        "dataset": meta.get("dataset"),
        "method": method,
        "width": meta.get("width"),
        "seed": meta.get("seed"),
        "eta_divisor": eta_divisor,
        "eta": eta,
        "s": eta,
        "beta": beta,
        "steps": args.steps,
        "lambda0": lambda0,
        "ode_gram": args.ode_gram,
        "loss0": meta["loss0"],
        "pseudo_loss0": meta["pseudo_loss0"],
        "lambda_min_h0": meta["lambda_min_h0"],
        "rate_units": "loss exponent per iteration: loss(k) ~ exp(-rate * k)",
        **prediction_rates(modes, **kw),
    }
    if run:
        run_path = Path(run)
        if measured is None:
            measured = read_measured(run_path)
        _check_run_sidecar(
            run_path,
            {"method": method, "eta": eta, "beta": float(beta), "width": meta.get("width"), "seed": meta.get("seed")},
        )
        table = attach_run(table, measured)
        window = (args.steps // 2, args.steps)
        rec["run"] = str(run_path)
        rec |= comparison_record(table, window, args.horizon_fraction, args.horizon_floor_ratio)
        rec["rate_measured"] = rec["window_rate_measured"]
    io.write_parquet(out, table)
    io.write_json(out.with_suffix(".json"), _finite_or_none(rec))
    print(
        f"predict: {method} eta={eta:.4g} beta={beta} steps={args.steps} rates/iter "
        f"lin_h0={rec['rate_lin_h0']:.4g} lin_inf={rec['rate_lin_inf']:.4g} -> {out}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m momentum_ntk.theory", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("modes", help="Δ0 of one (dataset, width, seed) on the eigenvectors of H∞ and of H(0)")
    m.add_argument("--data", required=True, help="results/data/{dataset}.npz (X, y)")
    m.add_argument("--spectrum", required=True, help="results/ntk/{dataset}/spectrum.parquet (column eigenvalue)")
    m.add_argument("--eigvecs", required=True, help="results/ntk/{dataset}/eigvecs.npy (n×n, columns)")
    m.add_argument("--width", type=int, required=True)
    m.add_argument("--seed", type=int, required=True)
    m.add_argument("--device", default="cpu", help="auto, cpu or cuda: device for H(0) and its eigh (default cpu)")
    m.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    m.add_argument("--gpus-held", type=int, default=0, help="GPUs this job holds (Snakemake resources.gpu)")
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_modes)
    q = sub.add_parser("predict", help="linearized, ODE and theorem-bound loss curves for one run")
    q.add_argument("--modes", required=True, help="results/theory/{dataset}/modes_m{width}_s{seed}.parquet")
    q.add_argument("--ntk-summary", required=True, help="results/ntk/{dataset}/summary.json")
    # One value per run (the runs of a pack share the modes); a single value each is one run.
    q.add_argument("--method", choices=METHODS, nargs="+", required=True)
    q.add_argument("--eta-divisor", type=int, nargs="+", required=True, help="η = summary.eta[str(divisor)]")
    q.add_argument("--beta", type=float, nargs="+", required=True)
    q.add_argument("--steps", type=int, required=True)
    q.add_argument("--ode-gram", choices=("inf", "h0"), default="inf", help="Gram matrix of the ODE columns")
    q.add_argument("--run", nargs="+", help="run Parquet files (step, loss) to compare against, one per run")
    q.add_argument(
        "--horizon-fraction",
        type=float,
        default=HORIZON_FRACTION,
        help="with --run: relative errors are also taken up to T <= this fraction of the run (default %(default)s)",
    )
    q.add_argument(
        "--horizon-floor-ratio",
        type=float,
        default=HORIZON_FLOOR_RATIO,
        help="with --run: T also ends before the measured loss first falls below this times loss(0) (default "
        "%(default)s)",
    )
    q.add_argument(
        "--out", nargs="+", required=True, help="prediction Parquet per run; its rates record goes to the same path .json"
    )
    q.set_defaults(func=cmd_predict)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(cli(main))
