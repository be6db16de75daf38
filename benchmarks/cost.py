"""What the whole paper costs on this device: the grid of config.yaml priced with a training step timed here.

    PYTHONPATH=src python benchmarks/cost.py                      # config.yaml, the current device
    PYTHONPATH=src python benchmarks/cost.py --device cuda --threads 8

One full-batch step costs two GEMMs, 4·n·d·m FLOP (X·W and Xᵀ·G), plus O(n·m + d·m) elementwise work that the
benchmark's roofline fraction already covers. The script times `momentum_ntk.train.train` itself (float32, TF32 off,
Gram tracking at the configured cadence) on a mid-size problem, turns that into an effective FLOP rate, and prices
every dataset's share of the grid: runs, FLOP, device-hours, plus the disk and per-job memory the workflow plans.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from momentum_ntk import model, plan, train

ROOT = Path(__file__).resolve().parents[1]


def effective_rate(device: str, n: int, d: int, m: int, steps: int, gram_every: int) -> float:
    """FLOP/s of train() counted as 4·n·d·m per step, measured as T(steps) − T(0) to drop the set-up cost."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    W0, a = model.init_params(d, m, 0)
    kw = dict(method="nag", eta=1e-4, beta=0.9, dtype=torch.float32, device=device, gram_every=gram_every)
    train.train(X, y, W0, a, steps=2, **kw)  # warm-up
    t0 = time.perf_counter()
    train.train(X, y, W0, a, steps=0, **kw)
    t1 = time.perf_counter()
    train.train(X, y, W0, a, steps=steps, **kw)
    t2 = time.perf_counter()
    return 4.0 * n * d * m * steps / ((t2 - t1) - (t1 - t0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    grid, tr = cfg["grid"], cfg["train"]
    rate = effective_rate(args.device, 2000, 784, 2000, args.steps, tr["gram_every"])
    per_width = len(grid["methods"]) * len(grid["eta_divisors"]) * len(grid["betas"]) * len(grid["seeds"])
    print(f"device {args.device}, {args.threads} threads: train() runs at {rate / 1e9:.0f} GFLOP/s (4·n·d·m per step)")
    print(f"grid: {per_width} runs per width × {len(grid['widths'])} widths per dataset, {tr['steps']} steps\n")
    print(f"{'dataset':8} {'n':>6} {'d':>5} {'runs':>5} {'PFLOP':>7} {'hours':>7} {'max job MiB':>11} {'eigvecs MB':>10}")
    total_h = 0.0
    for ds in cfg["datasets"]:
        n = plan.n_instances(ds, cfg.get("data", {}).get("max_per_class"))
        d = plan.FULL_SHAPES[ds][1]
        flop = sum(4.0 * n * d * m * tr["steps"] * per_width for m in grid["widths"])
        hours = flop / rate / 3600
        total_h += hours
        mem = plan.train_mem_mb(n, d, max(grid["widths"]), 4, min(n, tr["gram_max_n"]))
        print(f"{ds:8} {n:6d} {d:5d} {per_width * len(grid['widths']):5d} {flop / 1e15:7.1f} {hours:7.1f} "
              f"{mem:11d} {n * n * 4 / 1e6:10.0f}")  # fmt: skip
    print(f"\ntotal: {total_h:.1f} device-hours of training on this device at the measured rate")


if __name__ == "__main__":
    main()
