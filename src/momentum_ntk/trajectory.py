"""The NTK-linearized trajectory of a run, followed step by step beside training, and its distance from the measured one.

NTK theory says the network's outputs u(k) = f(W(k)) stay close to those of the model linearized at W(0),
u_lin(k) = u(0) + J (W_lin(k) − W(0)), J = ∂u/∂W at W(0), uniformly in k, with a gap that shrinks with the width.
That is the quantity this module measures, per run and per step:

    e(k) = ‖u(k) − u_lin(k)‖ / ‖u(0) − y‖                                           (a number ≥ 0, e(0) = 0)

Since J Jᵀ = H(0) (eq. 9) and every gradient is Jᵀ(u − y), the linearized model's residual ξ(k) = u_lin(k) − y
follows the training recursion with the gradient g replaced by H ξ (paper eqs. 3-5, the ``buffer`` record of
:mod:`momentum_ntk.methods`):

    g(k) = H ξ(k),   b(k) = g(k) + β_b b(k−1),  b(0) = μ0 g(0),   ξ(k+1) = ξ(k) − η (ν g(k) + ρ b(k)),   ξ(0) = u(0) − y

with H = H(0) of the run's own initialisation (the finite-width linearization) or H = H∞ of eq. (10) (the
infinite-width one). Per eigenmode of H this is the recursion of :mod:`momentum_ntk.dynamics` (tested against it).
u(k) − u_lin(k) = r(k) − ξ(k) with r(k) = u(k) − y the measured residual, so e(k) needs nothing but the residual
training already computes: two n×n matrix-vector products per run and step (O(n²), against the step's 4·n·d·m).

Unlike the relative loss error |ℓ_lin(k) − ℓ(k)|/ℓ(k), e(k) does not blow up when two oscillating loss curves are
slightly out of phase and one of them passes through a trough: it is the error NTK theory bounds.

Everything is float64 on the training device, whatever the training dtype; the runs of a pack share H(0) and H∞
(one W(0)) and each run keeps its own state (n-vectors), computed one run at a time so that a run's numbers do not
depend on the pack it was trained in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from momentum_ntk import gram, model

def gram_pair(X: np.ndarray, Z0: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """(2, n, n) float64 on ``device``: H(0) of eq. (9), (X Xᵀ) ⊙ (S Sᵀ)/m with S = 1{X W(0) ≥ 0} from the
    pre-activations Z0 = X W(0) (n, m) (:func:`momentum_ntk.model.gram_from_pattern`, bit for bit
    :func:`momentum_ntk.model.gram_finite`'s for the same pattern), and H∞ of eq. (10)
    (:func:`momentum_ntk.gram.ntk_gram`): the matrices of the two linearizations. Both engines call it (the row-space
    one never holds W(0), only X W(0))."""
    X64 = torch.as_tensor(np.asarray(X, dtype=np.float64), device=device)
    h0 = model.gram_from_pattern(X64 @ X64.T, torch.as_tensor(np.asarray(Z0) >= 0, device=device))
    hinf = torch.as_tensor(gram.ntk_gram(np.asarray(X, dtype=np.float64)), device=device)
    return torch.stack([h0, hinf])


@dataclass
class Linearized:
    """The linearized residuals of k runs that share H(0) and H∞ (``grams`` (2, n, n) float64; every (…, 2) tensor
    here is in that order, H(0) then H∞).

    ``coef`` holds per run (η, β_b, ν, ρ, μ0) of its method; the state (ξ and b, each (2, n) per run) starts at the
    first call of :meth:`errors`, from the measured residual r(0).
    """

    grams: torch.Tensor
    coef: list[tuple[float, float, float, float, float]]
    xi: list[torch.Tensor] = field(default_factory=list)
    b: list[torch.Tensor] = field(default_factory=list)
    norm0: list[float] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.coef)

    def errors(self, residual: torch.Tensor) -> torch.Tensor:
        """(k, 2) float64: e(k) for H(0) and H∞ of every run, from the measured residuals ``residual`` (k, n, 1) at
        the current step. The first call sets ξ(0) = r(0), so e(0) = 0."""
        r = residual[..., 0].to(torch.float64)  # (k, n)
        if not self.xi:
            self.xi = [r[i].expand(2, -1).clone() for i in range(self.k)]
            self.b = [torch.zeros_like(x) for x in self.xi]
            self.norm0 = [float(torch.linalg.vector_norm(r[i])) for i in range(self.k)]
        out = torch.empty(self.k, 2, dtype=torch.float64, device=r.device)
        for i in range(self.k):
            scale = 1.0 / self.norm0[i] if self.norm0[i] > 0 else float("nan")
            torch.linalg.vector_norm(r[i] - self.xi[i], dim=1, out=out[i]).mul_(scale)
        return out

    def advance(self, t: int) -> None:
        """ξ(t) → ξ(t+1) for every run (the training recursion with g = H ξ)."""
        for i, (eta, beta_b, nu, rho, mu0) in enumerate(self.coef):
            g = torch.bmm(self.grams, self.xi[i][:, :, None])[:, :, 0]  # (2, n)
            if t == 0:
                self.b[i] = g * mu0
            else:
                self.b[i].mul_(beta_b).add_(g)
            step = self.b[i] * rho
            if nu:
                step.add_(g, alpha=nu)
            self.xi[i].sub_(step, alpha=eta)

    def select(self, keep: Sequence[int]) -> Linearized:
        """The runs ``keep`` only (the pack drops diverged runs)."""
        pick = list(keep)
        return Linearized(
            self.grams,
            [self.coef[i] for i in pick],
            [self.xi[i] for i in pick] if self.xi else [],
            [self.b[i] for i in pick] if self.b else [],
            [self.norm0[i] for i in pick] if self.norm0 else [],
        )
