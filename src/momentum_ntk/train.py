"""Full-batch GD / HB / NAG training of the two-layer ReLU network (paper §3.1, eqs. 1-5), with per-step metrics.

    PYTHONPATH=src python -m momentum_ntk.train --data results/data/mnist.npz \
        --ntk-summary results/ntk/mnist/summary.json --dataset mnist --method nag --width 1000 --eta-divisor 10 \
        --beta 0.99 --seed 0 --steps 1000 --gram-every 50 --out run.parquet --meta run.json
    # a pack: one value per run for --method/--eta-divisor/--beta/--out/--meta (they share X, m, seed, hence W(0))
    PYTHONPATH=src python -m momentum_ntk.train --data D.npz --ntk-summary S.json --dataset mnist --width 1000 \
        --seed 0 --method hb nag --eta-divisor 10 10 --beta 0.99 0.99 --out hb.parquet nag.parquet \
        --meta hb.json nag.json

The training maths, the packed engines and the metrics live in the library: :mod:`momentum_ntk.engine` (the packed
runs, the direct engine), :mod:`momentum_ntk.rowspace` (the row-space engine), :mod:`momentum_ntk.loop` (the loop
over either), :mod:`momentum_ntk.trajectory` (e(k)), :mod:`momentum_ntk.modes` (the theory modes). This module is
the stage: it reads the data and the NTK summary, picks the engine and the device, trains the pack,
writes one Parquet and one sidecar JSON per run (docs/CONTRACT.md) and, for a packed job, the theory modes file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from momentum_ntk import defaults, io, methods, model, plan
from momentum_ntk.devices import device_record
from momentum_ntk.engine import SYNC_EVERY, RunSpec
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.gram import lambda0_of_rows, subsample_rows
from momentum_ntk.loop import train_many
from momentum_ntk.modes import modes_of_job
from momentum_ntk.records import learning_rate
from momentum_ntk.rowspace import resolve_engine


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="binarized data .npz (X, y)")
    ap.add_argument("--ntk-summary", type=Path, help="NTK summary.json (learning rates, λ0 of the tracked rows)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--width", required=True, type=int, help="hidden width m")
    ap.add_argument("--seed", type=int, default=0, help="seed of W(0), a (model.init_params)")
    # One value per run of the pack (all runs share X, m and the seed, hence W(0)); a single value is one run.
    ap.add_argument("--method", required=True, nargs="+", choices=methods.names(), help="one per run")
    ap.add_argument("--eta-divisor", type=int, nargs="+", default=None, help="η = summary['eta'][str(divisor)], per run")
    ap.add_argument("--eta", type=float, nargs="+", default=None, help="explicit learning rates (override divisors)")
    ap.add_argument("--beta", type=float, nargs="+", default=[0.0], help="momentum β, one per run")
    ap.add_argument("--out", required=True, type=Path, nargs="+", help="run Parquet, one per run")
    ap.add_argument("--meta", required=True, type=Path, nargs="+", help="run sidecar JSON, one per run")
    ap.add_argument("--steps", type=int, default=defaults.STEPS)
    ap.add_argument("--gram-every", type=int, default=defaults.GRAM_EVERY, help="track H(t) every this many steps (0: first and last)")
    ap.add_argument("--gram-max-n", type=int, default=defaults.GRAM_MAX_N, help="track H(t) on at most this many rows")
    ap.add_argument("--gram-seed", type=int, default=defaults.GRAM_SEED)
    ap.add_argument("--dtype", choices=("float32", "float64"), default=defaults.DTYPE)
    ap.add_argument("--device", default=defaults.DEVICE, help="auto | cpu | cuda | cuda:<i>")
    ap.add_argument("--gpus-held", type=int, default=0, help="GPUs this job holds (Snakemake resources.gpu)")
    ap.add_argument(
        "--pack-size", type=int, default=0, help="most runs batched together; 0: all on a GPU, 1 (one by one) on a CPU"
    )
    ap.add_argument("--sync-every", type=int, default=SYNC_EVERY, help="steps between host copies of the metrics")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--divergence-factor", type=float, default=defaults.DIVERGENCE_FACTOR)
    ap.add_argument("--engine", choices=plan.ENGINES, default=defaults.ENGINE,
                    help="direct (d×m weights), rowspace (exact n×m row-space form) or auto (measured cost rule)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bar on stderr")
    # A packed job also expands Δ0 of its (dataset, width, seed) on the eigenvectors of H∞ and H(0) (the theory
    # stage's modes file): it holds X, W(0) and a already, so the theory stage needs no job of its own for it.
    ap.add_argument("--modes-out", type=Path, help="write the theory modes file of (dataset, width, seed) here")
    ap.add_argument("--spectrum", type=Path, help="ntk stage's spectrum.parquet (with --modes-out)")
    ap.add_argument("--eigvecs", type=Path, help="ntk stage's eigvecs.npy (with --modes-out)")
    return ap


def pack_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The pack's runs from the per-run CLI lists: method, eta_divisor, beta, out, meta (equal lengths; a single
    --beta or --eta-divisor applies to every run)."""
    k = len(args.method)
    lists = {"method": args.method, "beta": args.beta, "out": args.out, "meta": args.meta}
    lists["eta_divisor"] = args.eta_divisor if args.eta_divisor is not None else [None]
    lists["eta"] = args.eta if args.eta is not None else [None]
    for key in ("beta", "eta_divisor", "eta"):
        if len(lists[key]) == 1:
            lists[key] = lists[key] * k
    bad = {key: len(v) for key, v in lists.items() if len(v) != k}
    if bad:
        raise UserError(f"{k} runs (--method) but {bad} values: give one --eta-divisor/--beta/--out/--meta per run")
    outs = [str(p) for p in args.out + args.meta]
    if len(set(outs)) != len(outs):
        raise UserError("--out and --meta name the same file twice; every run needs its own Parquet and sidecar")
    return [{key: lists[key][i] for key in lists} for i in range(k)]


def tracked_lambda0(args: argparse.Namespace, X: np.ndarray, rows: np.ndarray) -> tuple[float, str]:
    """λ0 = λmin(H∞) on the tracked rows: the ntk stage's value when its summary was made for these rows
    (``gram_rows`` record), else computed here (once per job). Returns (λ0, where it came from)."""
    rec = None
    if args.ntk_summary and args.ntk_summary.is_file():
        summary = io.read_record(args.ntk_summary, what="NTK summary", fix=io.rebuild_fix(args.ntk_summary))
        rec = summary.get("gram_rows")
    same_rows = isinstance(rec, dict) and (rec.get("max_n"), rec.get("seed"), rec.get("n")) == (
        args.gram_max_n, args.gram_seed, len(X))
    if same_rows:
        return float(rec["lambda0"]), str(args.ntk_summary)
    return lambda0_of_rows(X, rows), "computed"


@contextlib.contextmanager
def _device(requested: str, gpus_held: int) -> Iterator[tuple[str, float]]:
    """The concrete device ("cpu", or a CUDA device leased through momentum_ntk.lease) and the seconds spent creating
    its CUDA context (0 on the CPU), which the run's wall time leaves out."""
    from momentum_ntk.lease import job_device

    with job_device(requested, gpus_held, "train") as dev:
        if dev == "cpu":
            yield "cpu", 0.0
            return
        t0 = time.perf_counter()
        torch.zeros(1, device=dev)  # CUDA context creation
        torch.cuda.synchronize(dev)
        yield dev, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.width < 1 or args.steps < 0 or args.gram_every < 0 or args.threads < 1:
        raise UserError("--width and --threads must be >= 1, --steps and --gram-every >= 0")
    if args.pack_size < 0 or args.sync_every < 1 or args.gram_max_n < 1:
        raise UserError("--pack-size must be >= 0 (0: automatic), --sync-every and --gram-max-n >= 1")
    modes_args = [args.modes_out, args.spectrum, args.eigvecs]
    if any(v is not None for v in modes_args) and not all(v is not None for v in modes_args):
        raise UserError("--modes-out, --spectrum and --eigvecs go together (the theory modes of this job)")
    torch.set_num_threads(args.threads)
    runs = pack_runs(args)
    for run in runs:
        run["eta"] = learning_rate(args.ntk_summary, run["eta_divisor"], run["eta"])
    X, y = io.read_binarized(args.data)
    n, d = X.shape
    engine = resolve_engine(args.engine, n, d, args.width)
    if engine == "rowspace" and args.modes_out is None:  # X W(0) only: no d×m array (same bits as from W(0))
        W0, a = model.init_preactivations(X, args.width, args.seed)
    else:  # the direct engine, and the theory modes, need W(0) itself
        W0, a = model.init_params(d, args.width, args.seed)
    rows = subsample_rows(n, args.gram_max_n, args.gram_seed)  # the ntk stage's Lemma 2 rows: same instances
    lambda0_rows, lambda0_source = tracked_lambda0(args, X, rows)

    with _device(args.device, args.gpus_held) as (device, cuda_init_s):
        pack_size = args.pack_size or (len(runs) if device.startswith("cuda") else 1)
        t0 = time.perf_counter()
        frames = train_many(
            X,
            y,
            W0,
            a,
            [RunSpec(r["method"], r["eta"], r["beta"]) for r in runs],
            steps=args.steps,
            gram_every=args.gram_every,
            gram_rows=rows,
            dtype=args.dtype,
            device=device,
            divergence_factor=args.divergence_factor,
            progress=args.progress,
            pack_size=pack_size,
            sync_every=args.sync_every,
            engine=engine,
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        env = io.environment_record() | device_record(device)
        if args.modes_out is not None:
            modes_of_job(X, y, W0, a, spectrum=args.spectrum, eigvecs=args.eigvecs, dataset=args.dataset,
                         seed=args.seed, out=args.modes_out, device=device)  # fmt: skip

    steps_total = sum(max(df.attrs["steps_done"], 0) for df in frames)
    for run, df in zip(runs, frames):
        info = dict(df.attrs)
        df.attrs = {}  # Parquet stays free of run metadata (the sidecar has it): same seed, same bytes
        io.write_parquet(run["out"], df)
        io.write_json(
            run["meta"],
            {
                "dataset": args.dataset,
                "method": run["method"],
                "width": args.width,
                "eta_divisor": run["eta_divisor"],
                "eta": run["eta"],
                "beta": run["beta"],
                "seed": args.seed,
                "steps": args.steps,
                "steps_done": info["steps_done"],
                "diverged": info["diverged"],
                "diverged_step": info["diverged_step"],
                "last_finite_loss": info["last_finite_loss"],
                "gram_every": args.gram_every,
                "gram_rows": rows,
                "lambda0_rows": lambda0_rows,
                "lambda0_rows_source": lambda0_source,
                "dtype": args.dtype,
                "engine": info["engine"],
                "tf32": env["tf32"],
                "device": device,
                "threads": args.threads,
                # The pack: every run of this job shares its wall time (the k runs were trained together).
                "pack_size": len(runs),
                "pack_batch": pack_size,
                "wall_s": wall,
                "steps_per_s": steps_total / wall if wall > 0 else None,
                "cuda_init_s": cuda_init_s,
                "environment": env,
                "args": {
                    key: ([str(v) for v in val] if isinstance(val, list) else str(val) if isinstance(val, Path) else val)
                    for key, val in vars(args).items()
                },
            },
        )
        status = f"diverged at step {info['diverged_step']}" if info["diverged"] else "done"
        print(
            f"{run['method']} m={args.width} eta={run['eta']:.4g} beta={run['beta']}: {status}, "
            f"{info['steps_done']} steps, loss {info['last_finite_loss']}",
            file=sys.stderr,
        )
    print(f"{len(runs)} runs, {steps_total} steps in {wall:.1f} s on {device} (batches of {pack_size}, {engine} engine)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
