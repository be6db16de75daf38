"""Readers of the records one stage writes and a later stage reads (docs/CONTRACT.md), and the lookups on them.

Stage modules never import each other: what one stage needs of another's output is read here, checked, with an
error that names the file and the command that rebuilds it. One definition each:

- :func:`read_runs_table`: the aggregate stage's long run table (``results/aggregate/<dataset>/runs.parquet``);
- :func:`read_summary`: its per-setting summary (``summary.parquet``);
- :func:`read_ntk_summary` and :func:`summary_eta`: the ntk stage's ``summary.json`` and the one η lookup in it,
  η = summary['eta'][str(divisor)] = 1/(divisor·λm);
- :func:`load_predictions`: the theory stage's per-run prediction Parquets and their records;
- :func:`read_theory_records`: the same records as one table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from momentum_ntk.compare import PREDICTIONS, TRAJ_COLUMNS, TRAJ_STEPS
from momentum_ntk.dynamics import beta_theorem
from momentum_ntk.errors import UserError
from momentum_ntk.io import read_record, read_table, rebuild_fix
from momentum_ntk.tables import DATASET_RUN_KEYS, RUN_SCHEMA, SETTING_KEYS


def read_runs_table(path: str | Path) -> pd.DataFrame:
    """Read a long table written by the aggregate stage and check it has the :data:`RUN_SCHEMA` columns."""
    fix = rebuild_fix(path)
    table = read_table(path, RUN_SCHEMA.names, what="long run table", fix=fix)
    try:
        table = table.select(RUN_SCHEMA.names).cast(RUN_SCHEMA)
    except (pa.ArrowException, ValueError) as exc:
        raise UserError(f"{path}: columns do not match the long-table schema ({exc}); {fix}") from None
    return table.to_pandas()


def read_ntk_summary(path: str | Path) -> dict:
    """The ntk stage's summary.json with the keys later stages use checked (dataset, lambda0, eta)."""
    return read_record(path, ("dataset", "lambda0", "eta"), what="NTK summary", fix=rebuild_fix(path))


SUMMARY_REQUIRED = (
    *SETTING_KEYS, "eta", "n_seeds", "n_diverged", "last_step_min", "rate_slope_mean", "rate_slope_std", "rate_rho",
    "rate_rho_max", "rate_r2_min", "rate_decades_min", "rate_start_mean", "rate_end_mean", "rate_floor_mean",
    "rate_floor_ratio_max", "rate_coverage_min", "gram_ratio_min", "gram_ratio_min_mean",
)


def read_summary(path: str | Path) -> pd.DataFrame:
    """A per-setting summary Parquet written by the aggregate stage."""
    df = read_table(path, SUMMARY_REQUIRED, what="per-setting summary", fix=rebuild_fix(path)).to_pandas()
    return df


def summary_eta(summary: dict[str, Any], divisor: int, where: str | Path) -> float:
    """η = summary['eta'][str(divisor)] = 1/(divisor·λm): the one lookup of a learning rate (train, theory, claims and
    figures all call it). ``where`` names the summary file in the error."""
    etas = summary.get("eta")
    if not isinstance(etas, dict):
        raise UserError(f"{where}: NTK summary key 'eta' is not an object; {rebuild_fix(where)}")
    key = str(int(divisor))
    if key not in etas:
        raise UserError(
            f"{where}: no learning rate for eta divisor {key} (it has {sorted(etas, key=int)}); "
            f"add {key} to grid.eta_divisors in the config and rerun the ntk stage"
        )
    return float(etas[key])


def learning_rate(summary: Path | None, divisor: int | None, eta: float | None) -> float:
    """``eta`` if given, else :func:`summary_eta` of the NTK summary file ``summary``."""
    if eta is not None:
        return float(eta)
    if summary is None or divisor is None:
        raise UserError("give --ntk-summary and --eta-divisor (η = 1/(divisor·λm)), or an explicit --eta")
    return summary_eta(read_record(summary, ("eta",), what="NTK summary", fix=rebuild_fix(summary)), divisor, summary)


def pick_dataset(datasets: pd.Series, dataset: str | None, where: str) -> str:
    """The dataset to draw: ``dataset`` if ``datasets`` holds it, else the only one present (UserError otherwise)."""
    names = sorted(datasets.unique())
    if dataset is None:
        if len(names) != 1:
            raise UserError(f"{where}: holds datasets {names}; pick one with --dataset")
        return names[0]
    if dataset not in names:
        raise UserError(f"{where}: no dataset {dataset!r} (has {names})")
    return dataset


CURVE_COLUMNS = ("step", "loss_measured", *(f"loss_{p}" for p in PREDICTIONS), "bound_theorem", *TRAJ_COLUMNS.values())


RECORD_KEYS = ("dataset", "method", "width", "eta_divisor", "eta", "beta", "seed", "steps", "lambda0")


@dataclass(frozen=True)
class Predictions:
    """The predictions of one dataset: ``curves`` one row per (run, step) with :data:`RUN` keys and
    :data:`CURVE_COLUMNS`; ``records`` one row per run with the keys and every scalar of its ``.json`` record."""

    dataset: str
    curves: pd.DataFrame
    records: pd.DataFrame


def _read_one(path: Path) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """(record, run key, curves) of one prediction file; UserError naming the file and the fix if unusable."""
    fix, side = rebuild_fix(path), path.with_suffix(".json")
    table = read_table(path, CURVE_COLUMNS, what="prediction file", fix=fix).to_pandas()
    rec = read_record(side, what=f"record of {path}", fix=rebuild_fix(side))
    missing = [k for k in RECORD_KEYS if rec.get(k) is None]
    if missing:
        raise UserError(f"{side}: record lacks key(s) {missing}; {rebuild_fix(side)}")
    if table.empty:
        raise UserError(f"{path}: no rows; {fix}")
    try:
        key = {"method": str(rec["method"]).lower(), "width": int(rec["width"]),
               "eta_divisor": int(rec["eta_divisor"]), "beta": float(rec["beta"]), "seed": int(rec["seed"])}
    except (TypeError, ValueError) as exc:
        raise UserError(f"{side}: malformed record ({exc}); {rebuild_fix(side)}") from None
    return rec, key, table[list(CURVE_COLUMNS)]


def load_predictions(paths: Sequence[str | Path], dataset: str | None = None) -> Predictions:
    """Read prediction Parquets and their records; restrict to ``dataset`` (or the only one present)."""
    recs, frames = [], []
    for p in map(Path, paths):
        rec, key, table = _read_one(p)
        recs.append({"dataset": str(rec["dataset"]), **rec, **key, "path": str(p)})
        frames.append(table.assign(dataset=str(rec["dataset"]), **key))
    if not recs:
        raise UserError("no prediction files given (--pred)")
    records = pd.DataFrame(recs)
    dataset = pick_dataset(records["dataset"], dataset, "--pred")
    dup = records[records["dataset"] == dataset].duplicated(DATASET_RUN_KEYS, keep=False)
    if dup.any():
        clash = records.loc[dup[dup].index, "path"].tolist()
        raise UserError(f"{clash[0]}: the same run (method, width, η, β, seed) is given twice: {clash}")
    curves = pd.concat(frames, ignore_index=True)
    keep_r, keep_c = records["dataset"] == dataset, curves["dataset"] == dataset
    return Predictions(dataset, curves[keep_c].drop(columns="dataset").reset_index(drop=True),
                       records[keep_r].reset_index(drop=True))


THEORY_KEYS = ("dataset", "method", "width", "eta_divisor", "beta", "seed", "eta", "lambda0", "bound_check", "horizon",
               "max_relerr_lin_h0_horizon", "max_relerr_lin_inf_horizon", "max_traj_err_lin_h0_horizon",
               "max_traj_err_lin_inf_horizon", "traj_err_lin_h0_at", "bound_prefactor", "rate_theorem", "loss0")


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def read_theory_record(path: str) -> dict[str, Any]:
    """One run's theory record as a row of :func:`theory_row` (UserError naming the file if unusable)."""
    rec = read_record(path, what="theory record", fix=rebuild_fix(path))
    return theory_row(rec, str(path))


def theory_row(rec: dict[str, Any], path: str = "<record>") -> dict[str, Any]:
    """The numbers claims 5-6 use from one `theory predict --run` record; ``path`` names it in errors."""
    missing = [k for k in THEORY_KEYS if k not in rec]
    if missing:
        hint = (" (it was made without --run)" if "horizon" in missing else
                " (it was made by an older version: rerun the theory stage, `snakemake --forcerun theory_predict`)")
        raise UserError(f"{path}: theory record lacks key(s) {missing}{hint}; {rebuild_fix(path)}")
    bc, margin = rec["bound_check"] or {}, rec.get("bound_margin") or {}
    try:
        at = rec["traj_err_lin_h0_at"] or {}
        return {
            "dataset": str(rec["dataset"]), "method": str(rec["method"]).lower(), "width": int(rec["width"]),
            "eta_divisor": int(rec["eta_divisor"]), "beta": float(rec["beta"]), "seed": int(rec["seed"]),
            "steps_checked": int(bc.get("steps_checked") or 0), "fraction_holds": _nan(bc.get("fraction_holds")),
            "first_violation_step": _nan(bc.get("first_violation_step")),
            "max_measured_over_bound": _nan(margin.get("max_ratio")),
            "violation_loss_ratio": _nan(margin.get("measured_ratio_at_first_violation")),
            "horizon": _nan((rec["horizon"] or {}).get("step")),
            "relerr_h0": _nan(rec["max_relerr_lin_h0_horizon"]),
            "relerr_inf": _nan(rec["max_relerr_lin_inf_horizon"]),
            "traj_h0": _nan(rec["max_traj_err_lin_h0_horizon"]),
            "traj_inf": _nan(rec["max_traj_err_lin_inf_horizon"]),
            **{f"traj_h0_k{k}": _nan(at.get(str(k))) for k in TRAJ_STEPS},
            "bound_prefactor": _nan(rec["bound_prefactor"]), "rate_theorem": _nan(rec["rate_theorem"]),
            "loss0": _nan(rec["loss0"]),
            "beta_theorem": beta_theorem(float(rec["lambda0"]), float(rec["eta"])),
            "path": path,
        }
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: malformed theory record ({exc}); {rebuild_fix(path)}") from None


def read_theory_records(paths: Sequence[str]) -> pd.DataFrame:
    """Every record of ``paths`` as one row (see :func:`read_theory_record`)."""
    return pd.DataFrame([read_theory_record(p) for p in paths])
