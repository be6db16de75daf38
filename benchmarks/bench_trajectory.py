"""Cost of following the linearized trajectory beside training (momentum_ntk.trajectory): step time with and without
the trajectory error e(k), measured in one process, interleaved, on the same data.

    python benchmarks/bench_trajectory.py                      # n = 64 (m = 128, 2048) and n = 1000 (m = 1000)
    python benchmarks/bench_trajectory.py --threads 1 --steps 400 --repeats 3

Prints ms per step without and with tracking and their ratio (the median over repeats, runs alternating so that
machine noise hits both alike). The tracker adds two n×n float64 matrix-vector products and a few n-vector passes
per run and step: O(n²), against the step's 4·n·d·m.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from momentum_ntk import loop, model  # noqa: E402


def step_ms(X: np.ndarray, y: np.ndarray, m: int, steps: int, trajectory: bool) -> float:
    W0, a = model.init_params(X.shape[1], m, 0)
    t0 = time.perf_counter()
    loop.train_many(X, y, W0, a, [{"method": "nag", "eta": 1e-3, "beta": 0.99}], steps=steps, gram_every=0,
                     trajectory=trajectory)
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads={args.threads} steps={args.steps} repeats={args.repeats} (float32, NAG, d = 784)")
    print(f"{'n':>5} {'m':>6} {'ms/step off':>12} {'ms/step on':>11} {'on/off':>7}")
    for n, m in ((64, 128), (64, 2048), (1000, 1000)):
        X = rng.standard_normal((n, 784))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        off, on = [], []
        for _ in range(args.repeats):
            off.append(step_ms(X, y, m, args.steps, False))
            on.append(step_ms(X, y, m, args.steps, True))
        a, b = statistics.median(off), statistics.median(on)
        print(f"{n:>5} {m:>6} {a:>12.3f} {b:>11.3f} {b / a:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
