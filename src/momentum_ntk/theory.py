"""Predictions for a training run: NTK-linearized discrete dynamics, high-resolution ODEs and the theorem bounds.

Run (two subcommands; the n×n work happens once per (dataset, width, seed), each run's prediction is cheap):

    PYTHONPATH=src python -m momentum_ntk.theory modes --data results/data/D.npz \\
        --spectrum results/ntk/D/spectrum.parquet --eigvecs results/ntk/D/eigvecs.npy \\
        --width M --seed S --out results/theory/D/modes_mM_sS.parquet
    PYTHONPATH=src python -m momentum_ntk.theory predict --modes results/theory/D/modes_mM_sS.parquet \\
        --ntk-summary results/ntk/D/summary.json --method nag --eta-divisor 10 --beta 0.99 \\
        (--run results/runs/D/nag/mM_c10_b0.99_sS.parquet | --steps K) \\
        --out results/theory/D/nag/mM_c10_b0.99_sS.parquet

With ``--run`` the prediction covers the run's own K iterations, the ``steps`` of its sidecar JSON (same stem,
``.json``); ``--steps``, if given too, must agree; without a run (or a run without a sidecar) ``--steps`` gives K.

The maths (the linearized recursion, the high-resolution ODEs and the theorem bounds, per eigenmode of a fixed Gram
matrix) is in momentum_ntk.dynamics; the modes of one initialisation and their file in momentum_ntk.modes; the
comparison with a run in momentum_ntk.compare. This module is the stage: it reads and writes the files.

Rates are always loss exponents per iteration: r such that ℓ(k) ∝ exp(−r k) asymptotically.

Outputs. ``modes``: the modes file of momentum_ntk.modes (Parquet k, lambda_inf, coef_inf, lambda_h0, coef_h0 with a
JSON record under the schema metadata key ``momentum_ntk.theory``; :func:`momentum_ntk.modes.read_modes`).
``predict``: Parquet step int64, time, loss_lin_inf, loss_lin_h0, loss_ode_beta, loss_ode_paper, bound_theorem (+
loss_measured, relerr_<prediction>, and the run's trajectory errors traj_err_h0, traj_err_inf with ``--run``), and a
sidecar ``.json`` (same path) with the asymptotic rates rate_lin_inf, rate_lin_h0, rate_ode_beta, rate_ode_paper,
rate_theorem, the damping constants, the theorem bound's prefactor bound_prefactor (ℓ ≤
bound_prefactor·e^{−rate_theorem·k}), and with ``--run`` rate_measured (fit over steps K/2..K), window_rate_<prediction>
on the same window, max_relerr_<prediction> (whole run), max_relerr_<prediction>_horizon (steps ≤ T),
max_traj_err_lin_h0_horizon / max_traj_err_lin_inf_horizon (sup_{k ≤ T} e(k)), traj_err_lin_h0_at / traj_err_lin_inf_at
(e(k) at k = 100 and 300, null past T), ``horizon`` {step: T, fraction, floor_ratio}, bound_check and bound_margin.

The comparison horizon T (:func:`momentum_ntk.compare.horizon_step`) is the last step ≤ fraction·K (default ½)
before the measured loss first falls below floor_ratio·ℓ(0) (default 1e-4): relative errors near a numerical floor or
after a divergence say nothing about the dynamics.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import defaults, io, methods
from momentum_ntk.compare import (
    HORIZON_FLOOR_RATIO,
    TRAJ_COLUMNS,
    attach_run,
    comparison_record,
    predict_table,
    prediction_rates,
)
from momentum_ntk.dynamics import theorem_constants
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.modes import load_ntk, modes_of_job, read_modes
from momentum_ntk.records import summary_eta

# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------


def cmd_modes(args: argparse.Namespace) -> int:
    from momentum_ntk import model

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be a positive integer")
        torch.set_num_threads(args.threads)
    X, y = io.read_binarized(args.data)
    load_ntk(args.spectrum, args.eigvecs, X.shape[0])  # a bad spectrum stops before the lease
    W0, a = model.init_params(X.shape[1], args.width, args.seed)
    from momentum_ntk.lease import job_device  # a GPU job gets a device no concurrent job holds

    with job_device(args.device, args.gpus_held, "theory_modes") as device:
        modes_of_job(X, y, W0, a, spectrum=args.spectrum, eigvecs=args.eigvecs, dataset=Path(args.data).stem,
                     seed=args.seed, out=args.out, device=device)  # fmt: skip
    return 0


def _read_run_sidecar(run_path: Path) -> dict[str, Any] | None:
    """The run's sidecar JSON when there is one (UserError if it does not parse)."""
    side = run_path.with_suffix(".json")
    if not side.is_file():
        return None
    return io.read_record(side, what=f"sidecar JSON of run {run_path}", fix=io.rebuild_fix(side))


MEASURED_COLUMNS = ["step", "loss", *TRAJ_COLUMNS.values()]


def read_run(run: str | Path) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Columns step, loss, traj_err_h0, traj_err_inf of a run Parquet file, and its sidecar record (None when there
    is none; UserError when either does not read)."""
    run_path = Path(run)
    fix = io.rebuild_fix(run_path)
    measured = io.read_table(run_path, MEASURED_COLUMNS, what="run Parquet file", fix=fix)
    measured = measured.select(MEASURED_COLUMNS).to_pandas()
    if measured.empty:
        raise UserError(f"{run_path}: run Parquet file has no rows; {fix}")
    return measured, _read_run_sidecar(run_path)


def run_steps(run: str | None, sidecar: dict[str, Any] | None, given: int | None) -> int:
    """The iteration count K of one prediction: the run's own (its sidecar's ``steps``) when there is one, else
    ``--steps``; UserError when neither says or the two disagree."""
    recorded = None if sidecar is None else sidecar.get("steps")
    if recorded is None:
        if given is None:
            where = f"{run} has no sidecar with 'steps'" if run else "no --run is given"
            raise UserError(f"{where}: give --steps (the run's iterations, the config's train.steps)")
        steps = given
    else:
        side = Path(run).with_suffix(".json")
        if isinstance(recorded, bool) or not isinstance(recorded, int):
            raise UserError(f"{side}: steps={recorded!r} is not an integer; {io.rebuild_fix(side)}")
        if given is not None and given != recorded:
            raise UserError(f"--steps {given} but the run's sidecar {side} has steps={recorded}; pass the matching run "
                            "or drop --steps")
        steps = recorded
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    return steps


def _check_run_sidecar(side: Path, rec: dict[str, Any], want: dict[str, Any]) -> None:
    for key, val in want.items():
        got = rec.get(key)
        if got is None or val is None:
            continue
        same = math.isclose(float(got), float(val), rel_tol=1e-9) if isinstance(val, float) else got == val
        if not same:
            raise UserError(f"{side}: {key}={got!r} but the prediction uses {key}={val!r}; pass the matching run")


def _finite_or_none(obj: Any) -> Any:
    """The record with every NaN / ±inf float replaced by None, so the sidecar is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        return None
    return obj


def cmd_predict(args: argparse.Namespace) -> int:
    """Predictions for every run given (one --method/--eta-divisor/--beta/--out, and --run, per run): the runs of a
    pack share the modes of their (dataset, width, seed), read once. With --run, each prediction covers the run's own
    steps (its sidecar's ``steps``); --steps, when given too, must agree."""
    modes, meta = read_modes(args.modes)
    fix = io.rebuild_fix(args.ntk_summary)
    summary = io.read_record(args.ntk_summary, ("lambda0", "eta"), what="NTK summary", fix=fix)
    k = len(args.method)
    runs = args.run if args.run else [None] * k
    lists = {"--eta-divisor": args.eta_divisor, "--beta": args.beta, "--out": args.out, "--run": runs}
    bad = {key: len(v) for key, v in lists.items() if len(v) != k}
    if bad:
        raise UserError(f"{k} runs (--method) but {bad} values: give one --eta-divisor/--beta/--out/--run per run")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not 0.0 < args.horizon_fraction <= 1.0 or not 0.0 <= args.horizon_floor_ratio < 1.0:
        raise UserError(
            f"--horizon-fraction must lie in (0, 1] and --horizon-floor-ratio in [0, 1), got "
            f"{args.horizon_fraction} and {args.horizon_floor_ratio}"
        )
    # every run file is read before any output is written: a corrupt one stops the pack with nothing written
    read = [read_run(run) if run else (None, None) for run in runs]
    steps = [run_steps(run, side, args.steps) for run, (_, side) in zip(runs, read)]
    per_run = zip(args.method, args.eta_divisor, args.beta, args.out, runs, read, steps)
    for method, divisor, beta, out, run, (meas, side), n_steps in per_run:
        predict_one(args, modes, meta, summary, method, divisor, beta, Path(out), n_steps, run, meas, side)
    return 0


def predict_one(
    args: argparse.Namespace,
    modes: pd.DataFrame,
    meta: dict[str, Any],
    summary: dict[str, Any],
    method: str,
    eta_divisor: int,
    beta: float,
    out: Path,
    steps: int,
    run: str | None = None,
    measured: pd.DataFrame | None = None,
    sidecar: dict[str, Any] | None = None,
) -> None:
    """One run's prediction Parquet and rates record (``out`` and ``out`` with suffix .json) over steps 0..``steps``;
    with ``run``, compared with its ``measured`` frame and checked against its ``sidecar`` (:func:`read_run`)."""
    try:
        lambda0 = float(summary["lambda0"])
    except KeyError as exc:
        raise UserError(f"{args.ntk_summary} lacks key {exc}; rerun the ntk stage") from None
    eta = summary_eta(summary, eta_divisor, args.ntk_summary)
    beta = methods.check_beta(beta)
    kw = {"method": method, "eta": eta, "beta": beta, "lambda0": lambda0, "ode_gram": args.ode_gram}
    table = predict_table(modes, pseudo_loss0=meta["pseudo_loss0"], steps=steps, **kw)
    rec: dict[str, Any] = {
        "dataset": meta.get("dataset"),
        "method": method,
        "width": meta.get("width"),
        "seed": meta.get("seed"),
        "eta_divisor": eta_divisor,
        "eta": eta,
        "s": eta,
        "beta": beta,
        "steps": steps,
        "lambda0": lambda0,
        "ode_gram": args.ode_gram,
        "loss0": meta["loss0"],
        "pseudo_loss0": meta["pseudo_loss0"],
        "lambda_min_h0": meta["lambda_min_h0"],
        "bound_prefactor": theorem_constants(method, lambda0, eta, meta["pseudo_loss0"])[0],
        "rate_units": "loss exponent per iteration: loss(k) ~ exp(-rate * k)",
        **prediction_rates(modes, **kw),
    }
    if run:
        run_path = Path(run)
        if measured is None:
            measured, sidecar = read_run(run_path)
        if sidecar is not None:
            _check_run_sidecar(
                run_path.with_suffix(".json"),
                sidecar,
                {"method": method, "eta": eta, "beta": beta, "width": meta.get("width"), "seed": meta.get("seed")},
            )
        table = attach_run(table, measured)
        window = (steps // 2, steps)
        rec["run"] = str(run_path)
        rec |= comparison_record(table, window, args.horizon_fraction, args.horizon_floor_ratio)
        rec["rate_measured"] = rec["window_rate_measured"]
    io.write_parquet(out, table)
    io.write_json(out.with_suffix(".json"), _finite_or_none(rec))
    print(
        f"predict: {method} eta={eta:.4g} beta={beta} steps={steps} rates/iter "
        f"lin_h0={rec['rate_lin_h0']:.4g} lin_inf={rec['rate_lin_inf']:.4g} -> {out}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m momentum_ntk.theory", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("modes", help="Δ0 of one (dataset, width, seed) on the eigenvectors of H∞ and of H(0)")
    m.add_argument("--data", required=True, help="results/data/{dataset}.npz (X, y)")
    m.add_argument("--spectrum", required=True, help="results/ntk/{dataset}/spectrum.parquet (column eigenvalue)")
    m.add_argument("--eigvecs", required=True, help="results/ntk/{dataset}/eigvecs.npy (n×n, columns)")
    m.add_argument("--width", type=int, required=True)
    m.add_argument("--seed", type=int, required=True)
    m.add_argument("--device", default="cpu", help="auto, cpu or cuda: device for H(0) and its eigh (default cpu)")
    m.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    m.add_argument("--gpus-held", type=int, default=0, help="GPUs this job holds (Snakemake resources.gpu)")
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_modes)
    q = sub.add_parser("predict", help="linearized, ODE and theorem-bound loss curves for one run")
    q.add_argument("--modes", required=True, help="results/theory/{dataset}/modes_m{width}_s{seed}.parquet")
    q.add_argument("--ntk-summary", required=True, help="results/ntk/{dataset}/summary.json")
    # One value per run (the runs of a pack share the modes); a single value each is one run.
    q.add_argument("--method", choices=methods.names(), nargs="+", required=True)
    q.add_argument("--eta-divisor", type=int, nargs="+", required=True, help="η = summary.eta[str(divisor)]")
    q.add_argument("--beta", type=float, nargs="+", required=True)
    q.add_argument(
        "--steps",
        type=int,
        default=None,
        help="iterations K of the runs; with --run each run's own (its sidecar's 'steps'), which a given value must "
        "equal; needed without a run or a sidecar",
    )
    q.add_argument("--ode-gram", choices=("inf", "h0"), default="inf", help="Gram matrix of the ODE columns")
    q.add_argument("--run", nargs="+", help="run Parquet files (step, loss) to compare against, one per run")
    q.add_argument(
        "--horizon-fraction",
        type=float,
        default=defaults.THEORY_HORIZON,
        help="with --run: relative errors are also taken up to T <= this fraction of the run (default %(default)s)",
    )
    q.add_argument(
        "--horizon-floor-ratio",
        type=float,
        default=HORIZON_FLOOR_RATIO,
        help="with --run: T also ends before the measured loss first falls below this times loss(0) (default "
        "%(default)s)",
    )
    q.add_argument(
        "--out", nargs="+", required=True, help="prediction Parquet per run; its rates record goes to the same path .json"
    )
    q.set_defaults(func=cmd_predict)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(cli(main))
