"""Per-run Parquet files -> one long, typed table per dataset, and per-setting summaries.

Run (one dataset)::

    PYTHONPATH=src python -m momentum_ntk.aggregate \\
        --runs results/runs/mnist/*/*.parquet \\
        --out results/aggregate/mnist/runs.parquet \\
        --summary results/aggregate/mnist/summary.parquet --summary-csv results/aggregate/mnist/summary.csv \\
        [--report-steps 100 500 1000] [--decades 10]

Concatenate the per-dataset long tables::

    PYTHONPATH=src python -m momentum_ntk.aggregate --concat results/aggregate/*/runs.parquet \\
        --out results/aggregate/all_runs.parquet

Long table (:data:`RUN_SCHEMA`): one row per (run, step); the run's parameters come from the sidecar ``.json`` next to
its ``.parquet`` (same stem, docs/CONTRACT.md). ``diverged`` is the run-level flag of the sidecar, repeated on every
row of that run. Sorted by (dataset, method, width, eta_divisor, beta, seed, step).

Summary: one row per setting (dataset, method, width, eta_divisor, beta); the columns are listed in
:func:`summarize`. The linear-rate fit (:func:`fit_linear_rate`, a least-squares line through the log of the running
minimum of the loss, robust to the oscillation of momentum methods) is done per seed and then averaged.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from momentum_ntk import defaults, methods
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.io import atomic_path, read_record, read_table, rebuild_fix, write_parquet
from momentum_ntk.records import read_runs_table
from momentum_ntk.names import with_beta_text

from momentum_ntk.rates import fit_runs, loss_at, steps_to_fraction
from momentum_ntk.tables import (
    PAIR_KEYS,
    RUN_COLUMNS,
    RUN_KEYS,
    RUN_SCHEMA,
    SETTING_KEYS,
    SIDECAR_KEYS,
    SORT_KEYS,
)

DEFAULT_DECADES = 10


# --------------------------------------------------------------------------------------------------------------------
# Reading runs


def sidecar_path(run_parquet: str | Path) -> Path:
    """The sidecar JSON of a run Parquet file: same folder, same stem."""
    p = Path(run_parquet)
    return p.with_suffix(".json")


def load_run(path: str | Path) -> pd.DataFrame:
    """One run's rows with its sidecar parameters attached as columns (not yet typed; see :func:`runs_to_arrow`)."""
    path = Path(path)
    fix = f"{rebuild_fix(path)}, or drop it from --runs"
    table = read_table(path, RUN_COLUMNS, what="run Parquet file", fix=fix)
    side = sidecar_path(path)
    meta = read_record(side, SIDECAR_KEYS, what=f"sidecar JSON of run {path}", fix=rebuild_fix(side))
    df = table.select(list(RUN_COLUMNS)).to_pandas()
    for col in RUN_COLUMNS[1:]:
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise UserError(f"{path}: column {col!r} has dtype {df[col].dtype}, expected float64; {fix}")
    if not pd.api.types.is_integer_dtype(df["step"]):
        raise UserError(f"{path}: column 'step' has dtype {df['step'].dtype}, expected int64; {fix}")
    if len(df) == 0:
        raise UserError(f"{path}: run has no rows; {fix}")
    for key in SIDECAR_KEYS:
        value = meta[key]
        df[key] = np.nan if value is None and key == "lambda0_rows" else value
    return df


def runs_to_arrow(df: pd.DataFrame) -> pa.Table:
    """Cast a long DataFrame to :data:`RUN_SCHEMA` (sorted), failing loudly on a column that will not cast."""
    df = df.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    try:
        table = pa.Table.from_pandas(df[RUN_SCHEMA.names], schema=RUN_SCHEMA, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise UserError(f"run table does not fit the long-table schema ({exc}); check the run sidecars") from exc
    return table.replace_schema_metadata()


def build_runs_table(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read every run and its sidecar into one sorted long DataFrame with the dtypes of :data:`RUN_SCHEMA`."""
    frames = [load_run(p) for p in paths]
    if not frames:
        raise UserError("no run files given; pass run Parquet files with --runs")
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(SORT_KEYS)
    if dup.any():
        row = df.loc[dup, SORT_KEYS].iloc[0].to_dict()
        raise UserError(f"two run files describe the same run and step {row}; pass each run once")
    return runs_to_arrow(df).to_pandas()


def concat_tables(paths: Sequence[str | Path]) -> pa.Table:
    """Concatenate per-dataset long tables (each a different dataset) into one sorted table."""
    if not paths:
        raise UserError("no tables given to --concat")
    frames = []
    seen: dict[str, Path] = {}
    for p in paths:
        df = read_runs_table(p)
        for ds in df["dataset"].unique():
            if ds in seen:
                raise UserError(f"{p}: dataset {ds!r} already came from {seen[ds]}; pass each dataset once")
            seen[ds] = Path(p)
        frames.append(df)
    return runs_to_arrow(pd.concat(frames, ignore_index=True))


# --------------------------------------------------------------------------------------------------------------------
# Per-run and per-setting numbers


def decade_label(k: int) -> str:
    return f"1e-{k}"


def _per_run_numbers(runs: pd.DataFrame, report_steps: Sequence[int], decades: int) -> pd.DataFrame:
    rows = []
    for key, g in runs.groupby(RUN_KEYS, sort=True):
        st, lo = g["step"].to_numpy(), g["loss"].to_numpy()
        ratio = g["lambda_min_H"].to_numpy() / g["lambda0_rows"].to_numpy()
        row = {**dict(zip(RUN_KEYS, key)), "eta": float(g["eta"].iloc[0]), "diverged": bool(g["diverged"].iloc[0])}
        row["last_step"] = int(st[-1])
        for s in report_steps:
            row[f"loss_t{s}"] = loss_at(st, lo, s)
        for k in range(1, decades + 1):
            row[f"steps_to_{decade_label(k)}"] = steps_to_fraction(st, lo, 10.0**-k)
        row["max_dist_final"] = float(g["max_dist"].iloc[-1])
        row["max_dist_max"] = float(np.nanmax(g["max_dist"].to_numpy())) if g["max_dist"].notna().any() else math.nan
        row["gram_ratio_min"] = float(np.nanmin(ratio)) if np.isfinite(ratio).any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _std(x: pd.Series) -> float:
    """Sample standard deviation over seeds (ddof=1); 0 for a single seed, NaN for none."""
    x = x.dropna()
    return float(x.std(ddof=1)) if len(x) > 1 else (0.0 if len(x) == 1 else math.nan)


# The seed-paired loss ratio columns of the summary: nag_hb_ratio_{gmean,min,max}_t{S} (accelerated / baseline).
PAIR_RATIO = f"{methods.ACCELERATED}_{methods.BASELINE}_ratio"


def _paired_ratios(per_run: pd.DataFrame, report_steps: Sequence[int]) -> pd.DataFrame:
    """Per (dataset, width, eta_divisor, beta, seed): the accelerated method's loss / the baseline's (NAG / HB,
    methods.ACCELERATED / methods.BASELINE) at each report step."""
    cols = [f"loss_t{s}" for s in report_steps]
    method = per_run["method"].str.lower()
    acc = per_run[method == methods.ACCELERATED].set_index([*PAIR_KEYS, "seed"])[cols]
    base = per_run[method == methods.BASELINE].set_index([*PAIR_KEYS, "seed"])[cols]
    common = acc.index.intersection(base.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = acc.loc[common] / base.loc[common]
    return ratio.reset_index()


def summarize(
    runs: pd.DataFrame, report_steps: Sequence[int] = defaults.REPORT_STEPS, decades: int = DEFAULT_DECADES
) -> pd.DataFrame:
    """One row per setting (dataset, method, width, eta_divisor, beta). Columns:

    - ``eta``, ``n_seeds``, ``n_diverged``, ``last_step_min`` (shortest run in the setting)
    - ``loss_mean_t{S}``, ``loss_std_t{S}``: mean / sample std over seeds of the loss at report step S (seeds whose
      run ended before S are skipped; NaN if none reached S)
    - ``steps_to_1e-{k}``: mean over the seeds that got there of the first step with ℓ ≤ ℓ(0)·10^-k (NaN if none did);
      ``n_reached_1e-{k}``: how many seeds got there
    - ``rate_slope_mean``, ``rate_slope_std``: per-seed fitted slope of log L vs step, L the running minimum of the
      loss (:func:`fit_linear_rate`); ``rate_rho`` = exp(rate_slope_mean), ``rate_rho_min``, ``rate_rho_max`` over
      seeds; ``rate_r2_min``, ``rate_rms_max`` (of the fit to log L), ``rate_decades_min``, ``rate_start_mean``,
      ``rate_end_mean``, ``rate_floor_mean`` (mean over the seeds with a detected floor), ``rate_floor_ratio_max``
      (highest floor level / ℓ(0); NaN: no floor), ``rate_coverage_min`` (worst seed's window length / steps before its
      floor or run end), ``rate_n_within_tol`` (seeds whose envelope fit has RMS ≤ the tolerance);
      ``rate_raw_slope_mean``, ``rate_raw_r2_min``: the same fit to log ℓ itself over the same windows (for
      comparison; oscillation makes it unreliable); ``rate_osc_decades_max``: largest rise of the loss above its
      running minimum inside a window, in decades (how strongly the loss oscillates)
    - ``nag_hb_ratio_gmean_t{S}``, ``nag_hb_ratio_min_t{S}``, ``nag_hb_ratio_max_t{S}``, ``n_pairs``: on NAG rows only
      (NaN elsewhere), the seed-paired ratio ℓ_NAG(S)/ℓ_HB(S) (methods.ACCELERATED / methods.BASELINE) of the same
      (width, eta_divisor, beta, seed): geometric mean, min and max over seeds
    - ``max_dist_final_mean``, ``max_dist_final_std``, ``max_dist_max_mean``, ``max_dist_max_max``
    - ``gram_ratio_min``: min over seeds and tracked steps of lambda_min_H / lambda0_rows; ``gram_ratio_min_mean``:
      mean over seeds of each seed's minimum
    """
    report_steps = [int(s) for s in report_steps]
    per_run = _per_run_numbers(runs, report_steps, decades)
    fits = fit_runs(runs).set_index(RUN_KEYS)
    per_run = per_run.join(fits[["slope", "rho", "r2", "rms", "decades", "start_step", "end_step", "floor_step",
                                 "floor_ratio", "within_tol", "raw_slope", "raw_r2", "osc_decades"]], on=RUN_KEYS)
    horizon = per_run["floor_step"].where(np.isfinite(per_run["floor_step"]), per_run["last_step"])
    per_run["coverage"] = (per_run["end_step"] - per_run["start_step"]) / horizon.where(horizon > 0)
    ratios = _paired_ratios(per_run, report_steps)
    rows = []
    for key, g in per_run.groupby(SETTING_KEYS, sort=True):
        row = dict(zip(SETTING_KEYS, key))
        row["eta"] = float(g["eta"].iloc[0])
        row["n_seeds"] = int(len(g))
        row["n_diverged"] = int(g["diverged"].sum())
        row["last_step_min"] = int(g["last_step"].min())
        for s in report_steps:
            row[f"loss_mean_t{s}"] = float(g[f"loss_t{s}"].mean())
            row[f"loss_std_t{s}"] = _std(g[f"loss_t{s}"])
        for k in range(1, decades + 1):
            col = g[f"steps_to_{decade_label(k)}"]
            row[f"steps_to_{decade_label(k)}"] = float(col.mean())
            row[f"n_reached_{decade_label(k)}"] = int(col.notna().sum())
        row["rate_slope_mean"] = float(g["slope"].mean())
        row["rate_slope_std"] = _std(g["slope"])
        row["rate_rho"] = math.exp(row["rate_slope_mean"]) if math.isfinite(row["rate_slope_mean"]) else math.nan
        row["rate_rho_min"] = float(g["rho"].min())
        row["rate_rho_max"] = float(g["rho"].max())
        row["rate_r2_min"] = float(g["r2"].min())
        row["rate_rms_max"] = float(g["rms"].max())
        row["rate_decades_min"] = float(g["decades"].min())
        row["rate_start_mean"] = float(g["start_step"].mean())
        row["rate_end_mean"] = float(g["end_step"].mean())
        row["rate_floor_mean"] = float(g["floor_step"].mean())
        row["rate_floor_ratio_max"] = float(g["floor_ratio"].max())
        row["rate_coverage_min"] = float(g["coverage"].min())
        row["rate_n_within_tol"] = int(g["within_tol"].sum())
        row["rate_raw_slope_mean"] = float(g["raw_slope"].mean())
        row["rate_raw_r2_min"] = float(g["raw_r2"].min())
        row["rate_osc_decades_max"] = float(g["osc_decades"].max())
        is_acc = str(key[1]).lower() == methods.ACCELERATED
        pair = ratios.loc[(ratios[PAIR_KEYS] == [key[0], key[2], key[3], key[4]]).all(axis=1)] if is_acc else None
        row["n_pairs"] = int(len(pair)) if pair is not None else 0
        for s in report_steps:
            r = pair[f"loss_t{s}"].to_numpy() if pair is not None else np.array([])
            r = r[np.isfinite(r) & (r > 0)]
            row[f"{PAIR_RATIO}_gmean_t{s}"] = float(np.exp(np.mean(np.log(r)))) if r.size else math.nan
            row[f"{PAIR_RATIO}_min_t{s}"] = float(r.min()) if r.size else math.nan
            row[f"{PAIR_RATIO}_max_t{s}"] = float(r.max()) if r.size else math.nan
        row["max_dist_final_mean"] = float(g["max_dist_final"].mean())
        row["max_dist_final_std"] = _std(g["max_dist_final"])
        row["max_dist_max_mean"] = float(g["max_dist_max"].mean())
        row["max_dist_max_max"] = float(g["max_dist_max"].max())
        row["gram_ratio_min"] = float(g["gram_ratio_min"].min())
        row["gram_ratio_min_mean"] = float(g["gram_ratio_min"].mean())
        rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("dataset", "method"):
        out[col] = out[col].astype("str")
    return out


# --------------------------------------------------------------------------------------------------------------------
# CLI


def _write_csv(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        with_beta_text(df).to_csv(tmp, index=False, float_format="%.10g")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.aggregate", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", metavar="RUN.parquet", help="per-run Parquet files (sidecar .json beside)")
    src.add_argument("--concat", nargs="+", metavar="RUNS.parquet", help="per-dataset long tables to concatenate")
    ap.add_argument("--out", required=True, help="long table to write (Parquet)")
    ap.add_argument("--summary", help="per-setting summary to write (Parquet); with --runs")
    ap.add_argument("--summary-csv", help="the same summary as CSV; with --runs")
    ap.add_argument("--report-steps", nargs="+", type=int, default=list(defaults.REPORT_STEPS), metavar="STEP")
    ap.add_argument("--decades", type=int, default=DEFAULT_DECADES, help="steps to ℓ(0)·10^-k for k = 1..DECADES")
    args = ap.parse_args(argv)
    if args.concat:
        if args.summary or args.summary_csv:
            raise UserError("--summary/--summary-csv go with --runs, not --concat")
        write_parquet(args.out, concat_tables(args.concat))
        return 0
    if args.decades < 1:
        raise UserError(f"--decades must be >= 1, got {args.decades}")
    runs = build_runs_table(args.runs)
    write_parquet(args.out, runs_to_arrow(runs))
    if args.summary or args.summary_csv:
        summary = summarize(runs, args.report_steps, args.decades)
        if args.summary:
            write_parquet(args.summary, summary)
        if args.summary_csv:
            _write_csv(args.summary_csv, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
