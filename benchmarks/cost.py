"""What the whole paper costs on this device: the grid of config.yaml priced with a training step timed here.

    PYTHONPATH=src python benchmarks/cost.py                      # config.yaml, the current device
    PYTHONPATH=src python benchmarks/cost.py --device cuda --threads 8
    PYTHONPATH=src python benchmarks/cost.py --configfile config.yaml workflow/presets/paper-mnist5k.yaml

One full-batch step of the direct engine costs two GEMMs, 4·n·d·m FLOP (X·W and Xᵀ·G), plus O(n·m + d·m) elementwise
work that the benchmark's roofline fraction already covers; a pack the row-space engine trains (train.engine, n ≤ d
under auto) is priced by plan.step_flop(..., "rowspace"), its GEMM plus its passes in GEMM-FLOP equivalents. The script times `momentum_ntk.loop.train` itself (float32, TF32 off,
Gram tracking at the configured cadence) on a mid-size problem, turns that into an effective FLOP rate, and prices
every dataset's share of the grid: runs, FLOP, device-hours, plus the disk and per-job memory the workflow plans.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from momentum_ntk import loop, model, plan

ROOT = Path(__file__).resolve().parents[1]


def effective_rate(device: str, n: int, d: int, m: int, steps: int, gram_every: int) -> float:
    """FLOP/s of train() counted as 4·n·d·m per step, measured as T(steps) − T(0) to drop the set-up cost."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    W0, a = model.init_params(d, m, 0)
    kw = dict(method="nag", eta=1e-4, beta=0.9, dtype=torch.float32, device=device, gram_every=gram_every,
              engine="direct")  # fmt: skip
    loop.train(X, y, W0, a, steps=2, **kw)  # warm-up
    t0 = time.perf_counter()
    loop.train(X, y, W0, a, steps=0, **kw)
    t1 = time.perf_counter()
    loop.train(X, y, W0, a, steps=steps, **kw)
    t2 = time.perf_counter()
    return plan.step_flop(n, d, m) * steps / ((t2 - t1) - (t1 - t0))


def merged(base: dict, over: dict) -> dict:
    """``over`` merged into ``base`` recursively (nested mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def startup_s(reps: int = 3) -> float:
    """Seconds a fresh train job spends before training: interpreter start and the train module's imports (torch,
    pandas, the package), the minimum over ``reps`` processes. Data loading adds little at these sizes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import momentum_ntk.train"], env=env, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", nargs="+", default=[str(ROOT / "config.yaml")],
                    help="config files, later ones merged over earlier ones (as Snakemake's --configfile)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg: dict = {}
    for path in args.configfile:
        cfg = merged(cfg, yaml.safe_load(Path(path).read_text()) or {})
    grid, tr = cfg["grid"], cfg["train"]
    rate = effective_rate(args.device, 2000, 784, 2000, args.steps, tr["gram_every"])
    start = startup_s()
    pack = len(grid["methods"]) * len(grid["eta_divisors"]) * len(grid["betas"])
    per_width = pack * len(grid["seeds"])
    packed = tr.get("granularity", "pack") == "pack"
    print(f"device {args.device}, {args.threads} threads: train() runs at {rate / 1e9:.0f} GFLOP/s (4·n·d·m per step)")
    print(f"grid: {per_width} runs per width × {len(grid['widths'])} widths per dataset, {tr['steps']} steps; "
          f"{'packs of ' + str(pack) + ' runs per job' if packed else 'one run per job'}\n")  # fmt: skip
    print(f"{'dataset':8} {'n':>6} {'d':>5} {'runs':>5} {'jobs':>5} {'PFLOP':>7} {'hours':>7} {'max job MiB':>11} "
          f"{'eigvecs MB':>10}")  # fmt: skip
    total_h = total_flop = 0.0
    runs = jobs = 0
    for ds in cfg["datasets"]:
        n = plan.n_instances(ds, cfg.get("data", {}).get("max_per_class"))
        d = plan.FULL_SHAPES[ds][1]
        engine = {m: plan.choose_engine(tr.get("engine", "auto"), n, d, m) for m in grid["widths"]}
        flop = sum(plan.step_flop(n, d, m, engine[m]) * tr["steps"] * per_width for m in grid["widths"])
        hours = flop / rate / 3600
        ds_runs = per_width * len(grid["widths"])
        ds_jobs = ds_runs // pack if packed else ds_runs
        total_h, total_flop, runs, jobs = total_h + hours, total_flop + flop, runs + ds_runs, jobs + ds_jobs
        m_max = max(grid["widths"])
        job = plan.TrainJob(n, d, m_max, pack if packed else 1, tr["steps"], 4, min(n, tr["gram_max_n"]),
                            engine=engine[m_max], w0_on_host=engine[m_max] == "direct" or packed)  # fmt: skip
        print(f"{ds:8} {n:6d} {d:5d} {ds_runs:5d} {ds_jobs:5d} {flop / 1e15:7.1f} {hours:7.1f} {job.mem_mb():11d} "
              f"{n * n * 4 / 1e6:10.0f}")  # fmt: skip
    print(f"\ntotal: {total_h:.1f} device-hours of training on this device at the measured rate")
    print(f"start-up per job (interpreter + imports, measured here): {start:.1f} s; {jobs} jobs: "
          f"{jobs * start / 3600:.2f} h ({runs * start / 3600:.2f} h with one job per run)")  # fmt: skip
    gpu_h = total_flop / plan.GPU_FLOPS_ESTIMATE / 3600
    gpu_fixed = start + 1.0  # + CUDA context creation, ESTIMATED at ~1 s (benchmarks/gpu_check.py measures it)
    print(f"GPU ESTIMATE (not measured; benchmarks/gpu_check.py measures it): at {plan.GPU_FLOPS_ESTIMATE / 1e12:.0f} "
          f"TFLOP/s effective, {gpu_h:.2f} GPU-hours of training + {jobs * gpu_fixed / 3600:.2f} h of start-up "
          f"({gpu_fixed * jobs / (gpu_fixed * jobs + gpu_h * 3600):.0%} of the total) with these jobs; one job per "
          f"run: + {runs * gpu_fixed / 3600:.2f} h ({gpu_fixed * runs / (gpu_fixed * runs + gpu_h * 3600):.0%})")


if __name__ == "__main__":
    main()
