"""The row-space training engine: the same GD / HB / NAG runs as the direct engine (momentum_ntk.train), computed
exactly on n×m coefficients instead of the d×m weights.

Every gradient of ℓ(W) = ½ Σ_i (f(W, x_i) − y_i)² is Xᵀ times an n×m matrix (train's module docstring):

    ∂ℓ/∂W = Xᵀ Γ,   Γ = (r ⊗ a/√m) ⊙ S,   S = 1{Z > 0},   Z = X W,   r = f − y

and every update of eqs. (3)-(5), NAG's gradient correction included, is a linear combination of such gradients
(the buffer b is one too). So W(t) stays in W(0) + row space of X:

    W(t) = W(0) + Xᵀ C(t),   C(t) (n, m),   C(0) = 0
    Z(t) = X W(t) = Z0 + K C(t),   Z0 = X W(0),   K = X Xᵀ (n, n)
    ‖w_r(t) − w_r(0)‖² = ‖Xᵀ c_r‖² = c_rᵀ K c_r = Σ_i C_ir (K C)_ir

and the direct engine's recursion b(t) = G + β_b b(t−1), W −= η (ν G + ρ b) (per column scaled by a/√m) becomes
the same recursion on C with G = r ⊙ S (n, m) in place of (X ⊙ r)ᵀ S = Xᵀ (r ⊙ S) (d, m). Exact in exact
arithmetic: the two engines agree to rounding (float64: ≤ 1e-12 relative, tests/test_rowspace.py).

One step: the GEMM K·C (2·n²·m FLOP, against the direct engine's 2·2·n·d·m), then passes over n×m data only:

    Z ← K C;  M ← C ⊙ Z (the distance terms);  Z ← Z + Z0;  [Gram tracking reads Z];  Z ← relu(Z);  f ← Z a/√m − y
    metrics: ℓ = ½ Σ r², max_r √(Σ_i M_ir) (column sums as the direct engine's: float32 blocks of 32 rows, float64)
    update:  Z ← 1{Z > 0} ⊙ r (= G);  b ← G + β_b b (b(0) = μ0 G);  C ← C + c_g ⊙ G + c_b ⊙ b

Buffers per run: C, b, Z, M (n×m each) and f; shared Z0 (n×m), K (n×n), X. No d×m buffer exists; with W(0) given as
:class:`momentum_ntk.model.Preactivations` (model.init_preactivations) the d×m W(0) is never held either.

The pack layout, the step interface and the metrics are the direct engine's: a :class:`RowPack` has ``ids``, ``k``,
``f`` (k, n, 1) (the residuals after ``forward``), ``Z`` (the pre-activations during Gram tracking) and the same
per-run coefficients ``beta_b``, ``mu0``, ``c_g``, ``c_b``; train.forward / train.update / train.select hand a
RowPack to its own methods, and train's loop, divergence handling, Gram tracking and logging run unchanged. Every
run's slice of every buffer is aligned as in the direct engine, so a run trained in a pack equals it trained alone
bit for bit (tested on the CPU; the same code runs on CUDA tensors).

Which engine a job uses: ``engine`` = direct | rowspace | auto; auto asks :func:`momentum_ntk.plan.choose_engine`,
whose cost rule is measured with benchmarks/bench_train.py (benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from momentum_ntk import model, plan
from momentum_ntk.errors import UserError
from momentum_ntk.engine import (
    RunSpec,
    Shared,
    aligned_empty,
    col_sums_f64,
    gram_record,
    pack_coefficients,
    residuals,
    restrict_pack,
    run_fields,
    shared_state,
)
from momentum_ntk.trajectory import Linearized, gram_pair



def resolve_engine(engine: str, n: int, d: int, m: int, *, have_w0: bool = True) -> str:
    """The engine a pack of (n, d, m) runs on: ``direct`` or ``rowspace`` as asked, or for ``auto`` the choice of the
    measured cost rule (:func:`momentum_ntk.plan.choose_engine`). W(0) given only by its pre-activations
    (``have_w0`` False) needs the row-space engine. UserError for an unknown engine or direct without W(0)."""
    if engine not in plan.ENGINES:
        raise UserError(f"train engine {engine!r} is not one of {', '.join(plan.ENGINES)} (config key train.engine)")
    if not have_w0:
        if engine == "direct":
            raise UserError("the direct engine needs W(0) as a (d, m) array, not only X W(0) (model.Preactivations)")
        return "rowspace"
    return plan.choose_engine(engine, n, d, m)


@dataclass
class RowShared(Shared):
    """What every run of a row-space pack shares: the direct engine's shared data without W(0) (``W0`` is None),
    plus Z0 = X W(0) (n, m) and K = X Xᵀ (n, n), both in the compute dtype (rounded from float64)."""

    Z0: torch.Tensor | None = None  # (n, m)
    K: torch.Tensor | None = None  # (n, n)


def row_shared_state(X: np.ndarray, y: np.ndarray, W0: np.ndarray | model.Preactivations, a: np.ndarray, *,
                     dtype: str | torch.dtype | None, device: str, gram_rows: Sequence[int] | np.ndarray | None = None,
                     trajectory: bool = True) -> RowShared:  # fmt: skip
    """RowShared on the device from X (n, d), y (n,), W(0) as a (d, m) array or as model.Preactivations, a (m,).

    Z0 is computed in float64 on the CPU (model.preactivations: the same bits whichever form W(0) comes in) and
    rounded once to the compute dtype; K = X Xᵀ likewise; with ``trajectory`` H(0) and H∞ of the trajectory error
    (:func:`momentum_ntk.trajectory.gram_pair`). Checks the inputs (UserError)."""
    pre = W0 if isinstance(W0, model.Preactivations) else None
    X = np.asarray(X)
    if pre is None:
        W0 = np.asarray(W0)
        if W0.ndim != 2 or X.ndim != 2 or W0.shape[0] != X.shape[1]:
            raise UserError(f"shapes do not fit: X {X.shape} (n, d), W0 {W0.shape} (d, m)")
        pre = model.preactivations(X, W0)
    if pre.Z0.ndim != 2 or X.ndim != 2 or pre.Z0.shape[0] != X.shape[0]:
        raise UserError(f"shapes do not fit: X {X.shape} (n, d), X W(0) {pre.Z0.shape} (n, m)")
    base = shared_state(X, y, None, a, m=pre.Z0.shape[1], dtype=dtype, device=device, gram_rows=gram_rows,
                        trajectory=False)  # fmt: skip
    X64 = np.asarray(X, dtype=np.float64)
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    if trajectory:
        fields["grams"] = gram_pair(X64, pre.Z0, base.X.device)
    return RowShared(
        **fields,
        Z0=torch.tensor(pre.Z0, dtype=base.X.dtype, device=base.X.device),
        K=torch.tensor(X64 @ X64.T, dtype=base.X.dtype, device=base.X.device),
    )


@dataclass
class RowPack:
    """State of k runs in row space (see the module docstring): coefficients C, momentum buffer b, scratch, and the
    per-run update coefficients of the direct engine's Pack (same names, shapes and values)."""

    ids: list[int]  # index of each slot in the caller's run list
    C: torch.Tensor  # (k, n, m) W(t) = W(0) + Xᵀ C(t)
    B: torch.Tensor | None  # (k, n, m) momentum buffer b in row space, None when every run is GD
    M: torch.Tensor  # (k, n, m) C ⊙ K C, the distance terms
    Z: torch.Tensor  # (k, n, m) K C, then pre-activations, relu, then the gradient r ⊙ 1{Z > 0}
    f: torch.Tensor  # (k, n, 1) outputs, then residuals
    beta_b: torch.Tensor  # (k, 1, 1)
    mu0: torch.Tensor  # (k, 1, 1)
    c_g: torch.Tensor | None  # (k, 1, m) −η ν a/√m, None when no run is NAG
    c_b: torch.Tensor  # (k, 1, m) −η ρ a/√m (−η a/√m when every run is GD)
    lin: Linearized | None = None  # the runs' linearized trajectories (momentum_ntk.trajectory), None: not tracked

    @property
    def k(self) -> int:
        return len(self.ids)

    def forward(self, sh: RowShared, track: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """train.forward's first part: pre-activations Z(t) = Z0 + K C(t), the Gram record when ``track``, residuals
        r in ``f`` (k, n, 1), and the metrics (k, 2) float64 = (ℓ, max_r ‖w_r(t) − w_r(0)‖) on the device
        (train.forward appends the trajectory errors, which read ``f`` only)."""
        k, n = self.k, sh.K.shape[0]
        torch.bmm(sh.K.expand(k, n, n), self.C, out=self.Z)
        torch.mul(self.C, self.Z, out=self.M)
        self.Z.add_(sh.Z0)
        gram = gram_record(sh, self) if track else None
        residuals(sh, self)
        loss = 0.5 * self.f.to(torch.float64).square().sum((1, 2))
        # c_rᵀ K c_r ≥ 0 in exact arithmetic; rounding can leave −tiny where C = 0 (step 0: exactly 0)
        dist = col_sums_f64(self.M).amax(1).clamp_(min=0.0).sqrt()
        return torch.stack([loss, dist], 1), gram

    def update(self, sh: RowShared, t: int) -> None:
        """train.update's contract: the gradient at W(t), G = r ⊙ 1{Z > 0} (n, m) per run (Z holds relu(Z) and f the
        residuals after forward), and the method's buffer update of C to C(t+1)."""
        G = self.Z.sign_().mul_(self.f)
        if self.B is None:
            self.C.addcmul_(G, self.c_b)
            return
        if t == 0:
            torch.mul(G, self.mu0, out=self.B)
        else:
            torch.addcmul(G, self.B, self.beta_b, out=self.B)
        if self.c_g is not None:
            self.C.addcmul_(G, self.c_g)
        self.C.addcmul_(self.B, self.c_b)

    def select(self, keep: list[int]) -> RowPack:
        """The pack restricted to slots ``keep`` (fresh aligned buffers; used when runs diverge)."""
        return restrict_pack(self, keep, ("C", "B", "M", "Z", "f"))


def new_row_pack(sh: RowShared, specs: list[RunSpec], ids: list[int]) -> RowPack:
    """Row-space state of runs ``specs[i] for i in ids``, every run at C = 0 (W = W(0))."""
    k, (n, m) = len(ids), sh.Z0.shape
    dtype, dev = sh.Z0.dtype, sh.Z0.device
    co = pack_coefficients(sh, specs, ids)
    C = aligned_empty(k, (n, m), dtype, dev).zero_()
    return RowPack(
        C=C,
        B=aligned_empty(k, (n, m), dtype, dev).zero_() if co["momentum"] else None,
        M=aligned_empty(k, (n, m), dtype, dev),
        Z=aligned_empty(k, (n, m), dtype, dev),
        f=aligned_empty(k, (n, 1), dtype, dev),
        **run_fields(sh, co, specs, ids),
    )


def new_pack(sh: RowShared, specs: Sequence[RunSpec | dict[str, Any]]) -> RowPack:
    """Row-space state of ``specs`` (every run from W(0)): the batch a pack trains, as train_many builds it."""
    return new_row_pack(sh, [RunSpec.of(r) for r in specs], list(range(len(specs))))
