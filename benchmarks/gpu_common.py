"""What the parts of benchmarks/gpu_check.py share: their sizes (GPU and dry run), the context a part runs in, and
the timing, comparison and process helpers. Standard library only at import time (the parent process imports it);
the parts import the scientific stack themselves.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parent process stays stdlib-only; the parts import the scientific stack themselves
    import numpy as np
    import pandas as pd


ROOT = Path(__file__).resolve().parents[1]


SRC = ROOT / "src"


TAIL_LINES = 25


DRY_RUN_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of every part."""

    small_n: int  # accuracy and pack_identity
    small_d: int
    small_m: int
    small_steps: int
    identity_steps: int
    identity_gram_every: int
    big_n: int  # step_roofline and pack_speedup
    big_d: int
    widths: tuple[int, ...]
    step_steps: int  # S in (T(S + 1) − T(1)) / S
    step_reps: int
    gemm_reps: int
    pack_m: int
    pack_ks: tuple[int, ...]
    pack_steps: int
    row_sizes: tuple[tuple[int, int], ...]  # (n, m) of the rowspace part's step timings (d = big_d)
    ntk_n: int
    ntk_d: int
    job_n: int
    job_d: int
    job_m: int
    job_reps: int


GPU_SIZES = Sizes(
    small_n=500, small_d=784, small_m=256, small_steps=100, identity_steps=50, identity_gram_every=10,
    big_n=12665, big_d=784, widths=(1000, 8000), step_steps=100, step_reps=3, gemm_reps=20,
    pack_m=1000, pack_ks=(1, 4, 8), pack_steps=50,
    row_sizes=((64, 8192), (64, 65536), (1000, 8000)),
    ntk_n=12665, ntk_d=784,
    job_n=1000, job_d=784, job_m=256, job_reps=2,
)  # fmt: skip


DRY_SIZES = Sizes(
    small_n=200, small_d=64, small_m=64, small_steps=10, identity_steps=10, identity_gram_every=5,
    big_n=200, big_d=64, widths=(32, 64), step_steps=100, step_reps=3, gemm_reps=10,
    pack_m=64, pack_ks=(1, 4, 8), pack_steps=50,
    row_sizes=((32, 64), (32, 256)),
    ntk_n=300, ntk_d=784,
    job_n=100, job_d=64, job_m=32, job_reps=1,
)  # fmt: skip


@dataclass(frozen=True)
class Ctx:
    """What a part gets: the torch device, the mode and its sizes, a scratch directory and its own time limit."""

    device: str
    dry_run: bool
    sizes: Sizes
    scratch: Path
    limit_s: float

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def unit_rows(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d) with unit-norm Gaussian rows and labels y in {−1, +1}, float64, seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, np.where(rng.random(n) < 0.5, 1.0, -1.0)


def sync(device: str) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of fn, synchronized with the device before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def note(msg: str) -> None:
    """A progress line on stderr: what a part had done when it failed or was stopped shows in its "error"."""
    print(msg, file=sys.stderr, flush=True)


def run_specs(k: int, eta: float) -> list[Any]:
    """k runs alternating NAG and HB with different η (fractions of ``eta``) and β."""
    from momentum_ntk import engine

    etas, betas = (1.0, 0.5, 0.75, 0.25), (0.99, 0.97, 0.9, 0.95)
    return [engine.RunSpec(("nag", "hb")[i % 2], eta * etas[(i // 2) % 4], betas[i % 4]) for i in range(k)]


def pack_kwargs(k: int) -> dict[str, int]:
    """{"pack_size": k} when train_many takes that keyword (all k runs batched), else {} (it batches all anyway)."""
    import inspect

    from momentum_ntk import loop

    return {"pack_size": k} if "pack_size" in inspect.signature(loop.train_many).parameters else {}


def engine_kwargs(engine: str | None) -> dict[str, str]:
    """{"engine": engine} when one is asked for and train_many has the keyword (since the row-space engine), else {}.
    The parts before ``rowspace`` ask for the direct engine: auto would pick the row-space one at the accuracy and
    pack_identity sizes (n = 500 < d = 784)."""
    import inspect

    from momentum_ntk import loop

    has = "engine" in inspect.signature(loop.train_many).parameters
    return {"engine": engine} if engine is not None and has else {}


def train_step_time(
    X: np.ndarray, y: np.ndarray, W0: Any, a: np.ndarray, specs: list[Any], ctx: Ctx, steps: int, reps: int,
    engine: str | None = None,
) -> tuple[float, bool]:  # fmt: skip
    """Seconds per step of train_many on this pack: (T(steps + 1) − T(1)) / steps, each T the fastest of ``reps``
    interleaved calls after one warm-up; float32, gram_every=0, H(t) tracked on 256 rows. Also whether a run diverged.
    ``engine``: train_many's engine (None: its default). W0 may be model.Preactivations (row-space engine).
    """
    import numpy as np

    from momentum_ntk import loop

    rows = np.arange(min(len(y), 256))

    def clocked(s: int) -> tuple[float, list[pd.DataFrame]]:
        sync(ctx.device)
        t0 = time.perf_counter()
        frames = loop.train_many(X, y, W0, a, specs, steps=s, gram_every=0, gram_rows=rows, dtype="float32",
                                  device=ctx.device, **pack_kwargs(len(specs)), **engine_kwargs(engine))  # fmt: skip
        sync(ctx.device)
        return time.perf_counter() - t0, frames

    clocked(1)  # warm-up
    lo = hi = math.inf
    for _ in range(reps):
        lo = min(lo, clocked(1)[0])
        t, frames = clocked(steps + 1)
        hi = min(hi, t)
    return (hi - lo) / steps, any(df.attrs["diverged"] for df in frames)


def row_gemm_time(n: int, m: int, device: str, reps: int) -> float:
    """Median seconds of the row-space step's one bare float32 GEMM K·C ((n, n)·(n, m)), after 3 warm-up calls."""
    import torch

    K = torch.randn(n, n, device=device)
    C = torch.randn(n, m, device=device)
    Z = torch.empty(n, m, device=device)
    for _ in range(3):
        torch.mm(K, C, out=Z)
    return statistics.median(timed(lambda: torch.mm(K, C, out=Z), device) for _ in range(reps))


def gemm_time(X: np.ndarray, W0: np.ndarray, device: str, reps: int) -> float:
    """Median seconds of the step's two bare float32 GEMMs, Z = X W then G = Xᵀ Z, after 3 warm-up calls."""
    import torch

    n, d, m = X.shape[0], X.shape[1], W0.shape[1]
    Xt = torch.tensor(X, dtype=torch.float32, device=device)
    Wt = torch.tensor(W0, dtype=torch.float32, device=device)
    Z = torch.empty(n, m, device=device)
    G = torch.empty(d, m, device=device)

    def two() -> None:
        torch.mm(Xt, Wt, out=Z)
        torch.mm(Xt.T, Z, out=G)

    for _ in range(3):
        two()
    return statistics.median(timed(two, device) for _ in range(reps))


def max_rel_diff(ref: np.ndarray, got: np.ndarray, scale: np.ndarray | float) -> float:
    """max |got − ref| / scale over the entries finite in both (the common prefix when lengths differ)."""
    import numpy as np

    k = min(len(ref), len(got))
    ref, got, scale = np.asarray(ref[:k], float), np.asarray(got[:k], float), np.asarray(scale, float)
    scale = scale[:k] if scale.ndim else np.full(k, float(scale))
    ok = np.isfinite(ref) & np.isfinite(got)
    return float(np.max(np.abs(got[ok] - ref[ok]) / np.abs(scale[ok]))) if ok.any() else math.nan


def compare_runs(ref: list[pd.DataFrame], got: list[pd.DataFrame]) -> dict[str, Any]:
    """Largest relative differences over runs: loss (per step), max_dist (to the run's largest), λmin(H(t))."""
    out = {"loss_rel_diff": 0.0, "max_dist_rel_diff": 0.0, "lambda_min_rel_diff": 0.0, "steps_done_equal": True}
    for r, g in zip(ref, got):
        md = r["max_dist"].to_numpy()
        out["loss_rel_diff"] = max(out["loss_rel_diff"], max_rel_diff(r["loss"].to_numpy(), g["loss"].to_numpy(),
                                                                       r["loss"].to_numpy()))  # fmt: skip
        out["max_dist_rel_diff"] = max(out["max_dist_rel_diff"], max_rel_diff(md, g["max_dist"].to_numpy(), md.max()))
        lam = r["lambda_min_H"].to_numpy()
        out["lambda_min_rel_diff"] = max(out["lambda_min_rel_diff"],
                                         max_rel_diff(lam, g["lambda_min_H"].to_numpy(), lam))  # fmt: skip
        out["steps_done_equal"] &= r.attrs["steps_done"] == g.attrs["steps_done"]
    return out


def frames_identical(p: pd.DataFrame, q: pd.DataFrame) -> bool:
    """Same columns, same length and every column bit-identical (NaN equal to NaN)."""
    import numpy as np

    return (
        list(p.columns) == list(q.columns)
        and len(p) == len(q)
        and all(np.array_equal(p[c].to_numpy(), q[c].to_numpy(), equal_nan=True) for c in p.columns)
    )


def child_env(**extra: str) -> dict[str, str]:
    """This environment with src/ first on PYTHONPATH, plus ``extra``."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def run_bounded(
    cmd: Sequence[str], timeout_s: float, log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int | None, float]:
    """Run ``cmd`` in a session of its own, stdout and stderr into ``log``; after ``timeout_s`` (and in any case once
    it has exited) SIGKILL it and everything it started (:func:`kill_tree`). (exit status or None, seconds)."""
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            rc: int | None = proc.wait(timeout=max(timeout_s, 0.01))
        except subprocess.TimeoutExpired:
            rc = None
        kill_tree(proc.pid)
        try:
            proc.wait(timeout=10)  # a process stuck in the kernel (a GPU driver call) dies only when it leaves it
        except subprocess.TimeoutExpired:
            pass
    return rc, time.perf_counter() - t0


def process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, session id) of every process, from /proc/<pid>/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def kill_tree(root: int) -> None:
    """SIGKILL ``root``, its descendants (also those in sessions of their own) and every member of the sessions
    they lead (also orphans whose parent has exited): nothing a part started outlives it."""
    table = process_table()
    doomed, grown = {root}, True
    while grown:
        new = {pid for pid, (ppid, sid) in table.items() if pid not in doomed and (ppid in doomed or sid in doomed)}
        doomed |= new
        grown = bool(new)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' when it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def timed_command(cmd: Sequence[str], ctx: Ctx, name: str, env: dict[str, str]) -> float:
    """Wall seconds of a command that must succeed within the part's limit (else RuntimeError with its output)."""
    log = ctx.scratch / f"{name}.log"
    rc, wall = run_bounded(cmd, ctx.limit_s, log, cwd=ROOT, env=env)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}:\n{tail(log)}")
    note(f"job_fixed_cost: {name} {wall:.2f} s")
    return wall


def free_device_memory(ctx: Ctx) -> None:
    """Return cached CUDA blocks between sizes (no-op on the CPU)."""
    import gc

    import torch

    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


def rss_mb() -> float:
    """Current resident memory of this process in MiB (VmRSS)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def accuracy_problem(s: Sizes) -> tuple[Any, Any, Any, Any, list[Any], int]:
    """The accuracy measurements' problem (the accuracy and rowspace parts share it): X, y (n = small_n unit rows),
    W(0), a (width small_m, seed 0), NAG and HB at η = 1/(10 λm) and β = 0.9, and the Gram-tracking interval."""
    import numpy as np

    from momentum_ntk import engine, gram, model

    X, y = unit_rows(s.small_n, s.small_d)
    W0, a = model.init_params(s.small_d, s.small_m, 0)
    consts = gram.lemma_constants(np.linalg.eigvalsh(gram.ntk_gram(X)))
    eta = gram.learning_rates(consts["lambda_m"], [10])["10"]
    specs = [engine.RunSpec("nag", eta, 0.9), engine.RunSpec("hb", eta, 0.9)]
    return X, y, W0, a, specs, max(1, s.small_steps // 10)
