"""The two-layer ReLU network of eq. (1), its seeded initialisation and its finite-width Gram matrix (eq. 9).

    f(W, a, x) = m^{-1/2} Σ_r a_r relu(w_rᵀ x),     W = (w_1 … w_m) ∈ R^{d×m},  a ∈ {−1, +1}^m (fixed)

Initialisation (paper §3.1): w_r(0) ~ N(0, I_d), a_r uniform on {−1, +1}. The draw happens on the CPU with NumPy's
PCG64 seeded by ``(seed, m)``, so W(0) for a given (seed, m, d) is the same whatever device trains it and whichever
other runs share the job: every method / η / β of one (dataset, m, seed) starts from the same W(0) (paired runs).

Finite-width Gram matrix (eq. 9 with ∂f_i/∂w_r = m^{-1/2} a_r x_i 1{w_rᵀx_i ≥ 0}, a_r² = 1):

    H(W)_ij = (x_iᵀ x_j) · (1/m) Σ_r 1{w_rᵀx_i ≥ 0} 1{w_rᵀx_j ≥ 0} = [(X Xᵀ) ⊙ (S Sᵀ)]_ij / m,   S_ir = 1{w_rᵀx_i ≥ 0}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# W(0) is drawn in blocks of whole rows of at most this many entries (32 MiB in float64) when only X W(0) is needed.
W0_BLOCK_ENTRIES = 2**22


def init_params(d: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded W(0) (d, m) ~ N(0, 1) entrywise and a (m,) uniform on {−1, +1}, both float64, drawn on the CPU."""
    if d < 1 or m < 1:
        raise ValueError(f"need d >= 1 and m >= 1, got d={d}, m={m}")
    rng = np.random.Generator(np.random.PCG64([int(seed), int(m)]))
    W0 = rng.standard_normal((d, m))
    a = rng.integers(0, 2, size=m).astype(np.float64) * 2.0 - 1.0
    return W0, a


@dataclass(frozen=True)
class Preactivations:
    """W(0) known only through its pre-activations on the data: Z0 = X W(0) (n, m), float64. Everything the row-space
    training engine needs of W(0) (momentum_ntk.rowspace), without the d×m array."""

    Z0: np.ndarray  # (n, m) float64

    @property
    def shape(self) -> tuple[int, int]:
        return self.Z0.shape


def _w0_rows_per_block(d: int, m: int) -> int:
    return max(1, min(d, W0_BLOCK_ENTRIES // m))


def preactivations(X: np.ndarray, W0: np.ndarray) -> Preactivations:
    """Z0 = X W(0) (n, m) in float64, summed over blocks of W(0)'s rows (torch float64 GEMMs on fresh copies) exactly
    as :func:`init_preactivations` sums them: both give the same bits for the same W(0)."""
    return _accumulate(X, *W0.shape, lambda j, rows: np.asarray(W0[j : j + rows], dtype=np.float64))


def init_preactivations(X: np.ndarray, m: int, seed: int) -> tuple[Preactivations, np.ndarray]:
    """(Z0 = X W(0), a) for the W(0), a of :func:`init_params` (d = X's columns), drawing W(0) a block of rows at a
    time: peak memory ~ n·m + 2^22 doubles instead of d·m. The random stream is the same (a row-major draw in pieces
    continues the one draw), so a is identical and Z0 equals ``preactivations(X, init_params(d, m, seed)[0])`` bit
    for bit."""
    d = np.shape(X)[1]
    if d < 1 or m < 1:
        raise ValueError(f"need d >= 1 and m >= 1, got d={d}, m={m}")
    rng = np.random.Generator(np.random.PCG64([int(seed), int(m)]))
    pre = _accumulate(X, d, m, lambda j, rows: rng.standard_normal((rows, m)))  # in order: the stream of one draw
    a = rng.integers(0, 2, size=m).astype(np.float64) * 2.0 - 1.0
    return pre, a


def _accumulate(X: np.ndarray, d: int, m: int, block: Callable[[int, int], np.ndarray]) -> Preactivations:
    """Σ_j X[:, J] W0[J, :] over consecutive blocks J = j..j+rows−1 of W(0)'s rows, ``block(j, rows)`` giving W0[J, :],
    in float64 (torch GEMMs on fresh 64-byte aligned copies, one fixed order: the same bits whatever the source)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} columns but W(0) {d} rows")
    Z0 = torch.zeros(X.shape[0], m, dtype=torch.float64)
    rows = _w0_rows_per_block(d, m)
    for j in range(0, d, rows):
        Wb = torch.tensor(block(j, min(rows, d - j)), dtype=torch.float64)  # the NumPy block is freed here
        Z0.addmm_(torch.tensor(X[:, j : j + Wb.shape[0]], dtype=torch.float64), Wb)
        del Wb
    return Preactivations(Z0.numpy())


def forward(X: torch.Tensor, W: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Network outputs f (n,) for inputs X (n, d), hidden weights W (d, m), output weights a (m,)."""
    m = W.shape[-1]
    return torch.relu(X @ W) @ a / m**0.5


def activation_pattern(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Boolean S (n, m) with S_ir = 1{w_rᵀ x_i ≥ 0}."""
    return (X @ W) >= 0


def gram_from_pattern(XXt: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """H = (X Xᵀ) ⊙ (S Sᵀ) / m in XXt's dtype, from a precomputed XXt (n, n) and one pattern S (n, m) or a batch
    (k, n, m), giving (n, n) or (k, n, n). S Sᵀ counts co-activations, integers ≤ m, so below m = 2^24 a float32 GEMM
    computes it exactly at half the cost (and in any summation order); the result is the same bit for bit."""
    m = S.shape[-1]
    Sf = S.to(torch.float32 if m < 2**24 else XXt.dtype)
    return XXt * (Sf @ Sf.transpose(-1, -2)).to(XXt.dtype) / m


def gram_finite(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Finite-width Gram matrix H(W) (n, n) of eq. (9) in X's dtype, built in place: peak memory ≈ two n×n matrices
    besides the pattern, equal bit for bit to :func:`gram_from_pattern` (the one builder every stage uses)."""
    S = activation_pattern(X, W)
    m = S.shape[1]
    Sf = S.to(torch.float32 if m < 2**24 else X.dtype)
    del S
    H = (Sf @ Sf.T).to(X.dtype)
    del Sf
    return H.mul_(X @ X.T).div_(m)
