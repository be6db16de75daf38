"""Speed and memory of the training step (momentum_ntk.train) on the current device, both engines.

    PYTHONPATH=src python benchmarks/bench_train.py                      # n=1000, d=784, m in {1000, 8000}, float32
    PYTHONPATH=src python benchmarks/bench_train.py --widths 1000 --threads 1 --device cpu
    PYTHONPATH=src python benchmarks/bench_train.py --n 64 --widths 2048 8192 65536 --threads 1
    PYTHONPATH=src python benchmarks/bench_train.py --engines-only --n 256 --widths 8192 --threads 1   # cost rule

For each width m it measures, all within one process so that the numbers are ratios on the same machine state:

- roofline: the two bare GEMMs of a step, Z = X·W (n×d·d×m) and G = Xᵀ·Z (d×n·n×m), back to back;
- step: one full NAG step of the training loop (forward, loss and max_dist metrics, gradient, update) and the
  same step plus the Gram tracking (λmin/λmax of H(t) by eigvalsh on all n rows, pattern changes) amortised over
  the default cadence of 50 steps; fraction of roofline = roofline time / step time;
- naive: autograd + torch.optim.SGD(nesterov) with the same per-step metrics (loss.item(), max_dist), no Gram;
- packed: k=4 runs in one batched pack vs 4 single runs one after the other (ratio > 1: packing is faster);
- end-to-end: train() per step, (T(100 steps) − T(0 steps)) / 100 at the default cadence, as a check on the above;
- row-space engine (momentum_ntk.rowspace): its roofline, the one bare GEMM of its step K·C (n×n·n×m, 2·n²·m
  FLOP), and one full NAG step of the same loop on the row-space pack; fraction of its roofline, speed-up over the
  direct step; the same with its Gram tracking amortised; its peak memory (formula and measured, as below);
- peak memory of train(): the formula (memory_formula: data + W0 + per run W, b, G (d×m), Z (n×m), X⊙r (n×d) + the
  pattern masks + the float64 Gram work) vs the measured peak (CUDA: max_memory_allocated; CPU: peak RSS growth of
  a fresh process, with /proc/self/clear_refs resetting the high-water mark).

``--engines-only`` times just the two GEMM rooflines and the two engines' steps (what plan.choose_engine's cost rule
is derived from). Timings are minima over round-robin rounds of all candidates, at least ``--reps`` rounds and
``--min-seconds`` (robust to other load on a shared machine).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from momentum_ntk import devices, engine, lease, loop, model, rowspace

CADENCE = 50


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def race(
    fns: dict[str, Callable[[], object]], rounds: int, device: torch.device, min_seconds: float = 0.0
) -> dict[str, float]:
    """Minimum time (s) of each function over round-robin rounds: at least ``rounds`` and ``min_seconds`` of them.

    Interleaving the candidates gives each the same chances of a quiet moment on a shared machine.
    """
    best = dict.fromkeys(fns, math.inf)
    for fn in fns.values():
        fn()
    start, done = time.perf_counter(), 0
    while done < rounds or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
        done += 1
    return best


def make_problem(n: int, d: int, m: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    W0, a = model.init_params(d, m, seed)
    return X, y, W0, a


def make_pack(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    specs: list[engine.RunSpec],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[engine.Shared, engine.Pack]:
    """The training loop's own shared data and packed state (engine.shared_state, engine.new_pack), as train_many
    builds them."""
    sh = engine.shared_state(X, y, W0, a, dtype=dtype, device=str(device))
    return sh, engine.new_pack(sh, specs)


def make_row_pack(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    specs: list[engine.RunSpec],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[rowspace.RowShared, rowspace.RowPack]:
    """The row-space engine's shared data and packed state, as train_many builds them for engine="rowspace"."""
    sh = rowspace.row_shared_state(X, y, W0, a, dtype=dtype, device=str(device))
    return sh, rowspace.new_pack(sh, specs)


def step_fn(sh: engine.Shared, p: engine.Pack | rowspace.RowPack) -> Callable[[], None]:
    """One training-loop step (no Gram tracking), as train_many runs it: the metrics go to a device buffer (the host
    copy happens once per engine.SYNC_EVERY steps and is left out here)."""
    buf = torch.empty(p.k, 2, dtype=torch.float64, device=sh.X.device)

    def step() -> None:  # the training loop's own two halves (engine.forward, engine.update), not a copy of them
        metrics, _ = engine.forward(sh, p)
        buf.copy_(metrics)
        engine.update(sh, p, 1)

    return step


def bench_engines(n: int, d: int, m: int, reps: int, device: torch.device, min_seconds: float) -> dict[str, float]:
    """The two engines' NAG steps and their GEMM rooflines only, raced round-robin (the cost rule's measurements)."""
    X, y, W0, a = make_problem(n, d, m)
    nag = engine.RunSpec("nag", 0.1 / n, 0.99)
    Xt = torch.tensor(X, dtype=torch.float32, device=device)
    Wt = torch.tensor(W0, dtype=torch.float32, device=device)
    Z = torch.empty(n, m, device=device)
    G = torch.empty(d, m, device=device)
    sh, p = make_pack(X, y, W0, a, [nag], device)
    rsh, rp = make_row_pack(X, y, W0, a, [nag], device)
    C = torch.randn(n, m, device=device) * 1e-3
    t = race(
        {
            "gemm": lambda: (torch.mm(Xt, Wt, out=Z), torch.mm(Xt.T, Z, out=G)),
            "step": step_fn(sh, p),
            "row_gemm": lambda: torch.mm(rsh.K, C, out=Z),
            "row": step_fn(rsh, rp),
        },
        reps,
        device,
        min_seconds,
    )
    return engine_results(n, d, m, t)


def engine_results(n: int, d: int, m: int, t: dict[str, float]) -> dict[str, float]:
    """The rows both benchmarks print from the timings gemm, step (direct) and row_gemm, row (row space)."""
    return {
        "n": n,
        "m": m,
        "gemm_ms": 1e3 * t["gemm"],
        "gemm_gflops": 4 * n * d * m / t["gemm"] / 1e9,
        "step_ms": 1e3 * t["step"],
        "frac_step": t["gemm"] / t["step"],
        "row_gemm_ms": 1e3 * t["row_gemm"],
        "row_gemm_gflops": 2 * n * n * m / t["row_gemm"] / 1e9,
        "row_ms": 1e3 * t["row"],
        "frac_row": t["row_gemm"] / t["row"],
        "row_speedup": t["step"] / t["row"],
    }


def bench_width(n: int, d: int, m: int, reps: int, device: torch.device, min_seconds: float) -> dict[str, float]:
    X, y, W0, a = make_problem(n, d, m)
    eta = 0.1 / n  # small enough to stay finite over the benchmark
    nag = engine.RunSpec("nag", eta, 0.99)
    specs = [nag, engine.RunSpec("hb", eta, 0.99), engine.RunSpec("nag", eta / 2, 0.97), engine.RunSpec("hb", eta, 0.97)]

    # roofline: the step's two GEMMs with its shapes
    Xt = torch.tensor(X, dtype=torch.float32, device=device)
    Wt = torch.tensor(W0, dtype=torch.float32, device=device)
    Z = torch.empty(n, m, device=device)
    G = torch.empty(d, m, device=device)

    # the training loop's step, alone and packed 4 at a time
    sh, p = make_pack(X, y, W0, a, [nag], device)
    # the row-space engine's step and its roofline, the one GEMM K·C (n×n·n×m)
    rsh, rp = make_row_pack(X, y, W0, a, [nag], device)
    C = torch.randn(n, m, device=device) * 1e-3
    shk, pk = make_pack(X, y, W0, a, specs, device)

    # naive autograd + torch.optim.SGD with the same per-step metrics
    W = torch.tensor(W0, dtype=torch.float32, device=device, requires_grad=True)
    W0t, at = Wt.clone(), torch.tensor(a, dtype=torch.float32, device=device)
    yt = torch.tensor(y, dtype=torch.float32, device=device)
    opt = torch.optim.SGD([W], lr=eta, momentum=0.99, nesterov=True)

    def naive() -> None:
        loss = 0.5 * ((model.forward(Xt, W, at) - yt) ** 2).sum()
        loss.item()
        (W.detach() - W0t).norm(dim=0).max().item()
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = race(
        {
            "gemm": lambda: (torch.mm(Xt, Wt, out=Z), torch.mm(Xt.T, Z, out=G)),
            "step": step_fn(sh, p),
            "naive": naive,
            "pack": step_fn(shk, pk),
            "row_gemm": lambda: torch.mm(rsh.K, C, out=Z),
            "row": step_fn(rsh, rp),
        },
        reps,
        device,
        min_seconds,
    )
    del shk, pk, W, opt
    # Gram tracking's own cost: the loop's forward half with tracking, minus the same half without it
    t |= race({"fwd_gram": lambda: engine.forward(sh, p, track=True), "fwd": lambda: engine.forward(sh, p)},
              max(2, reps // 3), device)  # fmt: skip
    t["gram"] = max(t["fwd_gram"] - t["fwd"], 0.0)
    row_fwd = {"fwd_gram": lambda: engine.forward(rsh, rp, track=True), "fwd": lambda: engine.forward(rsh, rp)}
    t |= {f"row_{key}": v for key, v in race(row_fwd, max(2, reps // 3), device).items()}
    t["row_gram"] = max(t["row_fwd_gram"] - t["row_fwd"], 0.0)

    # end to end: train() per step at the default cadence, (T(2 CADENCE) - T(0)) / (2 CADENCE)
    def e2e(steps: int, engine: str = "direct") -> Callable[[], object]:
        return lambda: loop.train(X, y, W0, a, method="nag", eta=eta, beta=0.99, steps=steps, gram_every=CADENCE,
                                   dtype="float32", device=str(device), engine=engine)  # fmt: skip

    t |= race({"e2e0": e2e(0), "e2e": e2e(2 * CADENCE), "row_e2e0": e2e(0, "rowspace"),
               "row_e2e": e2e(2 * CADENCE, "rowspace")}, 2, device, min_seconds)  # fmt: skip
    t_e2e = (t["e2e"] - t["e2e0"]) / (2 * CADENCE)
    t_row_e2e = (t["row_e2e"] - t["row_e2e0"]) / (2 * CADENCE)
    return engine_results(n, d, m, t) | {
        "gram_ms": 1e3 * t["gram"],
        "frac_amortised": t["gemm"] / (t["step"] + t["gram"] / CADENCE),
        "e2e_step_ms": 1e3 * t_e2e,
        "frac_e2e": t["gemm"] / t_e2e,
        "naive_ms": 1e3 * t["naive"],
        "speedup_vs_naive": t["naive"] / t["step"],
        "pack4_ms": 1e3 * t["pack"],
        "pack_speedup": 4 * t["step"] / t["pack"],
        "mem_formula_mb": memory_formula(n, d, m, k=1, n_s=n) / 2**20,
        "mem_measured_mb": peak_memory(n, d, m, device) / 2**20,
        "row_gram_ms": 1e3 * t["row_gram"],
        "frac_row_amortised": t["row_gemm"] / (t["row"] + t["row_gram"] / CADENCE),
        "row_e2e_step_ms": 1e3 * t_row_e2e,
        "row_e2e_speedup": t_e2e / t_row_e2e,
        "row_mem_formula_mb": row_memory_formula(n, d, m, k=1, n_s=n) / 2**20,
        "row_mem_measured_mb": peak_memory(n, d, m, device, "rowspace") / 2**20,
    }


def memory_formula(n: int, d: int, m: int, k: int, n_s: int, itemsize: int = 4) -> int:
    """Bytes live at the peak, a Gram-tracking step: shared X (n×d), y, W0 (d×m) and X_R X_Rᵀ (float64 n_s×n_s); per
    run W, b, G (d×m), Z (n×m), X⊙r (n×d), f (n); the bool S(0) (n×m); and the tracking transients: S(t) (n×m bool),
    S_R (n_s×m bool and float32), then two float64 n_s×n_s matrices at a time (counts → product → H → eigvalsh's copy).
    """
    shared = itemsize * (n * d + n + d * m) + 8 * n_s * n_s
    per_run = itemsize * (3 * d * m + n * m + n * d + n)
    tracking = n * m + n * m + 5 * n_s * m + 16 * n_s * n_s
    return shared + k * per_run + tracking


def row_memory_formula(n: int, d: int, m: int, k: int, n_s: int, itemsize: int = 4) -> int:
    """Bytes live at the row-space engine's peak, a Gram-tracking step, beyond the caller's W(0): X W(0) in float64
    (n×m, numpy) and on the device (n×m), X (n×d), y, K = X Xᵀ (n×n) and X_R X_Rᵀ (float64 n_s×n_s); the float64 row
    block of W(0) copied while X W(0) is summed is freed before training (2^22 doubles at most, not counted); per
    run C, b, Z, M (n×m) and f (n); S(0) and the tracking transients as in :func:`memory_formula`. No d×m term."""
    shared = 8 * n * m + itemsize * (n * m + n * d + n + n * n) + 8 * n_s * n_s
    per_run = itemsize * (4 * n * m + n)
    tracking = n * m + n * m + 5 * n_s * m + 16 * n_s * n_s
    return shared + k * per_run + tracking


def peak_memory(n: int, d: int, m: int, device: torch.device, engine: str = "direct") -> float:
    """Peak bytes of a 3-step train() with Gram tracking at every step, beyond what the data already held.

    CUDA: torch.cuda.max_memory_allocated. CPU: growth of the peak RSS (VmHWM) in a fresh process whose malloc
    returns every large block to the OS (MALLOC_MMAP_THRESHOLD_), so freed memory is not silently reused.
    """
    if device.type == "cuda":
        X, y, W0, a = make_problem(n, d, m)
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        probe_train(X, y, W0, a, str(device), engine)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(torch.get_num_threads()))
    cmd = [sys.executable, __file__, "--memory-probe", str(n), str(d), str(m), "--memory-engine", engine]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def probe_train(X: np.ndarray, y: np.ndarray, W0: np.ndarray, a: np.ndarray, device: str, engine: str) -> None:
    loop.train(X, y, W0, a, method="nag", eta=0.1 / len(y), beta=0.99, steps=3, gram_every=1, dtype="float32",
                device=device, engine=engine)  # fmt: skip


def memory_probe(n: int, d: int, m: int, engine: str) -> None:
    """Child process of peak_memory on CPU: print the peak RSS growth (bytes) of probe_train."""

    def status(key: str) -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

    X, y, W0, a = make_problem(n, d, m)
    probe_train(X[:8], y[:8], W0[:, :8], a[:8], "cpu", engine)  # load torch's kernels and MKL first
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    base = status("VmRSS:")
    probe_train(X, y, W0, a, "cpu", engine)
    print(status("VmHWM:") - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--widths", type=int, nargs="+", default=[1000, 8000])
    ap.add_argument("--reps", type=int, default=10, help="round-robin timing rounds")
    ap.add_argument("--min-seconds", type=float, default=20.0, help="keep racing the step variants this long")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--engines-only", action="store_true",
                    help="only the two engines' steps and GEMM rooflines (the data of plan.choose_engine's rule)")
    ap.add_argument("--memory-probe", type=int, nargs=3, metavar=("N", "D", "M"), help=argparse.SUPPRESS)
    ap.add_argument("--memory-engine", default="direct", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.memory_engine)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(lease.resolve_device(args.device))
    devices.strict_float32()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; float32, TF32 off; n={args.n}, d={args.d}")
    bench = bench_engines if args.engines_only else bench_width
    results = [bench(args.n, args.d, m, args.reps, device, args.min_seconds) for m in args.widths]

    engine_rows = [
        ("2 bare GEMMs (roofline)  ms", "gemm_ms", "{:.2f}"),
        ("  GEMM rate           GFLOP/s", "gemm_gflops", "{:.0f}"),
        ("training step            ms", "step_ms", "{:.2f}"),
        ("  fraction of roofline", "frac_step", "{:.2f}"),
        ("row space: GEMM K·C      ms", "row_gemm_ms", "{:.3f}"),
        ("  GEMM rate           GFLOP/s", "row_gemm_gflops", "{:.0f}"),
        ("row-space step           ms", "row_ms", "{:.3f}"),
        ("  fraction of its roofline", "frac_row", "{:.2f}"),
        ("  speed-up over direct step", "row_speedup", "{:.2f}"),
    ]
    rows = engine_rows if args.engines_only else [
        ("2 bare GEMMs (roofline)  ms", "gemm_ms", "{:.2f}"),
        ("  GEMM rate           GFLOP/s", "gemm_gflops", "{:.0f}"),
        ("training step            ms", "step_ms", "{:.2f}"),
        ("  fraction of roofline", "frac_step", "{:.2f}"),
        ("Gram tracking (1 call)   ms", "gram_ms", "{:.1f}"),
        ("step + Gram/50           fraction", "frac_amortised", "{:.2f}"),
        ("train() end to end /step ms", "e2e_step_ms", "{:.2f}"),
        ("  fraction of roofline", "frac_e2e", "{:.2f}"),
        ("naive autograd+SGD step  ms", "naive_ms", "{:.2f}"),
        ("  speed-up over naive", "speedup_vs_naive", "{:.2f}"),
        ("packed k=4 step          ms", "pack4_ms", "{:.2f}"),
        ("  packed / sequential speed", "pack_speedup", "{:.2f}"),
        ("peak memory, formula     MiB", "mem_formula_mb", "{:.0f}"),
        ("peak memory, measured    MiB", "mem_measured_mb", "{:.0f}"),
        *engine_rows[4:],
        ("row-space Gram (1 call)  ms", "row_gram_ms", "{:.1f}"),
        ("row step + Gram/50       fraction", "frac_row_amortised", "{:.2f}"),
        ("row-space train() /step  ms", "row_e2e_step_ms", "{:.3f}"),
        ("  speed-up over direct train()", "row_e2e_speedup", "{:.2f}"),
        ("row-space memory, formula MiB", "row_mem_formula_mb", "{:.0f}"),
        ("row-space memory, measured MiB", "row_mem_measured_mb", "{:.0f}"),
    ]
    head = f"{'':36s}" + "".join(f"{'m=' + str(r['m']):>10s}" for r in results)
    print(head)
    for label, key, fmt in rows:
        print(f"{label:36s}" + "".join(f"{fmt.format(r[key]):>10s}" for r in results))


if __name__ == "__main__":
    main()
