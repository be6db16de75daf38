"""The optimizers, one record each: the one table that training, theory, figures, the Snakefile and the config schema
read. Adding a method is adding a record here.

    from momentum_ntk.methods import METHODS, get
    get("nag").buffer(0.99)          # (β_b, ν, ρ, μ0) of the training recursion
    get("hb").label, get("hb").color

For a method, the records hold (η the step, β the momentum, λ an eigenvalue of the Gram matrix, s = η the ODE step):

- **training** (``buffer``): every method is the recursion b(t) = g(t) + β_b b(t−1), b(0) = μ0 g(0),
  W(t+1) = W(t) − η (ν g(t) + ρ b(t)) on the gradient g = ∇_W ℓ (paper eqs. 3-5).
  GD: (0, 0, 1, 1); HB (eq. 4): (β, 0, 1, 1); NAG (eq. 5): (β, 1, β, 0).
- **linearized dynamics** (``momentum``): on an eigenmode of H the residual follows
  c(t+1) = c(t) + b (c(t) − c(t−1)) − ηλ c(t), with b = 0 (GD), β (HB), β(1 − ηλ) (NAG); returns (b, 1 − b), the
  complement computed without cancellation.
- **high-resolution ODE** (``ode_gradient_damping``): ẍ + 2γẋ + ω²x = 0 with γ = √α + (½√s λ for NAG, the
  gradient-correction term), ω² = (1 + √(αs)) λ; ``None`` for a method without an ODE (GD).
- **theorem** (``theorem``): (C, E) with ℓ(t) ≤ C e^{−E t} in ODE time t = k√s, from λ0, s and the pseudo-loss
  ℓ̃(0); HB Theorem 1 (eq. 28), NAG Theorem 2 (eq. 29); ``None`` for a method the paper proves nothing about.
  ``rate_constant``: (λ0, s) -> (ρ, α), the ρ of E = ρ√(λ0/2) and Theorem 2's α (NaN for HB, which has none).

The momentum β of every method lies in [0, 1): :func:`check_beta` is the one check of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from momentum_ntk.errors import UserError

HB_RHO = 2.0 - math.sqrt(2.0)  # Theorem 1's rate constant for HB


def rho_nag(alpha: float | np.ndarray) -> float | np.ndarray:
    """Theorem 2's rate constant ρ*_NAG(α) = (4 + 3α − √(8 + 16α + 9α²))/2 (paper Fig. 1)."""
    a = np.asarray(alpha, dtype=np.float64)
    out = 0.5 * (4.0 + 3.0 * a - np.sqrt(8.0 + 16.0 * a + 9.0 * a * a))
    return float(out) if out.ndim == 0 else out


def alpha_thm2(lambda0: float, s: float) -> float:
    """Theorem 2's α = √(2 λ0 s)/4 (not the ODE damping)."""
    return math.sqrt(2.0 * lambda0 * s) / 4.0


@dataclass(frozen=True)
class Method:
    """One optimizer (see the module docstring for each field's maths)."""

    name: str  # as in file names, the config (grid.methods) and the CLIs
    label: str  # in figures and tables
    color: str
    marker: str
    equation: str  # where the paper defines it
    buffer: Callable[[float], tuple[float, float, float, float]]  # β -> (β_b, ν, ρ, μ0)
    momentum: Callable[[np.ndarray, float, float], tuple[np.ndarray, np.ndarray]]  # (λ, η, β) -> (b, 1 − b)
    ode_gradient_damping: Callable[[np.ndarray, float], np.ndarray] | None  # (λ, s) -> extra γ; None: no ODE
    theorem: Callable[[float, float, float], tuple[float, float]] | None  # (λ0, s, ℓ̃(0)) -> (C, E); None: no theorem
    rate_constant: Callable[[float, float], tuple[float, float]] | None = None  # (λ0, s) -> (ρ, α); None: no theorem

    @property
    def has_ode(self) -> bool:
        return self.ode_gradient_damping is not None

    @property
    def has_theorem(self) -> bool:
        return self.theorem is not None


def _no_momentum(lam: np.ndarray, eta: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros_like(lam), np.ones_like(lam)


def _hb_momentum(lam: np.ndarray, eta: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    return np.full_like(lam, beta), np.full_like(lam, 1.0 - beta)


def _nag_momentum(lam: np.ndarray, eta: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    q = eta * lam
    return beta * (1.0 - q), (1.0 - beta) + beta * q


def _hb_rate_constant(lambda0: float, s: float) -> tuple[float, float]:
    return HB_RHO, math.nan


def _nag_rate_constant(lambda0: float, s: float) -> tuple[float, float]:
    alpha = alpha_thm2(lambda0, s)
    return rho_nag(alpha), alpha


def _hb_theorem(lambda0: float, s: float, pseudo_loss0: float) -> tuple[float, float]:
    return 6.0 * pseudo_loss0 / lambda0, _hb_rate_constant(lambda0, s)[0] * math.sqrt(lambda0 / 2.0)


def _nag_theorem(lambda0: float, s: float, pseudo_loss0: float) -> tuple[float, float]:
    return 26.0 * pseudo_loss0 / (3.0 * lambda0), _nag_rate_constant(lambda0, s)[0] * math.sqrt(lambda0 / 2.0)


# Table order is drawing order (figures, legends, tables).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("hb", "HB", "#1f77b4", "o", "eq. (4)", lambda beta: (beta, 0.0, 1.0, 1.0), _hb_momentum,
               lambda lam, s: np.zeros_like(lam), _hb_theorem, _hb_rate_constant),
        Method("nag", "NAG", "#d62728", "^", "eq. (5)", lambda beta: (beta, 1.0, beta, 0.0), _nag_momentum,
               lambda lam, s: 0.5 * math.sqrt(s) * lam, _nag_theorem, _nag_rate_constant),
        Method("gd", "GD", "#7f7f7f", "s", "eq. (3)", lambda beta: (0.0, 0.0, 1.0, 1.0), _no_momentum, None, None),
    )
}  # fmt: skip


# The comparison the paper makes, (baseline, accelerated): the NAG/HB loss ratios of the aggregate stage and the
# "NAG below HB" claim pair these two methods' runs of the same setting and seed.
BASELINE, ACCELERATED = "hb", "nag"


def get(name: str) -> Method:
    """The record of ``name``; ValueError naming the known methods for any other name."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: the methods are {', '.join(METHODS)} (momentum_ntk.methods)") from None


def check_beta(beta: float) -> float:
    """``beta`` as a float when it is a valid momentum, 0 ≤ β < 1 (the config's grid.betas); UserError naming the key
    and the range otherwise (NaN included). The one range check: training, the theory and the dynamics call it."""
    value = float(beta)
    if not 0.0 <= value < 1.0:
        raise UserError(f"momentum beta={beta} must lie in [0, 1) (config key grid.betas)")
    return value


def names() -> tuple[str, ...]:
    """Every method name, in table order."""
    return tuple(METHODS)


def present(found) -> list[str]:
    """The method names among ``found`` (any iterable of names), in table order; ValueError for a name not in the
    table."""
    found = {str(m) for m in found}
    for name in found:
        get(name)
    return [name for name in METHODS if name in found]
