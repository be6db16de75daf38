"""The prepared GPU check: everything this project's GPU figures rest on, measured in one bounded run, one JSON file.

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check.json        # one GPU; at most --budget-s (480 s)
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --out gc.json     # CPU, small sizes (the test suite's)
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --with-workflow   # ... and the tiny preset (~1 min)
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --device cuda     # small sizes on the GPU: a smoke test
    PYTHONPATH=src python benchmarks/gpu_check.py --only ntk_eigh tiny_preset --out rerun.json

Parts, at the GPU sizes (the dry run uses n ≤ 300, d = 64 or 784, m ≤ 64 and 10-100 steps):

  accuracy        the same NAG and HB runs (loop.train_many; n = 500, d = 784, m = 256, 100 steps, η = 1/(10 λm))
                  in float32 and float64 on the device against float64 on the CPU: the largest relative difference
                  of the loss, of max_dist (relative to its largest value) and of the tracked λmin(H(t)).
  step_roofline   n = 12,665, d = 784, m ∈ {1000, 8000}, float32, TF32 off: the two bare GEMMs of a step
                  (Z = X W, G = Xᵀ Z; median of reps after warm-up) against one step of train_many, measured as
                  (T(steps = S + 1) − T(steps = 1)) / S, fastest of interleaved reps. steps = 1 rather than 0 because
                  H(t) is tracked at the first and the last step whatever gram_every: both timings then hold the
                  same set-up and the same two trackings (on 256 rows), and the difference is S plain steps.
                  Reports ms per step, TFLOP/s (4·n·d·m FLOP per step) and the fraction roofline / step.
  pack_speedup    m = 1000: packs of k = 1, 4, 8 runs (HB and NAG, different η and β) batched in one train_many
                  call (pack_size = k when train_many has it); per-run time and speed-up k·T(1) / T(k).
  pack_identity   4 runs packed and each alone (n = 500, d = 784, m = 256, 50 steps, float32, H(t) every 10 steps):
                  whether every DataFrame is bit-identical (all columns, NaN equal to NaN) and its attrs equal.
  rowspace        the row-space engine (loop.train_many(engine="rowspace")): NAG and HB in float32 and float64 on
                  the device against the direct engine's float64 run on the CPU (the accuracy part's sizes and
                  measures); 4 packed runs bit-identical to each alone; and at (n, m) = (64, 8192), (64, 65536),
                  (1000, 8000) one step of each engine ((T(S + 1) − T(1)) / S as in step_roofline, W(0) handed over
                  as X W(0) so the row-space calls do not recompute it), the bare GEMM K·C (n×n·n×m) of its roofline,
                  the speed-up over the direct step, and each engine's peak GPU memory.
  ntk_eigh        H∞ at n = 12,665 (gram.ntk_gram, float64, random unit rows of dimension 784) and its full
                  eigendecomposition by gram.ntk_spectrum(H, vectors=True, device=...): both times, the peak GPU
                  memory of the eigh (max_memory_allocated after a reset), the process's peak RSS, and checks (trace
                  against n/2, residual ‖H v − λ v‖ of the extreme pairs).
  job_fixed_cost  `python -m momentum_ntk.train ... --steps 0` end to end on a small npz (several times), and
                  `python -c "import torch"` and a CUDA context creation alone: the cost every train job pays once.
  tiny_preset     the tracked files copied to a scratch directory, then `snakemake --cores 4 --configfile
                  workflow/presets/tiny.yaml override.yaml` (and `--resources gpu=1` on a GPU) with override.yaml =
                  {train: {device: <device>}} (Snakemake merges nested keys across config files, so the rest of
                  tiny.yaml's train section stays): wall time, run files produced, and the devices and step counts
                  the runs' sidecars report (they show the merge). Dry run: skipped unless --with-workflow.

Every part runs in a child process of its own session, with a time limit: the time left of --budget-s less a small
margin and the shares (PARTS) of the parts still to come, i.e. its own share plus what earlier parts left unused. A
part that fails or runs out of time is killed with everything it started and recorded as {"status": "error" |
"timeout", "error": <last output lines>}; the check goes on with the next part. One line per part is printed as it
finishes. The JSON:

    {"device", "torch", "cuda", "gpu", "dry_run", "budget_s", "wall_s", "environment": {...},
     "parts": {name: {"status": "ok", "wall_s", "limit_s", "summary", <numbers>}}}

Exit status 0 once the JSON is written, also when parts failed (the JSON says which); 1 in a dry run where any part
failed, so that the test suite catches breakage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parent process stays stdlib-only; the parts import the scientific stack themselves
    import numpy as np
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TAIL_LINES = 25
# The dry run's sizes are too small to gain from threads, and on a loaded machine a thread pool waiting for a
# descheduled thread turns every microsecond op into milliseconds: one thread per process (and its children).
DRY_RUN_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# --------------------------------------------------------------------------------------------------------------------
# Sizes and the context a part runs in
# --------------------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------------------
# Helpers of the parts (run in the child processes)
# --------------------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------------------
# The parts: each returns a JSON-able dict with a one-line "summary"
# --------------------------------------------------------------------------------------------------------------------
def part_env(ctx: Ctx) -> dict[str, Any]:
    """The resolved device, torch and CUDA versions and the GPU's name (CUDA initialised here, in a child)."""
    import torch

    from momentum_ntk import lease

    device = lease.resolve_device(ctx.device)
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    info = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": gpu,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if gpu else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    return info | {"summary": f"{device} ({gpu or 'no GPU'}), torch {torch.__version__}, CUDA {torch.version.cuda}"}


def part_accuracy(ctx: Ctx) -> dict[str, Any]:
    """NAG and HB in float32 and float64 on the device against float64 on the CPU (the reference)."""
    import numpy as np

    from momentum_ntk import engine, gram, loop, model

    s = ctx.sizes
    X, y = unit_rows(s.small_n, s.small_d)
    W0, a = model.init_params(s.small_d, s.small_m, 0)
    consts = gram.lemma_constants(np.linalg.eigvalsh(gram.ntk_gram(X)))
    eta = gram.learning_rates(consts["lambda_m"], [10])["10"]
    specs = [engine.RunSpec("nag", eta, 0.9), engine.RunSpec("hb", eta, 0.9)]
    gram_every = max(1, s.small_steps // 10)

    def run(device: str, dtype: str) -> list[pd.DataFrame]:
        return loop.train_many(X, y, W0, a, specs, steps=s.small_steps, gram_every=gram_every, dtype=dtype,
                                device=device, **engine_kwargs("direct"))  # fmt: skip

    ref = run("cpu", "float64")
    variants = {}
    for dtype in ("float32", "float64"):
        t0 = time.perf_counter()
        got = run(ctx.device, dtype)
        variants[dtype] = {"device": ctx.device, "wall_s": time.perf_counter() - t0} | compare_runs(ref, got)
        note(f"accuracy {ctx.device} {dtype}: {variants[dtype]}")
    v32, v64 = variants["float32"]["loss_rel_diff"], variants["float64"]["loss_rel_diff"]
    return {
        "n": s.small_n, "d": s.small_d, "m": s.small_m, "steps": s.small_steps, "gram_every": gram_every,
        "eta": eta, "beta": 0.9, "reference": "cpu float64",
        "final_loss": {sp.method: float(df["loss"].iloc[-1]) for sp, df in zip(specs, ref)},
        "initial_loss": float(ref[0]["loss"].iloc[0]),
        "variants": variants,
        "summary": f"loss vs CPU float64: {ctx.device} float32 {v32:.1e}, float64 {v64:.1e} (max relative)",
    }  # fmt: skip


def part_step_roofline(ctx: Ctx) -> dict[str, Any]:
    """Per width: the two bare GEMMs against one train_many step, both in ms and TFLOP/s, and their ratio."""
    from momentum_ntk import devices, engine, model

    s = ctx.sizes
    devices.strict_float32()
    X, y = unit_rows(s.big_n, s.big_d)
    rows = []
    for m in s.widths:
        W0, a = model.init_params(s.big_d, m, 0)
        t_gemm = gemm_time(X, W0, ctx.device, s.gemm_reps)
        note(f"step_roofline m={m}: two GEMMs {1e3 * t_gemm:.3f} ms")
        specs = [engine.RunSpec("nag", 0.1 / s.big_n, 0.99)]
        t_step, diverged = train_step_time(X, y, W0, a, specs, ctx, s.step_steps, s.step_reps, "direct")
        flop = 4 * s.big_n * s.big_d * m
        rows.append({
            "m": m,
            "roofline_ms": 1e3 * t_gemm,
            "roofline_tflops": flop / t_gemm / 1e12,
            "step_ms": 1e3 * t_step,
            "step_tflops": flop / t_step / 1e12 if t_step > 0 else math.nan,
            "fraction": t_gemm / t_step if t_step > 0 else math.nan,
            "diverged": diverged,
        })  # fmt: skip
        note(f"step_roofline: {rows[-1]}")
        free_device_memory(ctx)
    line = "; ".join(f"m={r['m']}: step {r['step_ms']:.2f} ms, {r['step_tflops']:.2f} TFLOP/s, "
                     f"{r['fraction']:.2f} of roofline" for r in rows)  # fmt: skip
    return {"n": s.big_n, "d": s.big_d, "steps": s.step_steps, "reps": s.step_reps, "widths": rows, "summary": line}


def free_device_memory(ctx: Ctx) -> None:
    """Return cached CUDA blocks between sizes (no-op on the CPU)."""
    import gc

    import torch

    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


def part_pack_speedup(ctx: Ctx) -> dict[str, Any]:
    """Per pack size k: one step of k batched runs, per run and as a speed-up over k single runs."""
    from momentum_ntk import model

    s = ctx.sizes
    X, y = unit_rows(s.big_n, s.big_d)
    W0, a = model.init_params(s.big_d, s.pack_m, 0)
    rows, t1 = [], math.nan
    for k in s.pack_ks:
        t_k, diverged = train_step_time(X, y, W0, a, run_specs(k, 0.1 / s.big_n), ctx, s.pack_steps, s.step_reps,
                                        "direct")
        t1 = t_k if k == 1 else t1
        rows.append({"k": k, "pack_step_ms": 1e3 * t_k, "per_run_ms": 1e3 * t_k / k,
                     "speedup": k * t1 / t_k if t_k > 0 else math.nan, "diverged": diverged})  # fmt: skip
        note(f"pack_speedup: {rows[-1]}")
        free_device_memory(ctx)
    line = "; ".join(f"k={r['k']}: {r['per_run_ms']:.2f} ms/run-step, {r['speedup']:.2f}x" for r in rows)
    return {"n": s.big_n, "d": s.big_d, "m": s.pack_m, "steps": s.pack_steps, "pack_size_keyword": bool(pack_kwargs(1)),
            "packs": rows, "summary": line}  # fmt: skip


def part_pack_identity(ctx: Ctx) -> dict[str, Any]:
    """Whether 4 runs trained in one pack give exactly the frames of the same runs trained one at a time."""
    from momentum_ntk import loop, model

    s = ctx.sizes
    X, y = unit_rows(s.small_n, s.small_d, seed=1)
    W0, a = model.init_params(s.small_d, s.small_m, 1)
    specs = run_specs(4, 0.1 / s.small_n)
    kw = dict(steps=s.identity_steps, gram_every=s.identity_gram_every, dtype="float32", device=ctx.device,
              **engine_kwargs("direct"))
    packed = loop.train_many(X, y, W0, a, specs, **kw, **pack_kwargs(len(specs)))
    alone = [loop.train_many(X, y, W0, a, [sp], **kw)[0] for sp in specs]
    runs = [
        {"method": sp.method, "eta": sp.eta, "beta": sp.beta, "identical": frames_identical(p, q),
         "attrs_equal": p.attrs == q.attrs, "loss_max_abs_diff": float((p["loss"] - q["loss"]).abs().max())}
        for sp, p, q in zip(specs, packed, alone)
    ]  # fmt: skip
    identical = all(r["identical"] and r["attrs_equal"] for r in runs)
    return {"n": s.small_n, "d": s.small_d, "m": s.small_m, "steps": s.identity_steps, "device": ctx.device,
            "identical": identical, "runs": runs,
            "summary": f"4 packed runs bit-identical to each alone on {ctx.device}: {identical}"}  # fmt: skip


def part_rowspace(ctx: Ctx) -> dict[str, Any]:
    """The row-space engine on the device: accuracy against the CPU float64 direct run, packed vs alone, and its step
    against the direct step and its own GEMM roofline, with each engine's peak GPU memory."""
    import numpy as np
    import torch

    from momentum_ntk import devices, engine, gram, loop, model

    s = ctx.sizes
    devices.strict_float32()
    # accuracy, as the accuracy part measures it
    X, y = unit_rows(s.small_n, s.small_d)
    W0, a = model.init_params(s.small_d, s.small_m, 0)
    consts = gram.lemma_constants(np.linalg.eigvalsh(gram.ntk_gram(X)))
    eta = gram.learning_rates(consts["lambda_m"], [10])["10"]
    specs = [engine.RunSpec("nag", eta, 0.9), engine.RunSpec("hb", eta, 0.9)]
    gram_every = max(1, s.small_steps // 10)
    kw = dict(steps=s.small_steps, gram_every=gram_every)
    ref = loop.train_many(X, y, W0, a, specs, **kw, dtype="float64", device="cpu", engine="direct")
    accuracy = {}
    for dtype in ("float32", "float64"):
        got = loop.train_many(X, y, W0, a, specs, **kw, dtype=dtype, device=ctx.device, engine="rowspace")
        accuracy[dtype] = compare_runs(ref, got) | {"engine": got[0].attrs.get("engine")}
        note(f"rowspace accuracy {ctx.device} {dtype}: {accuracy[dtype]}")
    # packed vs alone
    Xi, yi = unit_rows(s.small_n, s.small_d, seed=1)
    Wi, ai = model.init_params(s.small_d, s.small_m, 1)
    ispecs = run_specs(4, 0.1 / s.small_n)
    ikw = dict(steps=s.identity_steps, gram_every=s.identity_gram_every, dtype="float32", device=ctx.device,
               engine="rowspace")  # fmt: skip
    packed = loop.train_many(Xi, yi, Wi, ai, ispecs, **ikw, pack_size=len(ispecs))
    alone = [loop.train_many(Xi, yi, Wi, ai, [sp], **ikw)[0] for sp in ispecs]
    identical = all(frames_identical(p, q) and p.attrs == q.attrs for p, q in zip(packed, alone))
    note(f"rowspace pack identity: {identical}")
    # step times
    steps = []
    for n, m in s.row_sizes:
        Xs, ys = unit_rows(n, s.big_d)
        W0s, a_s = model.init_params(s.big_d, m, 0)
        pre = model.preactivations(Xs, W0s)
        nag = [engine.RunSpec("nag", 0.1 / n, 0.99)]
        row = {"n": n, "d": s.big_d, "m": m}
        for engine, w in (("direct", W0s), ("rowspace", pre)):
            if ctx.cuda:
                sync(ctx.device)
                torch.cuda.reset_peak_memory_stats(ctx.device)
            t, diverged = train_step_time(Xs, ys, w, a_s, nag, ctx, s.step_steps, s.step_reps, engine)
            row[f"{engine}_ms"] = 1e3 * t
            row[f"{engine}_diverged"] = diverged
            row[f"{engine}_peak_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
            free_device_memory(ctx)
        t_gemm = row_gemm_time(n, m, ctx.device, s.gemm_reps)
        row |= {
            "row_gemm_ms": 1e3 * t_gemm,
            "row_gemm_tflops": 2 * n * n * m / t_gemm / 1e12,
            "row_fraction": t_gemm / (row["rowspace_ms"] / 1e3) if row["rowspace_ms"] > 0 else math.nan,
            "speedup": row["direct_ms"] / row["rowspace_ms"] if row["rowspace_ms"] > 0 else math.nan,
        }
        steps.append(row)
        note(f"rowspace step: {row}")
        free_device_memory(ctx)
    line = (f"float32 loss vs CPU float64 {accuracy['float32']['loss_rel_diff']:.1e}, float64 "
            f"{accuracy['float64']['loss_rel_diff']:.1e}; packed identical {identical}; "
            + "; ".join(f"n={r['n']} m={r['m']}: {r['speedup']:.1f}x direct, {r['row_fraction']:.2f} of its roofline"
                        for r in steps))  # fmt: skip
    return {"accuracy": accuracy, "reference": "cpu float64 direct", "n": s.small_n, "d": s.small_d, "m": s.small_m,
            "pack_identical": identical, "steps": steps, "summary": line}  # fmt: skip


def rss_mb() -> float:
    """Current resident memory of this process in MiB (VmRSS)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def part_ntk_eigh(ctx: Ctx) -> dict[str, Any]:
    """H∞ (float64) and its eigendecomposition on the device: times, peak GPU memory, peak RSS, sanity checks."""
    import numpy as np
    import torch

    from momentum_ntk import gram, ntk

    s = ctx.sizes
    X, _ = unit_rows(s.ntk_n, s.ntk_d, seed=2)
    rss_before = rss_mb()
    t0 = time.perf_counter()
    H = gram.ntk_gram(X)
    t_gram = time.perf_counter() - t0
    note(f"ntk_eigh: H∞ ({s.ntk_n}, {s.ntk_n}) built in {t_gram:.2f} s, peak RSS {ntk.peak_rss_mb():.0f} MiB")
    gram.ntk_spectrum(gram.ntk_gram(X[:64]), vectors=True, device=ctx.device)  # load the solver (cuSOLVER) first
    if ctx.cuda:
        sync(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
    gpu_base = torch.cuda.memory_allocated(ctx.device) if ctx.cuda else 0
    t0 = time.perf_counter()
    w, V = gram.ntk_spectrum(H, vectors=True, device=ctx.device)
    t_eigh = time.perf_counter() - t0
    note(f"ntk_eigh: eigh on {ctx.device} in {t_eigh:.2f} s")
    gpu_peak = (torch.cuda.max_memory_allocated(ctx.device) - gpu_base) / 2**30 if ctx.cuda else None
    residual = max(float(np.linalg.norm(H @ V[:, i] - w[i] * V[:, i])) for i in (0, -1))
    n = s.ntk_n
    gpu = "-" if gpu_peak is None else f"{gpu_peak:.2f} GiB"
    line = (f"n={n}: H∞ {t_gram:.3g} s, eigh {t_eigh:.3g} s on {ctx.device}, peak GPU {gpu}, "
            f"peak RSS {ntk.peak_rss_mb() / 1024:.2f} GiB")  # fmt: skip
    return {
        "n": n, "d": s.ntk_d, "device": ctx.device,
        "gram_s": t_gram, "eigh_s": t_eigh,
        "gpu_peak_gib": gpu_peak, "matrix_gib": n * n * 8 / 2**30,
        "rss_before_mb": rss_before, "peak_rss_mb": ntk.peak_rss_mb(),
        "lambda0": float(w[0]), "lambda_max": float(w[-1]),
        "trace_rel_err": abs(float(w.sum()) - n / 2) / (n / 2),
        "eigpair_residual": residual,
        "summary": line,
    }  # fmt: skip


def train_job_command(ctx: Ctx, data: Path, summary: Path) -> list[str]:
    """`python -m momentum_ntk.train` for one NAG run of 0 steps on ``data``, with the flags this CLI has."""
    from momentum_ntk import train

    flags = {opt for action in train.build_parser()._actions for opt in action.option_strings}
    s = ctx.sizes
    cmd = [sys.executable, "-m", "momentum_ntk.train", "--data", str(data), "--ntk-summary", str(summary),
           "--dataset", "gpu_check", "--method", "nag", "--width", str(s.job_m), "--eta-divisor", "10",
           "--beta", "0.9", "--steps", "0", "--device", ctx.device,
           "--out", str(ctx.scratch / "run.parquet"), "--meta", str(ctx.scratch / "run.json")]  # fmt: skip
    if "--no-progress" in flags:
        cmd.append("--no-progress")
    if "--gpus-held" in flags and ctx.cuda:
        cmd += ["--gpus-held", "1"]
    return cmd


def part_job_fixed_cost(ctx: Ctx) -> dict[str, Any]:
    """End-to-end seconds of a 0-step train job, of importing torch and of creating a CUDA context."""
    import numpy as np

    s = ctx.sizes
    X, y = unit_rows(s.job_n, s.job_d, seed=3)
    data, summary = ctx.scratch / "data.npz", ctx.scratch / "summary.json"
    np.savez(data, X=X, y=y)
    summary.write_text(json.dumps({"eta": {"10": 1e-3}}))
    env = child_env(MOMENTUM_NTK_LOCK_DIR=str(ctx.scratch / "locks"))
    job = [timed_command(train_job_command(ctx, data, summary), ctx, "train", env) for _ in range(s.job_reps)]
    imp = [timed_command([sys.executable, "-c", "import torch"], ctx, "import", env) for _ in range(s.job_reps)]
    ctx_cmd = [sys.executable, "-c", f"import torch; torch.zeros(1, device={ctx.device!r}); "
               f"torch.cuda.synchronize()"]  # fmt: skip
    cuda = [timed_command(ctx_cmd, ctx, "cuda", env) for _ in range(s.job_reps)] if ctx.cuda else None
    meta = json.loads((ctx.scratch / "run.json").read_text())
    med = statistics.median
    line = (f"train --steps 0: {med(job):.2f} s; import torch {med(imp):.2f} s; "
            f"CUDA context {'-' if cuda is None else f'{med(cuda) - med(imp):.2f} s'} (medians)")  # fmt: skip
    return {
        "n": s.job_n, "d": s.job_d, "m": s.job_m, "device": ctx.device,
        "train_job_s": med(job), "train_job_all_s": job,
        "import_torch_s": med(imp), "import_torch_all_s": imp,
        "import_torch_cuda_context_s": None if cuda is None else med(cuda), "cuda_context_all_s": cuda,
        "cuda_context_s": None if cuda is None else med(cuda) - med(imp),
        "train_loop_wall_s": meta.get("wall_s"), "train_cuda_init_s": meta.get("cuda_init_s"),
        "summary": line,
    }  # fmt: skip


def copy_tracked_files(dest: Path) -> int:
    """Copy the repository's tracked files (as they are in the working tree) under ``dest``; returns their number."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    count = 0
    for name in filter(None, out.split(b"\0")):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
            count += 1
    return count


def expected_runs(preset: dict[str, Any]) -> int:
    """Number of training runs of a preset: datasets × methods × widths × η divisors × β × seeds."""
    g = preset["grid"]
    return math.prod(len(x) for x in (preset["datasets"], g["methods"], g["widths"], g["eta_divisors"], g["betas"],
                                      g["seeds"]))  # fmt: skip


def part_tiny_preset(ctx: Ctx) -> dict[str, Any]:
    """The tiny preset end to end with train.device overridden: wall, run files, what the run sidecars report."""
    import yaml

    repo = ctx.scratch / "repo"
    files = copy_tracked_files(repo)
    (repo / "override.yaml").write_text(yaml.safe_dump({"train": {"device": ctx.device}}))
    preset = yaml.safe_load((repo / "workflow/presets/tiny.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "--cores", "4", "--configfile", "workflow/presets/tiny.yaml",
           "override.yaml"] + (["--resources", "gpu=1"] if ctx.cuda else [])  # fmt: skip
    log = ctx.scratch / "snakemake.log"
    env = child_env(MOMENTUM_NTK_LOCK_DIR=str(ctx.scratch / "locks"))
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), env["PYTHONPATH"]])
    rc, wall = run_bounded(cmd, ctx.limit_s - 10, log, cwd=repo, env=env)
    runs = sorted((repo / "results/runs").rglob("*.parquet"))
    metas = [json.loads(p.with_suffix(".json").read_text()) for p in runs if p.with_suffix(".json").is_file()]
    devices = sorted({str(m.get("device")) for m in metas})
    steps = sorted({int(m.get("steps", -1)) for m in metas})
    merged = bool(metas) and steps == [preset["train"]["steps"]] and all(d.startswith(ctx.device) for d in devices)
    res = {
        "status": "ok" if rc == 0 else ("timeout" if rc is None else "error"),
        "command": " ".join(["snakemake", *cmd[3:]]), "files_copied": files, "snakemake_wall_s": wall,
        "snakemake_rc": rc,
        "run_files": len(runs), "expected_run_files": expected_runs(preset),
        "run_devices": devices, "run_steps": steps, "config_merged": merged,
        "summary": f"{len(runs)}/{expected_runs(preset)} run files in {wall:.0f} s on {','.join(devices) or '-'}",
    }  # fmt: skip
    if rc != 0:
        res["error"] = tail(log)
    return res


PARTS: dict[str, tuple[float, Callable[[Ctx], dict[str, Any]]]] = {
    # name: (share of the budget, function); the shares sum below 1, the rest is the parent's own margin
    "env": (0.06, part_env),
    "accuracy": (0.07, part_accuracy),
    "step_roofline": (0.10, part_step_roofline),
    "pack_speedup": (0.08, part_pack_speedup),
    "pack_identity": (0.05, part_pack_identity),
    "rowspace": (0.07, part_rowspace),
    "ntk_eigh": (0.18, part_ntk_eigh),
    "job_fixed_cost": (0.12, part_job_fixed_cost),
    "tiny_preset": (0.24, part_tiny_preset),
}
MEASURED = [name for name in PARTS if name != "env"]


# --------------------------------------------------------------------------------------------------------------------
# The parent: one child per part, each under its time limit
# --------------------------------------------------------------------------------------------------------------------
def jsonable(v: Any) -> Any:
    """v with NumPy scalars and arrays as Python values and non-finite floats as None (strict JSON)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def run_part(name: str, device: str, dry_run: bool, limit_s: float, scratch: Path) -> dict[str, Any]:
    """Run one part in a child process under ``limit_s``; its record: status, wall_s, limit_s and its numbers."""
    if limit_s < 1:
        return {"status": "timeout", "wall_s": 0.0, "limit_s": limit_s, "error": "budget exhausted before the start"}
    scratch.mkdir(parents=True)
    out, log = scratch / "result.json", scratch / "output.log"
    cmd = [sys.executable, __file__, "--part", name, "--part-out", str(out), "--device", device,
           "--limit-s", f"{limit_s:.1f}", "--scratch", str(scratch)] + (["--dry-run"] if dry_run else [])  # fmt: skip
    rc, wall = run_bounded(cmd, limit_s, log, cwd=ROOT, env=child_env(**(DRY_RUN_THREADS if dry_run else {})))
    record: dict[str, Any] = {"status": "ok", "wall_s": wall, "limit_s": limit_s}
    if rc is None:
        return record | {"status": "timeout", "error": f"killed after {limit_s:.0f} s; last output:\n{tail(log)}"}
    if rc != 0 or not out.is_file():
        return record | {"status": "error", "error": f"exit status {rc}\n{tail(log)}"}
    return record | json.loads(out.read_text())


def part_line(name: str, rec: dict[str, Any]) -> str:
    """One human-readable line: part, status, wall time and its summary (or the last line of its error)."""
    lines = (rec.get("summary") or rec.get("error") or rec.get("reason") or "").strip().splitlines()
    detail = lines[-1] if lines else ""
    return f"{name:15s} {rec['status']:8s} {rec['wall_s']:6.1f} s  {detail}"


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected part in order under the budget; the JSON document."""
    start = time.perf_counter()
    deadline = start + args.budget_s
    device = args.device or ("cpu" if args.dry_run else "auto")
    names = ["env"] + [n for n in MEASURED if not args.only or n in args.only]
    skipped = {"tiny_preset"} if args.dry_run and not args.with_workflow else set()
    todo = [n for n in names if n not in skipped]
    margin = (1 - sum(PARTS[n][0] for n in PARTS)) * args.budget_s
    doc: dict[str, Any] = {"device": device, "torch": None, "cuda": None, "gpu": None, "dry_run": args.dry_run,
                           "budget_s": args.budget_s, "parts": {}}  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        for name in names:
            if name in skipped:
                rec = {"status": "skipped", "wall_s": 0.0, "reason": "dry run without --with-workflow"}
            else:
                later = sum(PARTS[n][0] for n in todo[todo.index(name) + 1 :]) * args.budget_s
                limit = deadline - time.perf_counter() - margin - later
                rec = run_part(name, device, args.dry_run, limit, root / name)
            print(part_line(name, rec), flush=True)
            if name == "env":
                doc = absorb_env(doc, rec)
                device = doc["device"]
            else:
                doc["parts"][name] = rec
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc["wall_s"] = time.perf_counter() - start
    return doc


def absorb_env(doc: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    """The env part's findings as the document's top-level keys (its failure under "env_error")."""
    if rec["status"] != "ok":
        return doc | {"env_error": rec.get("error", rec["status"])}
    top = {k: rec[k] for k in ("device", "torch", "cuda", "gpu")}
    rest = {k: v for k, v in rec.items() if k not in top and k not in ("status", "summary", "limit_s")}
    return doc | top | {"environment": rest}


def failed(doc: dict[str, Any]) -> list[str]:
    """Parts whose status is neither ok nor skipped (and "env" when it failed)."""
    bad = [n for n, rec in doc["parts"].items() if rec["status"] not in ("ok", "skipped")]
    return (["env"] if "env_error" in doc else []) + bad


def child_main(args: argparse.Namespace) -> int:
    """Run one part in this (child) process and write its result JSON to --part-out."""
    sizes = DRY_SIZES if args.dry_run else GPU_SIZES
    ctx = Ctx(device=args.device, dry_run=args.dry_run, sizes=sizes, scratch=Path(args.scratch),
              limit_s=args.limit_s)  # fmt: skip
    if args.part != "env":
        from momentum_ntk import lease

        ctx = replace(ctx, device=lease.resolve_device(ctx.device))
    result = PARTS[args.part][1](ctx)
    Path(args.part_out).write_text(json.dumps(jsonable(result), indent=1))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON file written")
    ap.add_argument("--dry-run", action="store_true", help="small sizes, device cpu unless --device; the test's mode")
    ap.add_argument("--with-workflow", action="store_true", help="dry run: also run the tiny preset (~1 min on a CPU)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="total wall-time budget of all parts")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:<i> (default: dry run cpu, else auto)")
    ap.add_argument("--only", nargs="+", choices=MEASURED, help="run only these parts (env always runs)")
    ap.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--part-out", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--limit-s", type=float, default=math.inf, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        return child_main(args)
    print(f"gpu_check: {'dry run' if args.dry_run else 'full sizes'}, budget {args.budget_s:.0f} s", flush=True)
    doc = run_all(args)
    if not args.dry_run and not doc["device"].startswith("cuda"):
        print("gpu_check: no CUDA device, the GPU sizes ran on the CPU (expect timeouts)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(doc), indent=1) + "\n")
    bad = failed(doc)
    print(f"gpu_check: wrote {args.out} in {doc['wall_s']:.1f} s; failed: {', '.join(bad) or 'none'}", flush=True)
    return 1 if args.dry_run and bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
