"""The NTK Gram matrices as plain functions: H∞ of eq. (10) in closed form, its spectrum and the paper's constants
(λ0, λmax, λm, κ, the learning rates), λ0 on a row subset, and the finite-width gap of Lemma 2. A library module:
the ntk stage (``python -m momentum_ntk.ntk``) writes what these compute; the train stage and the trajectory error
use them directly.

Math (paper §3.2, Du et al. 2019 §3). For inputs x_i, x_j with angle θ_ij = arccos(x_iᵀx_j / (‖x_i‖‖x_j‖)),

    H∞_ij = E_{w~N(0,I)}[x_iᵀx_j 1{wᵀx_i ≥ 0, wᵀx_j ≥ 0}] = x_iᵀx_j (π − θ_ij) / (2π)          (eq. 10)

because the half-spaces {wᵀx_i ≥ 0} and {wᵀx_j ≥ 0} of a rotation-invariant w overlap with probability
(π − θ_ij)/(2π). For unit rows diag(H∞) = 1/2 and trace(H∞) = n/2. With λ0 = λmin(H∞) (Lemma 1) and
λm = λmax(H∞) + λ0/4 (Lemma 3), the condition number is κ = λm / (λ0/2) and the paper's learning rates are
η = 1/(c λm) for c in the divisors (§5.1). Lemma 2 says that for m large enough, ‖H(0) − H∞‖₂ ≤ λ0/4 and
λmin(H(0)) ≥ 3λ0/4; :func:`finite_width_gap` measures both at the widths used for training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.linalg
import torch

from momentum_ntk.model import gram_finite, init_params


PARALLEL_COS = 1.0 - 1e-12  # two rows this parallel make H∞ singular (Lemma 1 fails)


EIGH_DRIVERS = ("evr", "evd", "ev")


def _row_norms(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1)
    if np.any(norms == 0):
        raise ValueError(f"X has {int(np.sum(norms == 0))} zero rows; the angle in eq. (10) is undefined for them")
    return norms


def ntk_gram(X: np.ndarray, block_rows: int = 1024) -> np.ndarray:
    """Infinite-width NTK Gram matrix H∞ of eq. (10), exactly symmetric, float64.

    H∞_ij = x_iᵀx_j · (π − arccos(clip(x_iᵀx_j / (‖x_i‖‖x_j‖), −1, 1))) / (2π),     H∞_ii = ‖x_i‖² / 2

    Built one block of ``block_rows`` rows at a time on the upper triangle, in place on the single (n, n) output
    buffer (cosine, clip, arccos and the product happen there), then mirrored to the lower triangle. Extra memory is
    one (block_rows, n) buffer for the dot products, so the peak is n²·8 bytes plus a sliver.

    Args:
      X: (n, d) inputs with non-zero rows (unit rows in this project).
      block_rows: rows per block; trades the temporary's size against loop overhead.

    Returns:
      (n, n) float64 array H∞.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    n = X.shape[0]
    norms = _row_norms(X)
    block_rows = max(1, min(int(block_rows), n))
    H = np.empty((n, n), dtype=np.float64)
    dots_buf = np.empty(block_rows * n, dtype=np.float64)
    for i0 in range(0, n, block_rows):
        i1 = min(i0 + block_rows, n)
        b, w = i1 - i0, n - i0
        dots = dots_buf[: b * w].reshape(b, w)  # contiguous view: x_iᵀx_j for i in block, j ≥ i0
        np.matmul(X[i0:i1], X[i0:].T, out=dots)
        diag = dots[:, :b]
        diag[...] = (diag + diag.T) / 2  # BLAS need not return an exactly symmetric diagonal block
        out = H[i0:i1, i0:]
        np.divide(dots, norms[i0:i1, None], out=out)
        np.divide(out, norms[None, i0:], out=out)
        np.clip(out, -1.0, 1.0, out=out)
        np.arccos(out, out=out)
        np.subtract(np.pi, out, out=out)
        np.multiply(out, dots, out=out)
        np.divide(out, 2.0 * np.pi, out=out)
        # θ_ii = 0 exactly; arccos(1 − ε) ≈ √(2ε) would otherwise turn a rounding ε into an error of order 1e-9
        np.fill_diagonal(out[:, :b], np.diagonal(dots[:, :b]) / 2)
        H[i1:, i0:i1] = H[i0:i1, i1:].T
    return H


def max_offdiag_cosine(X: np.ndarray, block_rows: int = 1024) -> tuple[float, int, int]:
    """Largest cosine x_iᵀx_j / (‖x_i‖‖x_j‖) over pairs i < j, and that pair; (−inf, −1, −1) when n < 2.

    A cosine of 1 means parallel rows, which make H∞ singular (Lemma 1); cosines near 1 make λ0 tiny.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    U = X / _row_norms(X)[:, None]
    n = U.shape[0]
    best, pair = -math.inf, (-1, -1)
    for i0 in range(0, n, block_rows):
        i1 = min(i0 + block_rows, n)
        C = U[i0:i1] @ U[i0:].T
        C[np.tril_indices(i1 - i0, k=0, m=n - i0)] = -math.inf  # keep j > i only
        flat = int(np.argmax(C))
        r, c = divmod(flat, n - i0)
        if C[r, c] > best:
            best, pair = float(C[r, c]), (i0 + r, i0 + c)
    return best, pair[0], pair[1]


def ntk_spectrum(
    H: np.ndarray,
    vectors: bool,
    *,
    device: str = "cpu",
    driver: str = "evr",
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigen-decomposition of a symmetric matrix with a LAPACK symmetric solver, in float64.

    On the CPU this is ``scipy.linalg.eigh`` with ``driver`` (``evr``: MRRR, extra memory one (n, n) output;
    ``evd``: divide and conquer, in place but 2n² workspace; ``ev``: QR iteration, in place with O(n) workspace,
    slowest). With ``overwrite=True`` LAPACK may destroy ``H`` instead of copying it (pass a matrix you no longer
    need). On ``device='cuda'`` it is ``torch.linalg.eigh`` / ``eigvalsh`` (cuSOLVER) in float64.

    Args:
      H: (n, n) symmetric float64 matrix (only its lower triangle is read).
      vectors: also return the eigenvectors.

    Returns:
      (eigenvalues (n,) ascending float64, eigenvectors (n, n) float64 with column k for eigenvalue k, or None).
    """
    if driver not in EIGH_DRIVERS:
        raise ValueError(f"driver must be one of {EIGH_DRIVERS}, got {driver!r}")
    if device.startswith("cuda"):
        t = torch.as_tensor(H, dtype=torch.float64, device=device)
        if vectors:
            w, V = torch.linalg.eigh(t)
            return w.cpu().numpy(), V.cpu().numpy()
        return torch.linalg.eigvalsh(t).cpu().numpy(), None
    # H is symmetric, so its transpose is the same matrix in Fortran order: LAPACK can then work on H's own buffer.
    A = H.T if H.flags.c_contiguous else H
    if vectors:
        w, V = scipy.linalg.eigh(A, lower=False, driver=driver, overwrite_a=overwrite, check_finite=False)
        return w, V
    w = scipy.linalg.eigh(A, lower=False, eigvals_only=True, driver=driver, overwrite_a=overwrite, check_finite=False)
    return w, None


def lemma_constants(eigenvalues: np.ndarray) -> dict[str, float]:
    """λ0 = λmin(H∞), λmax, λm = λmax + λ0/4 (Lemma 3) and κ = λm / (λ0/2) from ascending eigenvalues."""
    lam0, lam_max = float(eigenvalues[0]), float(eigenvalues[-1])
    lam_m = lam_max + lam0 / 4
    return {"lambda0": lam0, "lambda_max": lam_max, "lambda_m": lam_m, "kappa": lam_m / (lam0 / 2)}


def learning_rates(lambda_m: float, divisors: Sequence[int]) -> dict[str, float]:
    """The paper's learning rates η = 1/(c · λm), keyed by str(c) (§5.1)."""
    return {str(int(c)): 1.0 / (int(c) * lambda_m) for c in divisors}


def subsample_rows(n: int, max_n: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of min(n, max_n) distinct rows drawn by NumPy's PCG64 seeded by (seed, n).

    All rows when n ≤ max_n. The same draw as the train stage's Gram-tracking rows (``train.gram_rows_subset``), so
    with equal seed and max_n the Lemma 2 check and the runs' ``lambda0_rows`` refer to the same rows.
    """
    if n <= max_n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([int(seed), int(n)]))
    return np.sort(rng.choice(n, size=max_n, replace=False)).astype(np.int64)


def lambda0_of_rows(X: np.ndarray, rows: np.ndarray) -> float:
    """λmin of H∞ (eq. 10) restricted to ``rows`` of X (n, d): the λ0 that a run's tracked λmin(H(t)) is compared
    with (``lambda0_rows``). float64, NumPy's symmetric solver; computed once per dataset by this stage."""
    return float(np.linalg.eigvalsh(ntk_gram(np.asarray(X[rows], dtype=np.float64)))[0])


def _symmetric_eigvalsh(A: np.ndarray) -> np.ndarray:
    return scipy.linalg.eigh((A + A.T) / 2, eigvals_only=True, check_finite=False)


def finite_width_gap(
    X: np.ndarray,
    widths: Sequence[int],
    *,
    seed: int,
    max_n: int,
    device: str = "cpu",
    H_inf_rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Lemma 2 at the training widths: how far the finite-width Gram H(0) is from H∞ on a row subsample.

    For each width m, (W(0), a) = ``model.init_params(d, m, seed)`` (the very W(0) of the training runs with that
    seed) and H(0) = ``model.gram_finite`` on rows R = ``subsample_rows(n, max_n, seed)``. Reported per width:
    ``gap_norm`` = ‖H(0) − H∞‖₂ (largest |eigenvalue| of the symmetric difference), λmin/λmax of H(0), λ0 of H∞
    restricted to R (``lambda0_rows``), and Lemma 2's ratios ``gap_over_quarter_lambda0`` = gap / (λ0/4) (holds
    when ≤ 1) and ``min_over_three_quarter_lambda0`` = λmin(H(0)) / (3λ0/4) (holds when ≥ 1).

    Args:
      X: (n, d) inputs.
      widths: hidden widths m.
      seed: initialisation seed, also used for the row subsample.
      max_n: most rows to use.
      device: torch device for H(0).
      H_inf_rows: H∞ on the subsampled rows if already computed, else built here with :func:`ntk_gram`.

    Returns:
      DataFrame, one row per width, columns width, seed, rows, subsampled, gap_norm, lambda_min_H0,
      lambda_max_H0, lambda0_rows, lambda_max_rows, gap_over_lambda0, gap_over_quarter_lambda0,
      min_over_three_quarter_lambda0, lemma2_gap_holds, lemma2_min_holds.
    """
    n, d = X.shape
    rows = subsample_rows(n, max_n, seed)
    Xr = np.ascontiguousarray(X[rows], dtype=np.float64)
    if H_inf_rows is None:
        H_inf_rows = ntk_gram(Xr)
    lam_inf = _symmetric_eigvalsh(H_inf_rows)
    lam0 = float(lam_inf[0])
    Xt = torch.from_numpy(Xr).to(device)
    records = []
    for m in widths:
        W0, _a = init_params(d, int(m), seed)
        H0 = gram_finite(Xt, torch.from_numpy(W0).to(device)).cpu().numpy()
        lam_H0 = _symmetric_eigvalsh(H0)
        diff = _symmetric_eigvalsh(H0 - H_inf_rows)
        gap = float(max(abs(diff[0]), abs(diff[-1])))
        records.append(
            {
                "width": int(m),
                "seed": int(seed),
                "rows": int(len(rows)),
                "subsampled": bool(len(rows) < n),
                "gap_norm": gap,
                "lambda_min_H0": float(lam_H0[0]),
                "lambda_max_H0": float(lam_H0[-1]),
                "lambda0_rows": lam0,
                "lambda_max_rows": float(lam_inf[-1]),
                "gap_over_lambda0": gap / lam0,
                "gap_over_quarter_lambda0": gap / (lam0 / 4),
                "min_over_three_quarter_lambda0": float(lam_H0[0]) / (3 * lam0 / 4),
                "lemma2_gap_holds": bool(gap <= lam0 / 4),
                "lemma2_min_holds": bool(lam_H0[0] >= 3 * lam0 / 4),
            }
        )
    df = pd.DataFrame.from_records(records)
    return df.astype({"width": "int64", "seed": "int64", "rows": "int64"})


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Limit torch and the BLAS/OpenMP pools (via threadpoolctl when installed) to ``threads``; no-op for None."""
    if threads is None:
        yield
        return
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the scientific stack
        yield
        return
    with threadpool_limits(limits=threads):
        yield
