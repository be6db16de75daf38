"""The training engine: full-batch GD / HB / NAG on the two-layer ReLU network (paper §3.1, eqs. 1-5), k runs
at once, with per-step metrics: the packed state, the direct engine's step, and the ``forward``/``update`` interface
the loop (:mod:`momentum_ntk.loop`) calls for either engine. The train stage (``python -m momentum_ntk.train``) is
the CLI over both.

Model and loss (eqs. 1-2), X (n, d) with unit rows, W (d, m) trained, a (m,) in {-1, +1} fixed:

    Z = X W (n, m),   f = relu(Z) a / √m (n,),   r = f − y,   ℓ(W) = ½ Σ_i r_i²
    ∂ℓ/∂W = Xᵀ [(r ⊗ a/√m) ⊙ S] = [(X ⊙ r)ᵀ S] ⊙ (a/√m)ᵀ,   S = 1{Z > 0}

(1{Z > 0} is autograd's ReLU derivative; it differs from the paper's 1{Z ≥ 0} only where w_rᵀx_i is exactly 0.)

Updates (eqs. 3-5) with w_r(−1) = w_r(0), hence g(−1) = g(0), in velocity form V(t) = W(t) − W(t−1), V(0) = 0:

    V(t+1) = β V(t) − η g(t) − γ η (g(t) − g(t−1)),    GD: β = γ = 0,   HB: γ = 0,   NAG: γ = β

Implemented in the equivalent buffer form (torch.optim.SGD's), which needs no g(t−1) buffer and fewer passes:

    b(t) = g(t) + β b(t−1),    W(t+1) = W(t) − η (ν g(t) + ρ b(t))
    HB: ν = 0, ρ = 1, b(−1) = 0           (then V(t+1) = −η b(t), so V(t+1) = β V(t) − η g(t))
    NAG: ν = 1, ρ = β, b(0) = 0           (u(t) = g(t) + β b(t) gives u(t) − β u(t−1) = (1+β) g(t) − β g(t−1),
                                           and u(0) = g(0): eq. 5 exactly. SGD(nesterov=True) with b(−1) = −g(0)/β.)
    GD: β = 0 in the HB form (b(t) = g(t)); a pack of GD runs only skips b altogether.

Since a_r/√m is a fixed column scale, the gradient buffers hold G = (X ⊙ r)ᵀ S and the scale is folded into the
per-column update coefficient. One step is two GEMMs (X·W, (X ⊙ r)ᵀ·S), three passes over Z (relu, GEMV for f,
sign for S), one small pass over X, and two to three fused passes over (d, m) for the update, plus the metric
max_r ‖w_r(t) − w_r(0)‖ (sub, square, blocked column sums accumulated in float64), and the trajectory errors e(t)
of the H(0)- and H∞-linearized models (momentum_ntk.trajectory: two n×n matrix-vector products per run, float64).

Engines (``engine``, config key train.engine): everything above is the ``direct`` engine. The ``rowspace`` engine
(momentum_ntk.rowspace) computes the same runs exactly on n×m coefficients C with W(t) = W(0) + Xᵀ C(t): one GEMM
(X Xᵀ)·C of 2·n²·m FLOP a step and no d×m buffer. ``auto`` picks by the measured cost rule plan.choose_engine. Both
engines share this module's packed state, metrics, Gram tracking and forward/update interface, and the loop's
divergence handling.

Packing: ``loop.train_many`` trains k runs that share X, y and W(0) as batched (k, d, m) tensors. Every run's slice of
every buffer starts on a 256-byte boundary (MKL picks kernels, hence rounding, by alignment), so a run trained in a
pack is bit-identical to the same run trained alone (tested on CPU; on CUDA untested).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from momentum_ntk import methods, model
from momentum_ntk.devices import resolve_dtype, strict_float32
from momentum_ntk.errors import UserError
from momentum_ntk.lease import resolve_device
from momentum_ntk.trajectory import Linearized, gram_pair




_ALIGN_BYTES = 256  # per-run slice alignment: MKL's (and cuBLAS's) kernel choice depends on it


RECORD = ("loss", "max_dist", "traj_err_h0", "traj_err_inf", "lambda_min_H", "lambda_max_H", "pattern_changed")


N_METRICS = 4  # loss, max_dist and the two trajectory errors: computed at every step


SYNC_EVERY = 50  # steps between host copies of the metrics (divergence is still found at the exact step)


_SUM_BLOCK = 32  # rows per float32 partial sum in the max_dist reduction; partial sums are added in float64


@dataclass(frozen=True)
class RunSpec:
    """One optimizer setting: a method of the table (momentum_ntk.methods), learning rate η > 0, momentum β in [0, 1)
    (ignored by GD)."""

    method: str
    eta: float
    beta: float = 0.0

    @classmethod
    def of(cls, run: dict[str, Any] | RunSpec) -> RunSpec:
        if isinstance(run, RunSpec):
            spec = run
        else:
            unknown = set(run) - {"method", "eta", "beta"}
            if unknown:
                raise UserError(f"run {run}: unknown keys {sorted(unknown)}; a run has method, eta, beta")
            spec = cls(str(run["method"]), float(run["eta"]), float(run.get("beta", 0.0)))
        if spec.method not in methods.METHODS:
            raise UserError(f"method {spec.method!r} is not one of {', '.join(methods.names())} (momentum_ntk.methods)")
        if not (math.isfinite(spec.eta) and spec.eta > 0):
            raise UserError(f"learning rate eta={spec.eta} must be a finite positive number")
        methods.check_beta(spec.beta)
        return spec

    def coefficients(self) -> tuple[float, float, float, float]:
        """(β_b, ν, ρ, μ0): b(t) = g + β_b b(t−1), b(0) = μ0 g(0), W −= η (ν g + ρ b): the method's ``buffer``."""
        return methods.get(self.method).buffer(self.beta)


def aligned_empty(k: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised (k, *shape) tensor whose k slices are each contiguous and start on an _ALIGN_BYTES boundary."""
    numel = math.prod(shape)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    per = -(-numel * itemsize // _ALIGN_BYTES) * _ALIGN_BYTES // itemsize
    flat = torch.empty(k * per, dtype=dtype, device=device)
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return flat.as_strided((k, *shape), (per, *strides))


@dataclass
class Shared:
    """Data shared by every run of a pack (on the compute device, in the compute dtype unless said)."""

    X: torch.Tensor  # (n, d)
    y: torch.Tensor  # (n,)
    W0: torch.Tensor | None  # (d, m); None in the row-space engine (momentum_ntk.rowspace), which needs X W(0) only
    a_s: torch.Tensor  # (m,) a / √m
    a_s64: torch.Tensor  # (m,) float64, for the update coefficients
    rows: torch.Tensor  # (n_s,) int64, Gram tracking rows
    XXt_rows: torch.Tensor  # (n_s, n_s) float64, X_R X_Rᵀ
    S0: torch.Tensor | None = None  # (n, m) bool, 1{Z(0) ≥ 0}
    grams: torch.Tensor | None = None  # (2, n, n) float64: H(0) and H∞, for the trajectory error (None: not tracked)


@dataclass
class Pack:
    """State of k runs: weights, momentum buffer, scratch buffers and per-run coefficients."""

    ids: list[int]  # index of each slot in the caller's run list
    W: torch.Tensor  # (k, d, m)
    B: torch.Tensor | None  # (k, d, m) momentum buffer b, None when every run is GD
    G: torch.Tensor  # (k, d, m) gradient G = (X ⊙ r)ᵀ S, also scratch for max_dist
    Z: torch.Tensor  # (k, n, m) pre-activations, then relu, then the mask S
    Xr: torch.Tensor  # (k, n, d) X ⊙ r
    f: torch.Tensor  # (k, n, 1) outputs, then residuals
    beta_b: torch.Tensor  # (k, 1, 1)
    mu0: torch.Tensor  # (k, 1, 1)
    c_g: torch.Tensor | None  # (k, 1, m) −η ν a/√m, None when no run is NAG
    c_b: torch.Tensor  # (k, 1, m) −η ρ a/√m
    lin: Linearized | None = None  # the runs' linearized trajectories (momentum_ntk.trajectory), None: not tracked

    @property
    def k(self) -> int:
        return len(self.ids)


def linearized(sh: Shared, specs: list[RunSpec], ids: list[int]) -> Linearized | None:
    """The linearized trajectories of runs ``ids`` (momentum_ntk.trajectory), None when the pack does not track them."""
    return None if sh.grams is None else Linearized(sh.grams, [(specs[i].eta, *specs[i].coefficients()) for i in ids])


def pack_coefficients(sh: Shared, specs: list[RunSpec], ids: list[int]) -> dict[str, Any]:
    """Per-run update coefficients of a pack in the compute dtype: beta_b, mu0 (k, 1, 1), c_g (k, 1, m) or None when
    no run uses the gradient term (ν = 0), c_b (k, 1, m), and whether any run has momentum (else no buffer b)."""
    k, dtype, dev = len(ids), sh.X.dtype, sh.X.device
    co = torch.tensor([specs[i].coefficients() for i in ids], dtype=torch.float64, device=dev)  # (k, 4)
    eta = torch.tensor([specs[i].eta for i in ids], dtype=torch.float64, device=dev)
    col = -(eta[:, None] * sh.a_s64[None, :])[:, None, :]  # (k, 1, m) −η a/√m
    momentum = bool((co[:, 0] != 0).any())
    return {
        "momentum": momentum,
        "beta_b": co[:, 0].to(dtype).view(k, 1, 1),
        "mu0": co[:, 3].to(dtype).view(k, 1, 1),
        "c_g": (col * co[:, 1].view(k, 1, 1)).to(dtype) if bool((co[:, 1] != 0).any()) else None,
        # Without momentum every run is GD, whatever its method: W −= η g.
        "c_b": (col * co[:, 2].view(k, 1, 1)).to(dtype) if momentum else col.to(dtype),
    }


def run_fields(sh: Shared, co: dict[str, Any], specs: list[RunSpec], ids: list[int]) -> dict[str, Any]:
    """The per-run fields every pack has, whichever engine: ids, the coefficients ``co`` of :func:`pack_coefficients`
    (beta_b, mu0, c_g, c_b) and the linearized trajectories (built last: after the pack's buffers, as always)."""
    return {"ids": list(ids), **{key: co[key] for key in ("beta_b", "mu0", "c_g", "c_b")},
            "lin": linearized(sh, specs, ids)}


def new_direct_pack(sh: Shared, specs: list[RunSpec], ids: list[int]) -> Pack:
    k, (n, d), m = len(ids), sh.X.shape, sh.W0.shape[1]
    dtype, dev = sh.X.dtype, sh.X.device
    co = pack_coefficients(sh, specs, ids)
    W = aligned_empty(k, (d, m), dtype, dev)
    W.copy_(sh.W0.expand(k, d, m))
    B = aligned_empty(k, (d, m), dtype, dev).zero_() if co["momentum"] else None
    return Pack(
        W=W,
        B=B,
        G=aligned_empty(k, (d, m), dtype, dev),
        Z=aligned_empty(k, (n, m), dtype, dev),
        Xr=aligned_empty(k, (n, d), dtype, dev),
        f=aligned_empty(k, (n, 1), dtype, dev),
        **run_fields(sh, co, specs, ids),
    )


def restrict_pack(p: Any, keep: list[int], buffers: Sequence[str]) -> Any:
    """A pack (this engine's Pack or the row-space RowPack) restricted to slots ``keep``, used when runs diverge:
    the per-run ``buffers`` copied into fresh aligned tensors, the coefficient tensors indexed, the linearized
    trajectories selected; every other field kept."""

    def sub(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        out = aligned_empty(len(keep), tuple(t.shape[1:]), t.dtype, t.device)
        out.copy_(t[keep])
        return out

    return dataclasses.replace(
        p,
        ids=[p.ids[i] for i in keep],
        beta_b=p.beta_b[keep],
        mu0=p.mu0[keep],
        c_g=None if p.c_g is None else p.c_g[keep],
        c_b=p.c_b[keep],
        lin=None if p.lin is None else p.lin.select(keep),
        **{name: sub(getattr(p, name)) for name in buffers},
    )


def select(p: Pack, keep: list[int]) -> Pack:
    """The pack restricted to slots ``keep`` (fresh aligned buffers; used when runs diverge)."""
    if not isinstance(p, Pack):  # a row-space pack (momentum_ntk.rowspace.RowPack)
        return p.select(keep)
    return restrict_pack(p, keep, ("W", "B", "G", "Z", "Xr", "f"))


def _preactivations(sh: Shared, p: Pack) -> None:
    """Z = X W for every run (one batched GEMM, X shared)."""
    k, (n, d) = p.k, sh.X.shape
    torch.bmm(sh.X.expand(k, n, d), p.W, out=p.Z)


def residuals(sh: Shared, p: Pack) -> None:
    """Z ← relu(Z) in place; f ← relu(Z) a/√m − y, the residual r (k, n, 1)."""
    p.Z.relu_()
    for i in range(p.k):  # one GEMV per run: a batched N=1 GEMM rounds differently for different k
        torch.mv(p.Z[i], sh.a_s, out=p.f[i, :, 0])
    p.f.sub_(sh.y[:, None])


def _gradient(sh: Shared, p: Pack) -> None:
    """G ← (X ⊙ r)ᵀ 1{Z > 0} (k, d, m); needs Z = relu(X W) and f = r; turns Z into the 0/1 mask in place."""
    p.Z.sign_()
    torch.mul(sh.X, p.f, out=p.Xr)
    torch.bmm(p.Xr.transpose(1, 2), p.Z, out=p.G)


def _update(p: Pack, t: int) -> None:
    """b ← G + β b (b(0) = μ0 G(0)); W ← W + c_g ⊙ G + c_b ⊙ b (c = −η·{ν, ρ}·a/√m per column)."""
    if p.B is None:
        p.W.addcmul_(p.G, p.c_b)
        return
    if t == 0:
        torch.mul(p.G, p.mu0, out=p.B)
    else:
        torch.addcmul(p.G, p.B, p.beta_b, out=p.B)
    if p.c_g is not None:
        p.W.addcmul_(p.G, p.c_g)
    p.W.addcmul_(p.B, p.c_b)


def col_sums_f64(Q: torch.Tensor) -> torch.Tensor:
    """Column sums (k, m) of Q (k, d, m) in float64: partial sums over blocks of 32 rows in Q's dtype, then float64."""
    k, d, m = Q.shape
    nb = d // _SUM_BLOCK
    out = Q[:, : nb * _SUM_BLOCK].view(k, nb, _SUM_BLOCK, m).sum(2).to(torch.float64).sum(1)
    if d % _SUM_BLOCK:
        out += Q[:, nb * _SUM_BLOCK :].to(torch.float64).sum(1)
    return out


def _loss_and_max_dist(sh: Shared, p: Pack) -> torch.Tensor:
    """(k, 2) float64: ℓ = ½ Σ r² and max_r ‖w_r − w_r(0)‖ per run. Uses G as scratch (call before _gradient)."""
    torch.sub(p.W, sh.W0, out=p.G)
    p.G.mul_(p.G)
    loss = 0.5 * p.f.to(torch.float64).square().sum((1, 2))
    return torch.stack([loss, col_sums_f64(p.G).amax(1).sqrt()], 1)


def gram_record(sh: Shared, p: Pack) -> torch.Tensor:
    """(k, 3) float64 on the device: λmin(H), λmax(H) on the tracked rows and the fraction of S (n, m) changed since
    step 0, for every run of the pack in one batched computation (no host sync).

    Reads the pre-activations Z = X W (call between _preactivations and residuals). At step 0 every run of the pack
    is still at the shared W(0): one run's spectrum is computed and repeated.
    """
    first = sh.S0 is None
    Z = p.Z[:1] if first else p.Z
    S = Z >= 0  # (k', n, m)
    if first:
        sh.S0 = S[0]
    changed = torch.ne(S, sh.S0).sum((1, 2)).to(torch.float64) / sh.S0.numel()
    ev = torch.linalg.eigvalsh(model.gram_from_pattern(sh.XXt_rows, S[:, sh.rows]))  # (k', n_s), ascending
    out = torch.stack([ev[:, 0], ev[:, -1], changed], 1)
    return out.expand(p.k, 3) if first else out


def _check_inputs(X: np.ndarray, y: np.ndarray, W0: np.ndarray | None, a: np.ndarray, m: int | None = None) -> None:
    n, d = X.shape if X.ndim == 2 else (-1, -1)
    shape = (d, m) if W0 is None else W0.shape
    if n < 1 or y.shape != (n,) or shape[:1] != (d,) or len(shape) != 2 or a.shape != shape[1:]:
        raise UserError(
            f"shapes do not fit: X {X.shape} (n, d), y {y.shape} (n,), W0 {shape} (d, m), a {a.shape} (m,)"
        )


def shared_state(X: np.ndarray, y: np.ndarray, W0: np.ndarray | None, a: np.ndarray, *,
                 dtype: str | torch.dtype | None, device: str, gram_rows: Sequence[int] | np.ndarray | None = None,
                 trajectory: bool = True, m: int | None = None) -> Shared:  # fmt: skip
    """What every run of a pack shares, on the device: X (n, d), y (n,), W(0) (d, m), a/√m, the tracked rows and
    their X·Xᵀ block (float64), and with ``trajectory`` H(0) and H∞ (float64, for the trajectory error). W0 None
    (give the width ``m``): no W(0) on the device and no trajectory pair (the row-space engine's
    momentum_ntk.rowspace.row_shared_state adds X W(0) and builds the pair from it). Checks the inputs (UserError)."""
    X, y, a = (np.asarray(v) for v in (X, y, a))
    W0 = None if W0 is None else np.asarray(W0)
    _check_inputs(X, y, W0, a, m)
    tdtype = resolve_dtype(dtype, X)
    dev = torch.device(resolve_device(device))
    strict_float32()
    n, m = X.shape[0], a.shape[0]
    rows = np.arange(n) if gram_rows is None else np.asarray(gram_rows, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= n:
        raise UserError(f"gram_rows must be a non-empty list of row indices in [0, {n})")

    # torch.tensor copies into torch's 64-byte aligned allocations: MKL results do not depend on NumPy's alignment.
    def put(v: np.ndarray, dt: torch.dtype = tdtype) -> torch.Tensor:
        return torch.tensor(v, dtype=dt, device=dev)

    X64 = np.asarray(X, dtype=np.float64)
    a_s64 = put(np.asarray(a, dtype=np.float64) / math.sqrt(m), torch.float64)
    return Shared(
        X=put(X),
        y=put(y),
        W0=None if W0 is None else put(W0),
        a_s=a_s64.to(tdtype),
        a_s64=a_s64,
        rows=put(rows, torch.int64),
        XXt_rows=put(X64[rows] @ X64[rows].T, torch.float64),
        grams=gram_pair(X64, X64 @ np.asarray(W0, dtype=np.float64), dev) if trajectory and W0 is not None else None,
    )


def new_pack(sh: Shared, specs: Sequence[RunSpec | dict[str, Any]]) -> Pack:
    """Packed state of ``specs`` (every run from W(0)): the batch a pack trains, as train_many builds it."""
    return new_direct_pack(sh, [RunSpec.of(r) for r in specs], list(range(len(specs))))


def forward(sh: Shared, p: Pack, track: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first half of one step at W(t): pre-activations and pattern, residual r = f(W(t)) − y, and the metrics
    (k, 4) = (loss, max_r ‖w_r(t) − w_r(0)‖, e_H(0)(t), e_H∞(t)) as a device tensor, e the trajectory error of
    momentum_ntk.trajectory (NaN when not tracked); with ``track`` also the Gram record of H(t). A row-space pack
    (momentum_ntk.rowspace.RowPack) computes the loss, max_dist and Gram record itself, and leaves r in p.f alike."""
    if isinstance(p, Pack):
        _preactivations(sh, p)
        gram = gram_record(sh, p) if track else None
        residuals(sh, p)
        metrics = _loss_and_max_dist(sh, p)
    else:
        metrics, gram = p.forward(sh, track)
    if p.lin is None:
        return torch.cat([metrics, metrics.new_full((p.k, 2), float("nan"))], 1), gram
    return torch.cat([metrics, p.lin.errors(p.f)], 1), gram


def update(sh: Shared, p: Pack, t: int) -> None:
    """The second half: the gradient at W(t) and the method's buffer update to W(t+1) (eqs. 3-5), then the
    linearized trajectories' step."""
    if isinstance(p, Pack):
        _gradient(sh, p)
        _update(p, t)
    else:  # a row-space pack (momentum_ntk.rowspace.RowPack): the same update on its coefficients C
        p.update(sh, t)
    if p.lin is not None:
        p.lin.advance(t)


def loss_and_grad(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, a: torch.Tensor) -> tuple[float, torch.Tensor]:
    """ℓ(W) (float64) and ∂ℓ/∂W (d, m) by the training loop's own hand-written two-GEMM code path."""
    m = W.shape[1]
    a_s64 = (a.to(torch.float64) / math.sqrt(m)).to(W.device)
    empty = torch.empty(0, dtype=torch.int64, device=W.device)
    sh = Shared(X=X, y=y, W0=W, a_s=a_s64.to(W.dtype), a_s64=a_s64, rows=empty, XXt_rows=empty)
    p = new_direct_pack(sh, [RunSpec("gd", 1.0)], [0])
    _preactivations(sh, p)
    residuals(sh, p)
    loss = float(_loss_and_max_dist(sh, p)[0, 0])
    _gradient(sh, p)
    return loss, p.G[0] * sh.a_s
