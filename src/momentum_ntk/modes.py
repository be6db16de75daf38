"""The theory modes of one initialisation: the initial residual Δ_0 = f(W(0)) − y of a (dataset, width, seed) expanded
on the eigenvectors of H∞ and of the finite-width H(0), and the modes file that holds them.

The one path from a job's arrays to the modes file is :func:`modes_of_job`; the theory stage's ``modes`` command and a
packed train job (which holds X, W(0) and a already) both call it::

    from momentum_ntk.modes import modes_of_job
    modes_of_job(X, y, W0, a, spectrum=..., eigvecs=..., dataset=..., seed=..., out=..., device=...)

The file: Parquet k int64, lambda_inf, coef_inf, lambda_h0, coef_h0 float64 (row k: k-th smallest eigenvalue of H∞
resp. H(0) and Δ_0's coefficient on its eigenvector), with a JSON record under the schema metadata key
``momentum_ntk.theory`` (n, d, width, seed, dataset, loss0, pseudo_loss0 = ℓ̂(0), lambda_min_h0, lambda_max_h0,
lambda_min_inf); read it back with :func:`read_modes`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import io
from momentum_ntk.errors import UserError

MODES_META_KEY = b"momentum_ntk.theory"
MODES_COLUMNS = ("k", "lambda_inf", "coef_inf", "lambda_h0", "coef_h0")
MODES_META_KEYS = ("loss0", "pseudo_loss0", "lambda_min_h0")


# ----------------------------------------------------------------------------------------------------------------------
# Δ_0 on the eigenvectors of H∞ and H(0)
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
    from momentum_ntk import model

    h0 = model.gram_finite(torch.as_tensor(X, dtype=torch.float64, device=device),
                           torch.as_tensor(W0, dtype=torch.float64, device=device))  # fmt: skip
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


# ----------------------------------------------------------------------------------------------------------------------
# The modes file
# ----------------------------------------------------------------------------------------------------------------------


def write_modes(path: str | Path, table: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write the mode table with ``meta`` as JSON under the Parquet schema metadata key ``momentum_ntk.theory``."""
    import pyarrow as pa

    tab = pa.Table.from_pandas(table, preserve_index=False)
    tab = tab.replace_schema_metadata({MODES_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    io.write_parquet(path, tab)


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


def load_ntk(spectrum: str | Path, eigvecs: str | Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ntk stage's H∞ eigenvalues (n,), ascending, and eigenvectors (n, n) as columns (a memory map), checked
    against the data's n (UserError naming the fix otherwise)."""
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
    lam, V = load_ntk(str(spectrum), str(eigvecs), X.shape[0])
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
