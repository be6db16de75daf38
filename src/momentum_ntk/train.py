"""Full-batch GD / HB / NAG training of the two-layer ReLU network (paper §3.1, eqs. 1-5), with per-step metrics.

    PYTHONPATH=src python -m momentum_ntk.train --data results/data/mnist.npz \
        --ntk-summary results/ntk/mnist/summary.json --dataset mnist --method nag --width 1000 --eta-divisor 10 \
        --beta 0.99 --seed 0 --steps 1000 --gram-every 50 --out run.parquet --meta run.json
    # a pack: one value per run for --method/--eta-divisor/--beta/--out/--meta (they share X, m, seed, hence W(0))
    PYTHONPATH=src python -m momentum_ntk.train --data D.npz --ntk-summary S.json --dataset mnist --width 1000 \
        --seed 0 --method hb nag --eta-divisor 10 10 --beta 0.99 0.99 --out hb.parquet nag.parquet \
        --meta hb.json nag.json

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
engines share this module's loop, metrics, Gram tracking, divergence handling and the forward/update interface.

Packing: ``train_many`` trains k runs that share X, y and W(0) as batched (k, d, m) tensors. Every run's slice of
every buffer starts on a 256-byte boundary (MKL picks kernels, hence rounding, by alignment), so a run trained in a
pack is bit-identical to the same run trained alone (tested on CPU; on CUDA untested).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from momentum_ntk import defaults, io, methods, model, ntk, plan
from momentum_ntk.trajectory import Linearized, gram_pair
from momentum_ntk.errors import UserError, cli
from momentum_ntk.records import learning_rate
from momentum_ntk.tables import RUN_COLUMNS
from momentum_ntk.lease import resolve_device  # noqa: F401  (the one resolver; train.resolve_device for callers)

COLUMNS = RUN_COLUMNS  # a run Parquet file's columns (momentum_ntk.tables)
_ALIGN_BYTES = 256  # per-run slice alignment: MKL's (and cuBLAS's) kernel choice depends on it
# The host record of a run, per step: the step's metrics (forward), then the Gram record (_track) every gram_every steps.
_REC = ("loss", "max_dist", "traj_err_h0", "traj_err_inf", "lambda_min_H", "lambda_max_H", "pattern_changed")
N_METRICS = 4  # loss, max_dist and the two trajectory errors: computed at every step
SYNC_EVERY = 50  # steps between host copies of the metrics (divergence is still found at the exact step)
_SUM_BLOCK = 32  # rows per float32 partial sum in the max_dist reduction; partial sums are added in float64


# --------------------------------------------------------------------------------------------------------------------
# Runs and their update coefficients
# --------------------------------------------------------------------------------------------------------------------
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
        if not 0.0 <= spec.beta < 1.0:
            raise UserError(f"momentum beta={spec.beta} must lie in [0, 1)")
        return spec

    def coefficients(self) -> tuple[float, float, float, float]:
        """(β_b, ν, ρ, μ0): b(t) = g + β_b b(t−1), b(0) = μ0 g(0), W −= η (ν g + ρ b): the method's ``buffer``."""
        return methods.get(self.method).buffer(self.beta)


# --------------------------------------------------------------------------------------------------------------------
# Packed state: k runs, every per-run slice aligned to _ALIGN_BYTES
# --------------------------------------------------------------------------------------------------------------------
def _aligned_empty(k: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
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
class _Shared:
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
class _Pack:
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


def _linearized(sh: _Shared, specs: list[RunSpec], ids: list[int]) -> Linearized | None:
    """The linearized trajectories of runs ``ids`` (momentum_ntk.trajectory), None when the pack does not track them."""
    return None if sh.grams is None else Linearized(sh.grams, [(specs[i].eta, *specs[i].coefficients()) for i in ids])


def _pack_coefficients(sh: _Shared, specs: list[RunSpec], ids: list[int]) -> dict[str, Any]:
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


def _new_pack(sh: _Shared, specs: list[RunSpec], ids: list[int]) -> _Pack:
    k, (n, d), m = len(ids), sh.X.shape, sh.W0.shape[1]
    dtype, dev = sh.X.dtype, sh.X.device
    co = _pack_coefficients(sh, specs, ids)
    W = _aligned_empty(k, (d, m), dtype, dev)
    W.copy_(sh.W0.expand(k, d, m))
    B = _aligned_empty(k, (d, m), dtype, dev).zero_() if co["momentum"] else None
    return _Pack(
        ids=list(ids),
        W=W,
        B=B,
        G=_aligned_empty(k, (d, m), dtype, dev),
        Z=_aligned_empty(k, (n, m), dtype, dev),
        Xr=_aligned_empty(k, (n, d), dtype, dev),
        f=_aligned_empty(k, (n, 1), dtype, dev),
        beta_b=co["beta_b"],
        mu0=co["mu0"],
        c_g=co["c_g"],
        c_b=co["c_b"],
        lin=_linearized(sh, specs, ids),
    )


def restrict_pack(p: Any, keep: list[int], buffers: Sequence[str]) -> Any:
    """A pack (this engine's _Pack or the row-space RowPack) restricted to slots ``keep``, used when runs diverge:
    the per-run ``buffers`` copied into fresh aligned tensors, the coefficient tensors indexed, the linearized
    trajectories selected; every other field kept."""

    def sub(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        out = _aligned_empty(len(keep), tuple(t.shape[1:]), t.dtype, t.device)
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


def _select(p: _Pack, keep: list[int]) -> _Pack:
    """The pack restricted to slots ``keep`` (fresh aligned buffers; used when runs diverge)."""
    if not isinstance(p, _Pack):  # a row-space pack (momentum_ntk.rowspace.RowPack)
        return p.select(keep)
    return restrict_pack(p, keep, ("W", "B", "G", "Z", "Xr", "f"))


# --------------------------------------------------------------------------------------------------------------------
# One step: forward (residuals), metrics, gradient, update
# --------------------------------------------------------------------------------------------------------------------
def _preactivations(sh: _Shared, p: _Pack) -> None:
    """Z = X W for every run (one batched GEMM, X shared)."""
    k, (n, d) = p.k, sh.X.shape
    torch.bmm(sh.X.expand(k, n, d), p.W, out=p.Z)


def _residuals(sh: _Shared, p: _Pack) -> None:
    """Z ← relu(Z) in place; f ← relu(Z) a/√m − y, the residual r (k, n, 1)."""
    p.Z.relu_()
    for i in range(p.k):  # one GEMV per run: a batched N=1 GEMM rounds differently for different k
        torch.mv(p.Z[i], sh.a_s, out=p.f[i, :, 0])
    p.f.sub_(sh.y[:, None])


def _gradient(sh: _Shared, p: _Pack) -> None:
    """G ← (X ⊙ r)ᵀ 1{Z > 0} (k, d, m); needs Z = relu(X W) and f = r; turns Z into the 0/1 mask in place."""
    p.Z.sign_()
    torch.mul(sh.X, p.f, out=p.Xr)
    torch.bmm(p.Xr.transpose(1, 2), p.Z, out=p.G)


def _update(p: _Pack, t: int) -> None:
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


def _col_sums_f64(Q: torch.Tensor) -> torch.Tensor:
    """Column sums (k, m) of Q (k, d, m) in float64: partial sums over blocks of 32 rows in Q's dtype, then float64."""
    k, d, m = Q.shape
    nb = d // _SUM_BLOCK
    out = Q[:, : nb * _SUM_BLOCK].view(k, nb, _SUM_BLOCK, m).sum(2).to(torch.float64).sum(1)
    if d % _SUM_BLOCK:
        out += Q[:, nb * _SUM_BLOCK :].to(torch.float64).sum(1)
    return out


def _loss_and_max_dist(sh: _Shared, p: _Pack) -> torch.Tensor:
    """(k, 2) float64: ℓ = ½ Σ r² and max_r ‖w_r − w_r(0)‖ per run. Uses G as scratch (call before _gradient)."""
    torch.sub(p.W, sh.W0, out=p.G)
    p.G.mul_(p.G)
    loss = 0.5 * p.f.to(torch.float64).square().sum((1, 2))
    return torch.stack([loss, _col_sums_f64(p.G).amax(1).sqrt()], 1)


def _track(sh: _Shared, p: _Pack) -> torch.Tensor:
    """(k, 3) float64 on the device: λmin(H), λmax(H) on the tracked rows and the fraction of S (n, m) changed since
    step 0, for every run of the pack in one batched computation (no host sync).

    Reads the pre-activations Z = X W (call between _preactivations and _residuals). At step 0 every run of the pack
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


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------
def resolve_dtype(dtype: str | torch.dtype | None, like: np.ndarray) -> torch.dtype:
    """torch dtype from "float32" / "float64" / a torch dtype; None means the dtype of ``like``."""
    if dtype is None:
        dtype = str(like.dtype)
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = {"float32": torch.float32, "float64": torch.float64}.get(str(dtype).removeprefix("torch."))
    if out not in (torch.float32, torch.float64):
        raise UserError(f"dtype {dtype!r} is not supported; use float32 or float64")
    return out


def tf32_state() -> dict[str, Any]:
    """Whether float32 matmuls may use TF32: torch's flag, the matmul precision and the two environment overrides.

    ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` makes cuBLAS use TF32 whatever torch's flag says; ``NVIDIA_TF32_OVERRIDE=0``
    forbids TF32 in every NVIDIA library. ``tf32`` is the effective state for CUDA float32 GEMMs.
    """
    override = os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
    nvidia = os.environ.get("NVIDIA_TF32_OVERRIDE")
    allowed = bool(torch.backends.cuda.matmul.allow_tf32) or override == "1"
    return {
        "tf32": allowed and nvidia != "0",
        "tf32_torch_flag": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": override,
        "NVIDIA_TF32_OVERRIDE": nvidia,
    }


def device_record(device: str) -> dict[str, Any]:
    """The compute device for provenance: torch's CUDA build (None: CPU-only), and for CUDA the GPU's name,
    capability, memory, driver and cuDNN versions; always the effective TF32 state (:func:`tf32_state`)."""
    rec: dict[str, Any] = {"torch_cuda": torch.version.cuda}
    if str(device).startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        rec |= {
            "gpu": props.name,
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_driver": _nvidia_driver(),
            "cudnn": torch.backends.cudnn.version(),
        }
    return rec | tf32_state()


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi (None when it is missing or does not answer within 10 s)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else None


def strict_float32() -> None:
    """Disable TF32 and reduced-precision matmuls: float32 math is IEEE float32 on every device."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def _check_inputs(X: np.ndarray, y: np.ndarray, W0: np.ndarray | None, a: np.ndarray, m: int | None = None) -> None:
    n, d = X.shape if X.ndim == 2 else (-1, -1)
    shape = (d, m) if W0 is None else W0.shape
    if n < 1 or y.shape != (n,) or shape[:1] != (d,) or len(shape) != 2 or a.shape != shape[1:]:
        raise UserError(
            f"shapes do not fit: X {X.shape} (n, d), y {y.shape} (n,), W0 {shape} (d, m), a {a.shape} (m,)"
        )


def train_many(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    runs: Sequence[dict[str, Any] | RunSpec],
    *,
    steps: int,
    gram_every: int = defaults.GRAM_EVERY,
    gram_rows: Sequence[int] | np.ndarray | None = None,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    divergence_factor: float = defaults.DIVERGENCE_FACTOR,
    progress: bool = False,
    pack_size: int | None = None,
    sync_every: int = SYNC_EVERY,
    trajectory: bool = True,
    engine: str = defaults.ENGINE,
) -> list[pd.DataFrame]:
    """Train k runs (dicts with method, eta, beta) from the same W(0); one DataFrame per run.

    ``engine``: ``direct`` (W as d×m tensors), ``rowspace`` (W(t) = W(0) + Xᵀ C(t) on n×m coefficients C; exact,
    momentum_ntk.rowspace) or ``auto`` (the measured cost rule, momentum_ntk.plan.choose_engine). W0 is a (d, m)
    array, or model.Preactivations (X W(0) only: row-space engine). ``attrs["engine"]`` records the engine used.

    The runs are trained in batches of at most ``pack_size`` (None: all k at once) as batched (k, d, m) tensors with
    shared X: on a GPU one wide batch fills the device, on a CPU ``pack_size=1`` (one after another) is as fast.

    Each frame has one row per step 0..steps_done with the CONTRACT.md columns (``COLUMNS``), and ``attrs``
    {method, eta, beta, steps, steps_done, diverged, diverged_step, last_finite_loss}. λmin/λmax of H(t) on
    ``gram_rows`` and pattern_changed are filled at steps 0, steps and every ``gram_every`` steps (0: first and last
    only), NaN elsewhere. A run stops at the first step whose loss is non-finite or above divergence_factor·ℓ(0);
    that step's row is kept when its loss is finite. Metrics stay on the device and reach the host every
    ``sync_every`` steps: a diverged run may compute up to that many steps more, but they are dropped, so
    ``diverged_step`` and every output are exactly those of a check at every step. Every run is bit-identical to the
    same run trained alone, whatever ``pack_size`` and ``sync_every``. ``traj_err_h0`` / ``traj_err_inf`` are the
    trajectory errors e(k) of momentum_ntk.trajectory at every step (NaN without ``trajectory``).
    """
    specs = [RunSpec.of(r) for r in runs]
    if not specs:
        raise UserError("no runs given")
    if steps < 0 or gram_every < 0:
        raise UserError(f"steps={steps} and gram_every={gram_every} must be >= 0")
    if pack_size is not None and pack_size < 1 or sync_every < 1:
        raise UserError(f"pack_size={pack_size} must be None or >= 1 and sync_every={sync_every} >= 1")
    from momentum_ntk import rowspace

    n, d, m = np.shape(X)[0], np.shape(X)[-1], np.shape(W0)[-1]
    engine = rowspace.resolve_engine(engine, n, d, m, have_w0=not isinstance(W0, model.Preactivations))
    if engine == "rowspace":
        sh = rowspace.row_shared_state(X, y, W0, a, dtype=dtype, device=device, gram_rows=gram_rows,
                                       trajectory=trajectory)  # fmt: skip
        new_pack = rowspace.new_row_pack
    else:
        sh = shared_state(X, y, W0, a, dtype=dtype, device=device, gram_rows=gram_rows, trajectory=trajectory)
        new_pack = _new_pack
    k = len(specs)
    tracked = {0, steps} | (set(range(0, steps + 1, gram_every)) if gram_every else set())
    log = _Log(k, steps, divergence_factor)
    size = k if pack_size is None else pack_size
    bar = _progress(steps * k, progress)
    for start in range(0, k, size):
        pack = new_pack(sh, specs, list(range(start, min(k, start + size))))
        _train_pack(sh, pack, steps, tracked, log, sync_every, bar)
    bar.close()
    frames = [_frame(specs[j], log.rec[j], int(log.last[j]), log.diverged_step[j], steps) for j in range(k)]
    for df in frames:
        df.attrs["engine"] = engine
    return frames


class _Log:
    """Host-side record of k runs: metrics per step, the last kept step and the divergence step of each run."""

    def __init__(self, k: int, steps: int, divergence_factor: float) -> None:
        self.rec = np.full((k, steps + 1, len(_REC)), np.nan)  # _REC columns
        self.last = np.full(k, -1)  # last kept step per run
        self.diverged_step: list[int | None] = [None] * k
        self.loss0 = np.full(k, np.nan)
        self.factor = divergence_factor

    def take(self, ids: list[int], t0: int, metrics: np.ndarray, track: dict[int, np.ndarray]) -> list[int]:
        """Enter steps t0.. of the pack's runs ``ids`` (metrics (T, k, 4), track {step: (k, 3)}) in step order, as a
        check after every step would; returns the slots of the runs still going."""
        keep = []
        for slot, run in enumerate(ids):
            for i in range(metrics.shape[0]):
                t = t0 + i
                loss = metrics[i, slot, 0]
                if t == 0:
                    self.loss0[run] = loss
                if t in track:
                    self.rec[run, t, N_METRICS:] = track[t][slot]
                if np.isfinite(loss):
                    self.rec[run, t, :N_METRICS] = metrics[i, slot]
                    self.last[run] = t
                if not np.isfinite(loss) or loss > self.factor * self.loss0[run]:
                    self.diverged_step[run] = t
                    break
            else:
                keep.append(slot)
        return keep


def shared_state(X: np.ndarray, y: np.ndarray, W0: np.ndarray | None, a: np.ndarray, *,
                 dtype: str | torch.dtype | None, device: str, gram_rows: Sequence[int] | np.ndarray | None = None,
                 trajectory: bool = True, m: int | None = None) -> _Shared:  # fmt: skip
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
    return _Shared(
        X=put(X),
        y=put(y),
        W0=None if W0 is None else put(W0),
        a_s=a_s64.to(tdtype),
        a_s64=a_s64,
        rows=put(rows, torch.int64),
        XXt_rows=put(X64[rows] @ X64[rows].T, torch.float64),
        grams=gram_pair(X64, X64 @ np.asarray(W0, dtype=np.float64), dev) if trajectory and W0 is not None else None,
    )


def new_pack(sh: _Shared, specs: Sequence[RunSpec | dict[str, Any]]) -> _Pack:
    """Packed state of ``specs`` (every run from W(0)): the batch a pack trains, as train_many builds it."""
    return _new_pack(sh, [RunSpec.of(r) for r in specs], list(range(len(specs))))


def forward(sh: _Shared, p: _Pack, track: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first half of one step at W(t): pre-activations and pattern, residual r = f(W(t)) − y, and the metrics
    (k, 4) = (loss, max_r ‖w_r(t) − w_r(0)‖, e_H(0)(t), e_H∞(t)) as a device tensor, e the trajectory error of
    momentum_ntk.trajectory (NaN when not tracked); with ``track`` also the Gram record of H(t). A row-space pack
    (momentum_ntk.rowspace.RowPack) computes the loss, max_dist and Gram record itself, and leaves r in p.f alike."""
    if isinstance(p, _Pack):
        _preactivations(sh, p)
        gram = _track(sh, p) if track else None
        _residuals(sh, p)
        metrics = _loss_and_max_dist(sh, p)
    else:
        metrics, gram = p.forward(sh, track)
    if p.lin is None:
        return torch.cat([metrics, metrics.new_full((p.k, 2), float("nan"))], 1), gram
    return torch.cat([metrics, p.lin.errors(p.f)], 1), gram


def update(sh: _Shared, p: _Pack, t: int) -> None:
    """The second half: the gradient at W(t) and the method's buffer update to W(t+1) (eqs. 3-5), then the
    linearized trajectories' step."""
    if isinstance(p, _Pack):
        _gradient(sh, p)
        _update(p, t)
    else:  # a row-space pack (momentum_ntk.rowspace.RowPack): the same update on its coefficients C
        p.update(sh, t)
    if p.lin is not None:
        p.lin.advance(t)


def _train_pack(
    sh: _Shared, p: _Pack, steps: int, tracked: set[int], log: _Log, sync_every: int, bar: Any
) -> None:
    """Run the pack's steps 0..steps; metrics are buffered on the device and entered into ``log`` in chunks."""
    sh.S0 = None
    buf = torch.empty(min(sync_every, steps + 1), p.k, N_METRICS, dtype=torch.float64, device=sh.X.device)
    track: dict[int, torch.Tensor] = {}
    t0 = 0
    for t in range(steps + 1):
        metrics, gram = forward(sh, p, track=t in tracked)
        if gram is not None:
            track[t] = gram
        buf[t - t0] = metrics
        if t - t0 + 1 == buf.shape[0] or t == steps:  # one host sync per chunk
            metrics = buf[: t - t0 + 1].cpu().numpy()
            keep = log.take(p.ids, t0, metrics, {s: v.cpu().numpy() for s, v in track.items()})
            track, t0 = {}, t + 1
            if not keep or t == steps:
                break
            if len(keep) < p.k:
                p = _select(p, keep)
                buf = buf.new_empty(buf.shape[0], p.k, N_METRICS)
        update(sh, p, t)
        bar.update(p.k)


def train(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    *,
    method: str,
    eta: float,
    beta: float,
    steps: int,
    gram_every: int = defaults.GRAM_EVERY,
    gram_rows: Sequence[int] | np.ndarray | None = None,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    divergence_factor: float = defaults.DIVERGENCE_FACTOR,
    progress: bool = False,
    engine: str = defaults.ENGINE,
) -> pd.DataFrame:
    """Train one run (GD eq. 3, HB eq. 4 or NAG eq. 5) from W0 (d, m) on X (n, d), y (n,) with output weights a (m,).

    Computes in ``dtype`` (default: X's dtype) on ``device`` with ``engine``; returns one row per step (see
    ``train_many``) with divergence info and the engine in ``df.attrs``.
    """
    return train_many(
        X,
        y,
        W0,
        a,
        [RunSpec(method, float(eta), float(beta))],
        steps=steps,
        gram_every=gram_every,
        gram_rows=gram_rows,
        dtype=dtype,
        device=device,
        divergence_factor=divergence_factor,
        progress=progress,
        engine=engine,
    )[0]


def loss_and_grad(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, a: torch.Tensor) -> tuple[float, torch.Tensor]:
    """ℓ(W) (float64) and ∂ℓ/∂W (d, m) by the training loop's own hand-written two-GEMM code path."""
    m = W.shape[1]
    a_s64 = (a.to(torch.float64) / math.sqrt(m)).to(W.device)
    empty = torch.empty(0, dtype=torch.int64, device=W.device)
    sh = _Shared(X=X, y=y, W0=W, a_s=a_s64.to(W.dtype), a_s64=a_s64, rows=empty, XXt_rows=empty)
    p = _new_pack(sh, [RunSpec("gd", 1.0)], [0])
    _preactivations(sh, p)
    _residuals(sh, p)
    loss = float(_loss_and_max_dist(sh, p)[0, 0])
    _gradient(sh, p)
    return loss, p.G[0] * sh.a_s


def _frame(spec: RunSpec, rec: np.ndarray, last: int, diverged_step: int | None, steps: int) -> pd.DataFrame:
    rows = rec[: last + 1]
    df = pd.DataFrame({"step": np.arange(last + 1, dtype=np.int64)} | {c: rows[:, _REC.index(c)] for c in COLUMNS[1:]})
    df.attrs.update(
        method=spec.method,
        eta=spec.eta,
        beta=spec.beta,
        steps=steps,
        steps_done=last,
        diverged=diverged_step is not None,
        diverged_step=diverged_step,
        last_finite_loss=float(rows[-1, 0]) if last >= 0 else None,
    )
    return df


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(steps: int, enabled: bool) -> Any:
    """A tqdm bar on stderr (steps/s and ETA, refreshed at most every 5 s so logs stay small)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=steps, unit="step", mininterval=5.0, file=sys.stderr, dynamic_ncols=False, ascii=True)


# --------------------------------------------------------------------------------------------------------------------
# Gram tracking rows and λ0 on them
# --------------------------------------------------------------------------------------------------------------------
def gram_rows_subset(n: int, max_n: int, seed: int) -> np.ndarray:
    """All rows when n <= max_n, else a seeded sorted sample of max_n distinct rows: the ntk stage's Lemma 2 rows
    (:func:`momentum_ntk.ntk.subsample_rows`), so both stages measure λ on the same instances."""
    if max_n < 1:
        raise UserError(f"--gram-max-n must be >= 1, got {max_n}")
    return ntk.subsample_rows(n, max_n, seed)


def gram_inf(X: np.ndarray) -> np.ndarray:
    """H∞ (eq. 10) in closed form, float64 (n, n): the ntk stage's blocked, exactly symmetric builder."""
    return ntk.ntk_gram(np.asarray(X, dtype=np.float64))


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="binarized data .npz (X, y)")
    ap.add_argument("--ntk-summary", type=Path, help="NTK summary.json (learning rates, λ0 of the tracked rows)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--width", required=True, type=int, help="hidden width m")
    ap.add_argument("--seed", type=int, default=0, help="seed of W(0), a (model.init_params)")
    # One value per run of the pack (all runs share X, m and the seed, hence W(0)); a single value is one run.
    ap.add_argument("--method", required=True, nargs="+", choices=methods.names(), help="one per run")
    ap.add_argument("--eta-divisor", type=int, nargs="+", default=None, help="η = summary['eta'][str(divisor)], per run")
    ap.add_argument("--eta", type=float, nargs="+", default=None, help="explicit learning rates (override divisors)")
    ap.add_argument("--beta", type=float, nargs="+", default=[0.0], help="momentum β, one per run")
    ap.add_argument("--out", required=True, type=Path, nargs="+", help="run Parquet, one per run")
    ap.add_argument("--meta", required=True, type=Path, nargs="+", help="run sidecar JSON, one per run")
    ap.add_argument("--steps", type=int, default=defaults.STEPS)
    ap.add_argument("--gram-every", type=int, default=defaults.GRAM_EVERY, help="track H(t) every this many steps (0: first and last)")
    ap.add_argument("--gram-max-n", type=int, default=defaults.GRAM_MAX_N, help="track H(t) on at most this many rows")
    ap.add_argument("--gram-seed", type=int, default=defaults.GRAM_SEED)
    ap.add_argument("--dtype", choices=("float32", "float64"), default=defaults.DTYPE)
    ap.add_argument("--device", default=defaults.DEVICE, help="auto | cpu | cuda | cuda:<i>")
    ap.add_argument("--gpus-held", type=int, default=0, help="GPUs this job holds (Snakemake resources.gpu)")
    ap.add_argument(
        "--pack-size", type=int, default=0, help="most runs batched together; 0: all on a GPU, 1 (one by one) on a CPU"
    )
    ap.add_argument("--sync-every", type=int, default=SYNC_EVERY, help="steps between host copies of the metrics")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--divergence-factor", type=float, default=defaults.DIVERGENCE_FACTOR)
    ap.add_argument("--engine", choices=plan.ENGINES, default=defaults.ENGINE,
                    help="direct (d×m weights), rowspace (exact n×m row-space form) or auto (measured cost rule)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bar on stderr")
    # A packed job also expands Δ0 of its (dataset, width, seed) on the eigenvectors of H∞ and H(0) (the theory
    # stage's modes file): it holds X, W(0) and a already, so the theory stage needs no job of its own for it.
    ap.add_argument("--modes-out", type=Path, help="write the theory modes file of (dataset, width, seed) here")
    ap.add_argument("--spectrum", type=Path, help="ntk stage's spectrum.parquet (with --modes-out)")
    ap.add_argument("--eigvecs", type=Path, help="ntk stage's eigvecs.npy (with --modes-out)")
    return ap


def pack_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The pack's runs from the per-run CLI lists: method, eta_divisor, beta, out, meta (equal lengths; a single
    --beta or --eta-divisor applies to every run)."""
    k = len(args.method)
    lists = {"method": args.method, "beta": args.beta, "out": args.out, "meta": args.meta}
    lists["eta_divisor"] = args.eta_divisor if args.eta_divisor is not None else [None]
    lists["eta"] = args.eta if args.eta is not None else [None]
    for key in ("beta", "eta_divisor", "eta"):
        if len(lists[key]) == 1:
            lists[key] = lists[key] * k
    bad = {key: len(v) for key, v in lists.items() if len(v) != k}
    if bad:
        raise UserError(f"{k} runs (--method) but {bad} values: give one --eta-divisor/--beta/--out/--meta per run")
    outs = [str(p) for p in args.out + args.meta]
    if len(set(outs)) != len(outs):
        raise UserError("--out and --meta name the same file twice; every run needs its own Parquet and sidecar")
    return [{key: lists[key][i] for key in lists} for i in range(k)]


def tracked_lambda0(args: argparse.Namespace, X: np.ndarray, rows: np.ndarray) -> tuple[float, str]:
    """λ0 = λmin(H∞) on the tracked rows: the ntk stage's value when its summary was made for these rows
    (``gram_rows`` record), else computed here (once per job). Returns (λ0, where it came from)."""
    rec = None
    if args.ntk_summary and args.ntk_summary.is_file():
        summary = io.read_record(args.ntk_summary, what="NTK summary", fix=io.rebuild_fix(args.ntk_summary))
        rec = summary.get("gram_rows")
    same_rows = isinstance(rec, dict) and (rec.get("max_n"), rec.get("seed"), rec.get("n")) == (
        args.gram_max_n, args.gram_seed, len(X))
    if same_rows:
        return float(rec["lambda0"]), str(args.ntk_summary)
    return ntk.lambda0_of_rows(X, rows), "computed"


@contextlib.contextmanager
def _device(requested: str, gpus_held: int) -> Iterator[tuple[str, float]]:
    """The concrete device ("cpu", or a CUDA device leased through momentum_ntk.lease) and the seconds spent creating
    its CUDA context (0 on the CPU), which the run's wall time leaves out."""
    from momentum_ntk.lease import job_device

    with job_device(requested, gpus_held, "train") as dev:
        if dev == "cpu":
            yield "cpu", 0.0
            return
        t0 = time.perf_counter()
        torch.zeros(1, device=dev)  # CUDA context creation
        torch.cuda.synchronize(dev)
        yield dev, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.width < 1 or args.steps < 0 or args.gram_every < 0 or args.threads < 1:
        raise UserError("--width and --threads must be >= 1, --steps and --gram-every >= 0")
    if args.pack_size < 0 or args.sync_every < 1:
        raise UserError("--pack-size must be >= 0 (0: automatic) and --sync-every >= 1")
    modes_args = [args.modes_out, args.spectrum, args.eigvecs]
    if any(v is not None for v in modes_args) and not all(v is not None for v in modes_args):
        raise UserError("--modes-out, --spectrum and --eigvecs go together (the theory modes of this job)")
    torch.set_num_threads(args.threads)
    runs = pack_runs(args)
    for run in runs:
        run["eta"] = learning_rate(args.ntk_summary, run["eta_divisor"], run["eta"])
    X, y = io.read_binarized(args.data)
    n, d = X.shape
    from momentum_ntk import rowspace

    engine = rowspace.resolve_engine(args.engine, n, d, args.width)
    if engine == "rowspace" and args.modes_out is None:  # X W(0) only: no d×m array (same bits as from W(0))
        W0, a = model.init_preactivations(X, args.width, args.seed)
    else:  # the direct engine, and the theory modes, need W(0) itself
        W0, a = model.init_params(d, args.width, args.seed)
    rows = gram_rows_subset(n, args.gram_max_n, args.gram_seed)
    lambda0_rows, lambda0_source = tracked_lambda0(args, X, rows)

    with _device(args.device, args.gpus_held) as (device, cuda_init_s):
        pack_size = args.pack_size or (len(runs) if device.startswith("cuda") else 1)
        t0 = time.perf_counter()
        frames = train_many(
            X,
            y,
            W0,
            a,
            [RunSpec(r["method"], r["eta"], r["beta"]) for r in runs],
            steps=args.steps,
            gram_every=args.gram_every,
            gram_rows=rows,
            dtype=args.dtype,
            device=device,
            divergence_factor=args.divergence_factor,
            progress=args.progress,
            pack_size=pack_size,
            sync_every=args.sync_every,
            engine=engine,
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        env = io.environment_record() | device_record(device)
        if args.modes_out is not None:
            from momentum_ntk.theory import modes_of_job

            modes_of_job(X, y, W0, a, spectrum=args.spectrum, eigvecs=args.eigvecs, dataset=args.dataset,
                         seed=args.seed, out=args.modes_out, device=device)  # fmt: skip

    steps_total = sum(max(df.attrs["steps_done"], 0) for df in frames)
    for run, df in zip(runs, frames):
        info = dict(df.attrs)
        df.attrs = {}  # Parquet stays free of run metadata (the sidecar has it): same seed, same bytes
        io.write_parquet(run["out"], df)
        io.write_json(
            run["meta"],
            {
                "dataset": args.dataset,
                "method": run["method"],
                "width": args.width,
                "eta_divisor": run["eta_divisor"],
                "eta": run["eta"],
                "beta": run["beta"],
                "seed": args.seed,
                "steps": args.steps,
                "steps_done": info["steps_done"],
                "diverged": info["diverged"],
                "diverged_step": info["diverged_step"],
                "last_finite_loss": info["last_finite_loss"],
                "gram_every": args.gram_every,
                "gram_rows": rows,
                "lambda0_rows": lambda0_rows,
                "lambda0_rows_source": lambda0_source,
                "dtype": args.dtype,
                "engine": info["engine"],
                "tf32": env["tf32"],
                "device": device,
                "threads": args.threads,
                # The pack: every run of this job shares its wall time (the k runs were trained together).
                "pack_size": len(runs),
                "pack_batch": pack_size,
                "wall_s": wall,
                "steps_per_s": steps_total / wall if wall > 0 else None,
                "cuda_init_s": cuda_init_s,
                "environment": env,
                "args": {
                    key: ([str(v) for v in val] if isinstance(val, list) else str(val) if isinstance(val, Path) else val)
                    for key, val in vars(args).items()
                },
            },
        )
        status = f"diverged at step {info['diverged_step']}" if info["diverged"] else "done"
        print(
            f"{run['method']} m={args.width} eta={run['eta']:.4g} beta={run['beta']}: {status}, "
            f"{info['steps_done']} steps, loss {info['last_finite_loss']}",
            file=sys.stderr,
        )
    print(f"{len(runs)} runs, {steps_total} steps in {wall:.1f} s on {device} (batches of {pack_size}, {engine} engine)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
