"""The claims stage: reads the aggregate, NTK and theory outputs, has every claim judged, writes claims.json and
claims.md.

Run::

    PYTHONPATH=src python -m momentum_ntk.claims \\
        --summary results/aggregate/mnist/summary.parquet results/aggregate/fmnist/summary.parquet \\
        --runs results/aggregate/mnist/runs.parquet results/aggregate/fmnist/runs.parquet \\
        --ntk-summary results/ntk/mnist/summary.json results/ntk/fmnist/summary.json \\
        --out-md results/claims.md --out-json results/claims.json

``--runs`` may also be the single results/aggregate/all_runs.parquet. ``--ntk-summary`` is optional: it adds the
theorem's per-iteration exponent beside the fitted one in claim 1 (numbers only; it does not change a verdict).
``--theory results/theory/<dataset>/<method>/m*_c*_b*_s*.json ...`` (optional: the records of ``theory predict --run``)
adds claims 5 and 6; ``--theory-pred`` (their prediction Parquets) adds the width slope of the linearization error.

The judging itself lives in :mod:`momentum_ntk.judges`: one registry record per claim (statement, paper reference,
thresholds, judging function, table columns, how it is judged), from which claims.md, claims.json and the list at
the end of this docstring are generated. This module holds the stage's side: :func:`evaluate` builds the judges'
inputs (theorem exponents from the NTK summaries, the per-run rate fits, fitted once) and runs every judge,
:func:`to_json` and :func:`to_markdown` render the verdicts, :func:`main` is the CLI.

Per dataset and claim (:func:`dataset_verdict`): fails if any setting fails, holds if all hold, inconclusive
otherwise.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import defaults, judges
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.io import atomic_path, write_json
from momentum_ntk.names import beta_text
from momentum_ntk.rates import theorem_table
from momentum_ntk.records import load_predictions, read_ntk_summary, read_runs_table, read_summary, read_theory_records
from momentum_ntk.tables import SETTING_KEYS

__doc__ = (__doc__ or "") + "\n" + judges.registry_doc() + "\n"

def evaluate(summary: pd.DataFrame, runs: pd.DataFrame, ntk: Sequence[dict] = (), th: dict | None = None,
             theory: pd.DataFrame | None = None) -> dict:
    """Claims 1-4, and 5-6 when ``theory`` records are given: {claim id: DataFrame of settings with 'verdict' and
    'reason' columns}. The judges' inputs (:class:`momentum_ntk.judges.Evidence`) are built here once: the theorem
    exponents per setting from the NTK summaries and the per-run loss-rate fits (:func:`momentum_ntk.judges.run_fits`)
    that claims 2 and 5 share."""
    th = judges.THRESHOLDS if th is None else th
    have = summary["dataset"].astype(str).isin([str(r["dataset"]) for r in ntk])  # NaN for a dataset without one
    theorem = theorem_table(summary[have], ntk)[[*SETTING_KEYS, "theorem_exponent"]] if ntk else None
    evidence = judges.Evidence(summary, runs, judges.run_fits(runs), theorem, theory)
    return {c.id: c.judge(evidence, th) for c in judges.REGISTRY if theory is not None or not c.needs_theory}


def dataset_verdict(verdicts: Sequence[str]) -> str:
    """fails if any setting fails, holds if all hold, inconclusive otherwise (also when there are none)."""
    v = list(verdicts)
    if judges.FAILS in v:
        return judges.FAILS
    if v and all(x == judges.HOLDS for x in v):
        return judges.HOLDS
    return judges.INCONCLUSIVE


def _fmt(x: Any, nd: int = 3) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return "nan" if not math.isfinite(x) else f"{x:.{nd}g}"
    return str(x)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating, float)):
                v = float(v) if math.isfinite(v) else None
            elif isinstance(v, np.bool_):
                v = bool(v)
            clean[k] = v
        out.append(clean)
    return out


def to_json(results: dict[str, pd.DataFrame], datasets: Sequence[str], th: dict | None = None,
            slopes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The machine-readable twin of claims.md (NaN written as null); ``slopes``: the width slopes of
    :func:`momentum_ntk.judges.width_slopes`."""
    th = judges.THRESHOLDS if th is None else th
    claims = []
    for cid, df in results.items():
        statement, where = judges.CLAIMS[cid].statement, judges.CLAIMS[cid].paper
        by_ds = {}
        for ds in datasets:
            v = df.loc[df["dataset"] == ds, "verdict"].tolist() if not df.empty else []
            by_ds[ds] = {"verdict": dataset_verdict(v),
                         "counts": {k: v.count(k) for k in (judges.HOLDS, judges.FAILS, judges.INCONCLUSIVE)}}
        claims.append({"id": cid, "statement": statement, "paper": where, "by_dataset": by_ds,
                       "settings": _records(df)})
    out = {"thresholds": dict(th), "datasets": list(datasets), "claims": claims}
    if slopes:
        out["linearization_width_slopes"] = {
            ds: {p: _records(pd.DataFrame([{k: v for k, v in f.items() if not isinstance(v, list)}]))[0]
                 | {k: v for k, v in f.items() if isinstance(v, list)} for p, f in by.items()}
            for ds, by in slopes.items()}
    return out


def to_markdown(report: dict[str, Any], results: dict[str, pd.DataFrame]) -> str:
    """claims.md: verdict overview, thresholds, then one table of settings per claim."""
    datasets = report["datasets"]
    lines = ["# Claims of Liu et al. (2023), measured", "",
             "Verdict per dataset: **fails** if any setting fails, **holds** if every setting holds, otherwise "
             "**inconclusive**. Counts are settings (holds / fails / inconclusive).", "",
             "| claim | paper | " + " | ".join(datasets) + " |", "| --- | --- | " + " | ".join("---" for _ in datasets)
             + " |"]
    for c in report["claims"]:
        counts = [c["by_dataset"][d]["counts"] for d in datasets]
        cells = [f"**{c['by_dataset'][d]['verdict']}** ({n[judges.HOLDS]}/{n[judges.FAILS]}/{n[judges.INCONCLUSIVE]})"
                 for d, n in zip(datasets, counts)]
        lines.append(f"| {c['id']}: {c['statement']} | {c['paper']} | " + " | ".join(cells) + " |")
    lines += ["", "## Thresholds", "", "| name | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:g} |" for k, v in report["thresholds"].items()]
    lines += ["", "How each threshold is used: module docstring of `momentum_ntk.claims`, and below per claim."]
    for c in report["claims"]:
        df = results[c["id"]]
        lines += ["", f"## {c['id']}: {c['statement']} ({c['paper']})", "", judges.CLAIMS[c["id"]].how, ""]
        if judges.CLAIMS[c["id"]].shows_width_slopes and report.get("linearization_width_slopes"):
            lines += _slope_lines(report["linearization_width_slopes"]) + [""]
        if df.empty:
            lines.append("_no settings to judge_")
            continue
        cols = [k for k in judges.CLAIMS[c["id"]].columns if k in df.columns]
        lines += ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
        for rec in df[cols].itertuples(index=False):
            cells = [f"**{x}**" if col == "verdict" else beta_text(x) if col == "beta" else _fmt(x)
                     for col, x in zip(cols, rec)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _slope_lines(slopes: dict[str, Any]) -> list[str]:
    """claims.md lines: the width slope of the linearization error per dataset, with its uncertainty."""
    lines = ["Width slope b of the trajectory error e(k) = ‖u(k) − u_lin(k)‖/‖u(0) − y‖, e ∝ m^b (NTK theory bounds e "
             "by O(1/√m): b ≈ −1/2 in the NTK regime), one intercept per (method, η, β): the estimate, the reported "
             "interval (union of the 95 % seed bootstrap and the range over drop-one-width subsets and the horizon at ½ "
             "and 1 × analysis.theory_horizon), the widths and the range of the runs' horizons T. falls with m: "
             "holds when the whole interval is below 0.",
             "", "| dataset | statistic | slope | interval | falls with m | seed bootstrap | widths / horizons range | "
             "widths | T | runs | seeds |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for ds, by in slopes.items():
        for name, f in by.items():
            label = judges.SLOPE_STATISTICS[name][1] if name in judges.SLOPE_STATISTICS else name
            lo, hi = (math.nan if f[k] is None else float(f[k]) for k in ("lo", "hi"))
            falls = judges.interval_verdict(lo, hi, 0.0, below=True)
            lines.append(f"| {ds} | {label} | {_fmt(f['slope'])} | [{_fmt(f['lo'])}, {_fmt(f['hi'])}] | {falls} | "
                         f"[{_fmt(f['ci_lo'])}, {_fmt(f['ci_hi'])}] | [{_fmt(f['spec_lo'])}, {_fmt(f['spec_hi'])}] | "
                         f"{', '.join(map(str, f['widths']))} | {'–'.join(map(str, f['horizons']))} | "
                         f"{f['n_points']} | {f['n_seeds']} |")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.claims", description=__doc__.split("\n\n")[0])
    ap.add_argument("--summary", nargs="+", required=True, help="per-dataset summary.parquet (aggregate stage)")
    ap.add_argument("--runs", nargs="+", required=True, help="per-dataset runs.parquet or all_runs.parquet")
    ap.add_argument("--ntk-summary", nargs="*", default=[], help="per-dataset NTK summary.json (optional)")
    ap.add_argument("--theory", nargs="*", default=[],
                    help="per-run theory records (theory predict --run .json; optional): adds claims 5 and 6")
    ap.add_argument("--theory-pred", nargs="*", default=[],
                    help="per-run prediction Parquets (theory predict --run; optional): adds the width slope of the "
                         "linearization error with its uncertainty")
    ap.add_argument("--horizon-fraction", type=float, default=defaults.THEORY_HORIZON,
                    help="analysis.theory_horizon (for the slope)")
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-json", required=True)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    summary = pd.concat([read_summary(p) for p in args.summary], ignore_index=True)
    runs = pd.concat([read_runs_table(p) for p in args.runs], ignore_index=True)
    datasets = sorted(summary["dataset"].unique())
    missing = sorted(set(datasets) - set(runs["dataset"].unique()))
    if missing:
        raise UserError(f"--runs {args.runs} hold no rows for dataset(s) {missing} that --summary has")
    runs = runs[runs["dataset"].isin(datasets)]
    ntk = [read_ntk_summary(p) for p in args.ntk_summary]
    theory = read_theory_records(args.theory) if args.theory else None
    if theory is not None:
        extra = theory[~theory["dataset"].isin(datasets)]
        if not extra.empty:
            raise UserError(f"{extra['path'].iloc[0]}: theory record of dataset {extra['dataset'].iloc[0]!r}, which "
                            f"no --summary has (has {datasets}); pass the matching files")
        theory = theory.drop(columns="path")
    results = evaluate(summary, runs, ntk, theory=theory)
    slopes = None
    if args.theory_pred:
        slopes = judges.width_slopes({ds: load_predictions(args.theory_pred, ds) for ds in datasets},
                                     args.horizon_fraction)
    report = to_json(results, datasets, slopes=slopes)
    write_json(args.out_json, report)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(to_markdown(report, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
