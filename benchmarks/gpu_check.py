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
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_common and gpu_parts, next to this script

from gpu_common import (  # noqa: E402  (benchmarks/ is on sys.path: the script's own folder)
    Ctx,
    DRY_RUN_THREADS,
    DRY_SIZES,
    GPU_SIZES,
    ROOT,
    child_env,
    run_bounded,
    tail,
)
from gpu_parts import (  # noqa: E402  (benchmarks/ is on sys.path: the script's own folder)
    MEASURED,
    PARTS,
)


# The dry run's sizes are too small to gain from threads, and on a loaded machine a thread pool waiting for a
# descheduled thread turns every microsecond op into milliseconds: one thread per process (and its children).
# --------------------------------------------------------------------------------------------------------------------
# Sizes and the context a part runs in
# --------------------------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------------------------
# Helpers of the parts (run in the child processes)
# --------------------------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------------------------
# The parts: each returns a JSON-able dict with a one-line "summary"
# --------------------------------------------------------------------------------------------------------------------
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
