"""Predictions for a training run: NTK-linearized discrete dynamics, high-resolution ODEs and the theorem bounds.

Run (two subcommands; the n×n work happens once per (dataset, width, seed), each run's prediction is cheap):

    PYTHONPATH=src python -m momentum_ntk.theory modes --data results/data/D.npz \\
        --spectrum results/ntk/D/spectrum.parquet --eigvecs results/ntk/D/eigvecs.npy \\
        --width M --seed S --out results/theory/D/modes_mM_sS.parquet
    PYTHONPATH=src python -m momentum_ntk.theory predict --modes results/theory/D/modes_mM_sS.parquet \\
        --ntk-summary results/ntk/D/summary.json --method nag --eta-divisor 10 --beta 0.99 --steps T \\
        [--run results/runs/D/nag/mM_c10_b0.99_sS.parquet] --out results/theory/D/nag/mM_c10_b0.99_sS.parquet

The maths (the linearized recursion, the high-resolution ODEs and the theorem bounds, per eigenmode of a fixed Gram
matrix) is in momentum_ntk.dynamics; the comparison with a run in momentum_ntk.compare. This module is the stage: it
reads and writes the files, and re-exports both for callers.

Rates are always loss exponents per iteration: r such that ℓ(k) ∝ exp(−r k) asymptotically.

Outputs. ``modes``: Parquet k int64, lambda_inf, coef_inf, lambda_h0, coef_h0 float64 (row k: k-th smallest eigenvalue
of H∞ resp. H(0) and Δ_0's coefficient on its eigenvector), with a JSON record under the schema metadata key
``momentum_ntk.theory`` (n, d, width, seed, dataset, loss0, pseudo_loss0 = ℓ̂(0), lambda_min_h0, lambda_max_h0,
lambda_min_inf); read it back with :func:`read_modes`. ``predict``: Parquet step int64, time, loss_lin_inf,
loss_lin_h0, loss_ode_beta, loss_ode_paper, bound_theorem (+ loss_measured, relerr_<prediction>, and the run's
trajectory errors traj_err_h0, traj_err_inf with ``--run``), and a sidecar ``.json`` (same path) with the asymptotic
rates rate_lin_inf, rate_lin_h0, rate_ode_beta, rate_ode_paper, rate_theorem, the damping constants, the theorem
bound's prefactor bound_prefactor (ℓ ≤ bound_prefactor·e^{−rate_theorem·k}), and with ``--run`` rate_measured (fit over
steps K/2..K, K = --steps), window_rate_<prediction> on the same window, max_relerr_<prediction> (whole run),
max_relerr_<prediction>_horizon (steps ≤ T), max_traj_err_lin_h0_horizon / max_traj_err_lin_inf_horizon
(sup_{k ≤ T} e(k)), traj_err_lin_h0_at / traj_err_lin_inf_at (e(k) at k = 100 and 300, null past T), ``horizon``
{step: T, fraction, floor_ratio}, bound_check and bound_margin.

The comparison horizon T (:func:`horizon_step`) is the last step ≤ fraction·K (default ½) before the measured loss first
falls below floor_ratio·ℓ(0) (default 1e-4): relative errors near a numerical floor or after a divergence say nothing
about the dynamics.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import io, methods
from momentum_ntk.compare import *  # noqa: F403  (the comparison functions, re-exported)
from momentum_ntk.compare import (  # noqa: F401  (PREDICTIONS re-exported)
    HORIZON_FLOOR_RATIO,
    HORIZON_FRACTION,
    PREDICTIONS,
    TRAJ_COLUMNS,
    attach_run,
    comparison_record,
    mode_table,
    predict_table,
    prediction_rates,
)
from momentum_ntk.dynamics import *  # noqa: F403  (the pure dynamics, re-exported)
from momentum_ntk.dynamics import theorem_constants
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.methods import alpha_thm2, rho_nag  # noqa: F401  (re-exported: the theorem constants)

MODES_META_KEY = b"momentum_ntk.theory"


# ----------------------------------------------------------------------------------------------------------------------
# File I/O and CLI
# ----------------------------------------------------------------------------------------------------------------------


def write_modes(path: str | Path, table: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write the mode table with ``meta`` as JSON under the Parquet schema metadata key ``momentum_ntk.theory``."""
    import pyarrow as pa

    tab = pa.Table.from_pandas(table, preserve_index=False)
    tab = tab.replace_schema_metadata({MODES_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    io.write_parquet(path, tab)


MODES_COLUMNS = ("k", "lambda_inf", "coef_inf", "lambda_h0", "coef_h0")
MODES_META_KEYS = ("loss0", "pseudo_loss0", "lambda_min_h0")


def read_modes(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mode table and its metadata record (see :func:`mode_table`)."""
    fix = io.rebuild_fix(path)
    tab = io.read_table(path, MODES_COLUMNS, what="modes file", fix=fix)
    raw = (tab.schema.metadata or {}).get(MODES_META_KEY)
    if raw is None:
        raise UserError(f"{path}: modes file has no '{MODES_META_KEY.decode()}' metadata; {fix}")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"{path}: modes file metadata is not valid JSON ({exc}); {fix}") from None
    missing = [k for k in MODES_META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise UserError(f"{path}: modes file metadata lacks key(s) {missing}; {fix}")
    return tab.to_pandas(), meta


def _load_ntk(spectrum: str, eigvecs: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    table = io.read_table(spectrum, ["eigenvalue"], what="NTK spectrum", fix=io.rebuild_fix(spectrum))
    lam = table.to_pandas()["eigenvalue"].to_numpy(dtype=np.float64)
    V = io.read_npy(eigvecs, what="NTK eigenvectors", fix=io.rebuild_fix(eigvecs), mmap_mode="r")
    if lam.shape != (n,) or V.shape != (n, n):
        raise UserError(
            f"{spectrum} / {eigvecs} have {lam.shape[0]} eigenvalues and shape {V.shape}, but the data has n={n}: "
            "they belong to another dataset or preset; rerun the ntk stage for this dataset"
        )
    if np.any(np.diff(lam) < 0):
        raise UserError(f"{spectrum}: 'eigenvalue' must be ascending (columns of eigvecs.npy in the same order)")
    return lam, V


def modes_of_job(X: np.ndarray, y: np.ndarray, W0: np.ndarray, a: np.ndarray, *, spectrum: str | Path,
                 eigvecs: str | Path, dataset: str, seed: int, out: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Expand Δ0 of one (dataset, width, seed) on H∞'s and H(0)'s eigenvectors (:func:`mode_table`) and write the
    modes file; returns its metadata record. The one path from a job's arrays to the modes file: the theory stage's
    ``modes`` command and a packed train job (which holds X, W(0) and a already) both call it."""
    lam, V = _load_ntk(str(spectrum), str(eigvecs), X.shape[0])
    table, meta = mode_table(X, y, W0, a, lam, V, device=device)
    if abs(meta["coef_norm_ratio_inf"] - 1.0) > 1e-3:
        raise UserError(
            f"{eigvecs}: ‖Vᵀ Δ0‖/‖Δ0‖ = {meta['coef_norm_ratio_inf']:.6f}, not 1; the columns are not "
            f"orthonormal eigenvectors of this dataset's H∞; {io.rebuild_fix(eigvecs)}"
        )
    meta |= {"dataset": dataset, "seed": int(seed)}
    write_modes(out, table, meta)
    print(
        f"modes: n={meta['n']} m={W0.shape[1]} seed={seed} loss0={meta['loss0']:.6g} "
        f"pseudo_loss0={meta['pseudo_loss0']:.6g} lambda_min(H0)={meta['lambda_min_h0']:.4g} -> {out}",
        file=sys.stderr,
    )
    return meta


def cmd_modes(args: argparse.Namespace) -> int:
    from momentum_ntk import model

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be a positive integer")
        torch.set_num_threads(args.threads)
    X, y = io.read_binarized(args.data)
    _load_ntk(args.spectrum, args.eigvecs, X.shape[0])  # a bad spectrum stops before the lease
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


def read_measured(run: str | Path) -> pd.DataFrame:
    """Columns step, loss, traj_err_h0, traj_err_inf of a run Parquet file; its sidecar, if present, must parse too
    (UserError otherwise)."""
    run_path = Path(run)
    fix = io.rebuild_fix(run_path)
    measured = io.read_table(run_path, MEASURED_COLUMNS, what="run Parquet file", fix=fix)
    measured = measured.select(MEASURED_COLUMNS).to_pandas()
    if measured.empty:
        raise UserError(f"{run_path}: run Parquet file has no rows; {fix}")
    _read_run_sidecar(run_path)
    return measured


def _check_run_sidecar(run_path: Path, want: dict[str, Any]) -> None:
    side = run_path.with_suffix(".json")
    rec = _read_run_sidecar(run_path)
    if rec is None:
        return
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
    pack share the modes of their (dataset, width, seed), read once."""
    modes, meta = read_modes(args.modes)
    fix = io.rebuild_fix(args.ntk_summary)
    summary = io.read_record(args.ntk_summary, ("lambda0", "eta"), what="NTK summary", fix=fix)
    k = len(args.method)
    runs = args.run if args.run else [None] * k
    lists = {"--eta-divisor": args.eta_divisor, "--beta": args.beta, "--out": args.out, "--run": runs}
    bad = {key: len(v) for key, v in lists.items() if len(v) != k}
    if bad:
        raise UserError(f"{k} runs (--method) but {bad} values: give one --eta-divisor/--beta/--out/--run per run")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not 0.0 < args.horizon_fraction <= 1.0 or not 0.0 <= args.horizon_floor_ratio < 1.0:
        raise UserError(
            f"--horizon-fraction must lie in (0, 1] and --horizon-floor-ratio in [0, 1), got "
            f"{args.horizon_fraction} and {args.horizon_floor_ratio}"
        )
    # every run file is read before any output is written: a corrupt one stops the pack with nothing written
    measured = [read_measured(run) if run else None for run in runs]
    per_run = zip(args.method, args.eta_divisor, args.beta, args.out, runs, measured)
    for method, divisor, beta, out, run, meas in per_run:
        predict_one(args, modes, meta, summary, method, divisor, beta, Path(out), run, meas)
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
    run: str | None,
    measured: pd.DataFrame | None = None,
) -> None:
    """One run's prediction Parquet and rates record (``out`` and ``out`` with suffix .json); ``measured``: the
    run's step and loss when already read (:func:`read_measured`)."""
    try:
        lambda0 = float(summary["lambda0"])
        eta_map = summary["eta"]
    except KeyError as exc:
        raise UserError(f"{args.ntk_summary} lacks key {exc}; rerun the ntk stage") from None
    if str(eta_divisor) not in eta_map:
        raise UserError(
            f"{args.ntk_summary} has no eta for divisor {eta_divisor} (has {sorted(eta_map)}); "
            "add it to eta_divisors in the config and rerun the ntk stage"
        )
    eta = float(eta_map[str(eta_divisor)])
    if not 0.0 <= beta < 1.0:
        raise UserError(f"--beta must lie in [0, 1), got {beta}")
    kw = {"method": method, "eta": eta, "beta": beta, "lambda0": lambda0, "ode_gram": args.ode_gram}
    table = predict_table(modes, pseudo_loss0=meta["pseudo_loss0"], steps=args.steps, **kw)
    rec: dict[str, Any] = {
        "dataset": meta.get("dataset"),
        "method": method,
        "width": meta.get("width"),
        "seed": meta.get("seed"),
        "eta_divisor": eta_divisor,
        "eta": eta,
        "s": eta,
        "beta": beta,
        "steps": args.steps,
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
            measured = read_measured(run_path)
        _check_run_sidecar(
            run_path,
            {"method": method, "eta": eta, "beta": float(beta), "width": meta.get("width"), "seed": meta.get("seed")},
        )
        table = attach_run(table, measured)
        window = (args.steps // 2, args.steps)
        rec["run"] = str(run_path)
        rec |= comparison_record(table, window, args.horizon_fraction, args.horizon_floor_ratio)
        rec["rate_measured"] = rec["window_rate_measured"]
    io.write_parquet(out, table)
    io.write_json(out.with_suffix(".json"), _finite_or_none(rec))
    print(
        f"predict: {method} eta={eta:.4g} beta={beta} steps={args.steps} rates/iter "
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
    q.add_argument("--steps", type=int, required=True)
    q.add_argument("--ode-gram", choices=("inf", "h0"), default="inf", help="Gram matrix of the ODE columns")
    q.add_argument("--run", nargs="+", help="run Parquet files (step, loss) to compare against, one per run")
    q.add_argument(
        "--horizon-fraction",
        type=float,
        default=HORIZON_FRACTION,
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
