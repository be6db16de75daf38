"""Pure NTK dynamics, no data and no files: the linearized recursion, the high-resolution ODEs and the theorem bounds
of a fixed Gram matrix, per eigenmode (momentum_ntk.theory compares them with runs; the method-specific pieces come
from the table in momentum_ntk.methods).

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

"""

from __future__ import annotations

import math

import numpy as np

from momentum_ntk import methods

_CHUNK = 1 << 21  # elements per (time × mode) block when evaluating the ODE solution


# ----------------------------------------------------------------------------------------------------------------------
# 1. NTK-linearized discrete dynamics
# ----------------------------------------------------------------------------------------------------------------------


def momentum_factor(lam: np.ndarray, eta: float, beta: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-mode momentum factor b and its complement 1 − b (computed without cancellation), shapes like ``lam``:
    the method's ``momentum`` record (GD: b = 0; HB: b = β; NAG: b = β(1 − ηλ), so 1 − b = (1 − β) + βηλ).
    """
    return methods.get(method).momentum(np.asarray(lam, dtype=np.float64), eta, beta)


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
    beta = methods.check_beta(beta)
    if not s > 0:
        raise ValueError(f"need s > 0, got s={s}")
    return ((1.0 - beta) / (1.0 + beta)) ** 2 / s


def beta_theorem(lambda0: float, s: float) -> float:
    """The momentum the theorems assume: β whose matched damping is the paper's α = λ0/2, i.e. the inverse of
    :func:`alpha_damping_from_beta` at α = λ0/2:  β = (1 − √(λ0 s/2)) / (1 + √(λ0 s/2))."""
    root = math.sqrt(lambda0 * s / 2.0)
    return (1.0 - root) / (1.0 + root)


def ode_coefficients(lam: np.ndarray, alpha_damping: float, s: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-mode (γ, ω²) of ẍ + 2γẋ + ω²x = 0: γ = √α + the method's gradient damping (√s λ/2 for NAG, 0 for HB),
    ω² = (1 + √(αs)) λ."""
    m = methods.get(method)
    if not m.has_ode:
        raise ValueError(f"method {method!r} has no high-resolution ODE (momentum_ntk.methods)")
    lam = np.asarray(lam, dtype=np.float64)
    gamma = np.full_like(lam, math.sqrt(alpha_damping)) + m.ode_gradient_damping(lam, s)
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


def theorem_constants(method: str, lambda0: float, s: float, pseudo_loss0: float) -> tuple[float, float]:
    """(prefactor C, exponent E per unit time) with ℓ(t) ≤ C e^{−E t}: the method's ``theorem`` record (HB eq. 28, NAG
    eq. 29); (nan, nan) for a method without one (GD)."""
    m = methods.get(method)
    if not m.has_theorem:
        return math.nan, math.nan
    return m.theorem(lambda0, s, pseudo_loss0)


def theorem_rate(method: str, lambda0: float, eta: float) -> float:
    """The theorem's loss exponent per iteration (ℓ(k) ≤ C e^{−r k}): E·√η, since one iteration advances the ODE time
    by √η; NaN for a method without a theorem. The one definition figures, tables and claims use."""
    return float(theorem_constants(method, lambda0, eta, 1.0)[1] * math.sqrt(eta))


def theorem_bound(method: str, lambda0: float, s: float, pseudo_loss0: float, times: np.ndarray) -> np.ndarray:
    """Bound C e^{−E t} (len(times),) of eq. (28) (HB) or eq. (29) (NAG); NaN for GD."""
    c, e = theorem_constants(method, lambda0, s, pseudo_loss0)
    return c * np.exp(-e * np.asarray(times, dtype=np.float64))
