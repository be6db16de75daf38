"""Where the theory starts to hold: the width sweep into the NTK regime, at several n, and its onset table and figures.

    python -m momentum_ntk.regime run --configfile workflow/presets/regime.yaml          # the sweep, then the report
    python -m momentum_ntk.regime report --root results/regime                          # the report only

``run`` trains the preset once per sample size n (``--n``, default the preset's ``regime.n``; n = 2·data.max_per_class)
as an ordinary workflow run in its own folder ``<root>/n<N>/`` (``snakemake -d <root>/n<N> --configfile <preset>
<root>/n<N>/regime-n.yaml``, the overlay setting name regime-n<N> and data.max_per_class = N/2: the same stages,
claims and files as any preset), then writes the report under ``<root>``. Rerunning it resumes: each sub-run is an
ordinary, restartable Snakemake run.

The report, per dataset, method and claim judged per width (``PER_WIDTH``: the claim's verdict at a width needs every
seed to pass), from each n's ``results/claims.json``, ``results/aggregate/*/runs.parquet`` and theory records:

* **onset width**: the smallest m from which the claim holds at that width and at every larger width measured; or
  "not reached up to m = …" with, where the claim's metric follows a power law in m (the trajectory error e, and
  1 − λmin(H(t))/λ0 for Lemma 3), an extrapolated onset and the range of the per-seed extrapolations;
* the claim's metric at each width with its seed range (``onset_metrics.csv``);
* the theory's width requirements at the run's n and λ0 (λmin(H∞) of its data), with the Ω's constants set to 1 and
  δ = 0.1: Lemma 2's m ≥ n² log(n/δ)/λ0² (λmin(H(0)) ≥ ¾λ0 w.p. 1 − δ) and Theorems 1-2's m ≥ n⁶/(δ³λ0⁴);
* the onset's growth with n: the log-log slope of onset width against n per (dataset, method, claim), beside the
  theory's scaling (n² log n for Lemma 2, n⁶ for the theorems, before λ0's own dependence on n).

Outputs under ``<root>``: ``onset.md``, ``onset.csv`` (one row per n, dataset, method, claim), ``onset_metrics.csv``
(one row per n, dataset, method, claim, width), ``regime_metrics.{pdf,png}`` (each claim's metric against m, log-log,
seed bands, the bar, the onset marked) and ``regime_onset_n.{pdf,png}`` (onset width against n with the fitted
exponents and the theory's scalings).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from momentum_ntk import defaults, methods
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.io import atomic_path, read_record

DELTA = 0.1  # failure probability at which the theory's widths are evaluated
EXTRAPOLATE_WIDTHS = 4  # the per-seed power law is fitted over this many largest widths


@dataclass(frozen=True)
class Metric:
    """A claim judged per width: how to read its per-seed metric, its bar, and whether the metric falls toward it."""

    claim: str  # claim id in claims.json
    label: str  # axis label
    bar: float  # the claim holds for a seed when the metric is on the right side of it
    below: bool  # True: holds when metric <= bar (it falls with m); False: holds when metric >= bar
    deviation: Callable[[np.ndarray], np.ndarray] | None  # a quantity ∝ m^b that reaches its bar at the onset, or None
    deviation_bar: float = math.nan


PER_WIDTH = (
    Metric("linearization_accurate", "sup_{k≤T} e(k), H(0)", 0.10, True, lambda v: v, 0.10),
    Metric("gram_stays_pd", "min_t λmin(H(t)) / λ0", 0.5, False, lambda v: 1.0 - v, 0.5),
    Metric("theorem_bound_holds", "fitted rate / theorem's", 1.0, False, None),
)


# --------------------------------------------------------------------------------------------------------------------
# Reading one n's results


@dataclass(frozen=True)
class SubRun:
    """The results of one sample size: n, per-dataset λ0, the claims report and the per-seed metrics."""

    n: int
    lambda0: dict[str, float]
    claims: dict[str, Any]
    seeds: pd.DataFrame  # dataset, method, width, seed, claim, value


def per_seed_metrics(results: Path) -> pd.DataFrame:
    """dataset, method, width, seed, claim, value for every run of a results/ folder: e's sup up to T (theory
    records), the minimum of λmin(H(t))/λ0 (runs table) and the fitted/theorem rate ratio (both)."""
    from momentum_ntk.judges import bound_rates, gram_per_run, run_fits
    from momentum_ntk.records import read_runs_table, read_theory_records

    runs = pd.concat([read_runs_table(p) for p in sorted(results.glob("aggregate/*/runs.parquet"))],
                     ignore_index=True)
    records = sorted(str(p) for p in results.glob("theory/*/*/*.json"))
    theory = read_theory_records(records).drop(columns="path")
    keys = ["dataset", "method", "width", "seed"]
    out = [
        theory[keys].assign(claim="linearization_accurate", value=theory["traj_h0"]),
        gram_per_run(runs)[[*keys, "min_ratio"]].rename(columns={"min_ratio": "value"})
        .assign(claim="gram_stays_pd"),
        bound_rates(theory, run_fits(runs))[[*keys, "rate_ratio"]].rename(columns={"rate_ratio": "value"})
        .assign(claim="theorem_bound_holds"),
    ]
    return pd.concat(out, ignore_index=True)[[*keys, "claim", "value"]]


def read_subrun(folder: Path) -> SubRun:
    """One n's folder (``<root>/n<N>``, holding ``results/``)."""
    results = folder / "results"
    claims = read_record(results / "claims.json", ("datasets", "claims"), what="claims file",
                         fix=f"finish that sub-run: python -m momentum_ntk.regime run (it resumes {folder})")
    lam = {}
    n = None
    for ds in claims["datasets"]:
        rec = read_record(results / "ntk" / ds / "summary.json", ("lambda0", "n"), what="NTK summary",
                          fix=f"finish that sub-run: python -m momentum_ntk.regime run (it resumes {folder})")
        lam[ds], n = float(rec["lambda0"]), int(rec["n"])
    return SubRun(int(n), lam, claims, per_seed_metrics(results))


# --------------------------------------------------------------------------------------------------------------------
# Onset and extrapolation


def onset_width(verdicts: dict[int, str]) -> int | None:
    """The smallest width from which every larger measured width (and itself) holds; None if the largest fails."""
    onset = None
    for w in sorted(verdicts, reverse=True):
        if verdicts[w] != "holds":
            break
        onset = w
    return onset


def extrapolate(widths: np.ndarray, dev: np.ndarray, bar: float) -> float:
    """The width where the power law fitted to log dev vs log m over the :data:`EXTRAPOLATE_WIDTHS` largest widths
    reaches ``bar`` (dev falling with m); NaN when it does not fall or there are fewer than two usable points."""
    order = np.argsort(widths)[-EXTRAPOLATE_WIDTHS:]
    w, d = np.asarray(widths, float)[order], np.asarray(dev, float)[order]
    ok = np.isfinite(d) & (d > 0)
    if ok.sum() < 2:
        return math.nan
    b, a = np.polyfit(np.log(w[ok]), np.log(d[ok]), 1)
    if b >= 0:
        return math.inf
    return float(math.exp((math.log(bar) - a) / b))


def theory_widths(n: int, lambda0: float, delta: float = DELTA) -> dict[str, float]:
    """Lemma 2's n² log(n/δ)/λ0² and Theorems 1-2's n⁶/(δ³λ0⁴) (the Ω's constants set to 1)."""
    return {"lemma2_width": n**2 * math.log(n / delta) / lambda0**2,
            "theorem_width": float(n) ** 6 / (delta**3 * lambda0**4)}


def onset_table(subs: Sequence[SubRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(onset rows, metric rows): see the module docstring."""
    rows, metric_rows = [], []
    for sub in subs:
        by_id = {c["id"]: c for c in sub.claims["claims"]}
        for metric in PER_WIDTH:
            claim = by_id.get(metric.claim)
            if claim is None:
                continue
            settings = pd.DataFrame(claim["settings"])
            for (ds, method), g in settings.groupby(["dataset", "method"], sort=True):
                verdicts = {int(r["width"]): r["verdict"] for _, r in g.iterrows()}
                seeds = sub.seeds[(sub.seeds["dataset"] == ds) & (sub.seeds["method"] == method)
                                  & (sub.seeds["claim"] == metric.claim)]
                for w, sg in seeds.groupby("width"):
                    v = sg["value"].to_numpy(float)
                    metric_rows.append({"n": sub.n, "dataset": ds, "method": method, "claim": metric.claim,
                                        "width": int(w), "verdict": verdicts.get(int(w)), "worst": float(
                                            np.nanmax(v) if metric.below else np.nanmin(v)),
                                        "best": float(np.nanmin(v) if metric.below else np.nanmax(v)),
                                        "median": float(np.nanmedian(v)), "seeds": int(np.isfinite(v).sum())})
                onset = onset_width(verdicts)
                row = {"n": sub.n, "dataset": ds, "method": method, "claim": metric.claim,
                       "lambda0": sub.lambda0.get(ds, math.nan), "min_width": min(verdicts),
                       "max_width": max(verdicts),
                       "onset": onset, "onset_extrapolated": math.nan, "extrapolated_lo": math.nan,
                       "extrapolated_hi": math.nan}
                if onset is None and metric.deviation is not None:
                    per_seed = []
                    for _, s in seeds.groupby("seed"):
                        per_seed.append(extrapolate(s["width"].to_numpy(), metric.deviation(s["value"].to_numpy()),
                                                    metric.deviation_bar))
                    per_seed = np.array([x for x in per_seed if not math.isnan(x)])
                    if per_seed.size:
                        # every seed must hold: the onset is where the slowest seed gets there
                        row.update(onset_extrapolated=float(per_seed.max()), extrapolated_lo=float(per_seed.min()),
                                   extrapolated_hi=float(per_seed.max()))
                row |= theory_widths(sub.n, row["lambda0"])
                rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(metric_rows)


def n_exponents(onsets: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method, claim) with onsets (measured, else extrapolated and finite) at ≥ 2 values of n: the
    log-log slope of onset width against n, and the same slope of Lemma 2's and the theorems' widths. An onset at the
    smallest width measured only says "≤ that width" (the claim may hold below it): such points are left out."""
    out = []
    o = onsets.assign(width=onsets["onset"].astype(float).fillna(onsets["onset_extrapolated"]))
    for key, g in o.groupby(["dataset", "method", "claim"], sort=True):
        g = g[np.isfinite(g["width"]) & ~(g["onset"].astype(float) == g["min_width"])]
        if g["n"].nunique() < 2:
            continue
        x = np.log(g["n"].to_numpy(float))
        out.append({"dataset": key[0], "method": key[1], "claim": key[2], "n_values": int(g["n"].nunique()),
                    "exponent": float(np.polyfit(x, np.log(g["width"].to_numpy(float)), 1)[0]),
                    "lemma2_exponent": float(np.polyfit(x, np.log(g["lemma2_width"].to_numpy(float)), 1)[0]),
                    "theorem_exponent": float(np.polyfit(x, np.log(g["theorem_width"].to_numpy(float)), 1)[0])})
    return pd.DataFrame(out, columns=["dataset", "method", "claim", "n_values", "exponent", "lemma2_exponent",
                                      "theorem_exponent"])


# --------------------------------------------------------------------------------------------------------------------
# Rendering


def _w(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–" if x is None or math.isnan(x) else "never (does not fall)"
    return f"{x:.2g}" if x >= 1e5 else f"{int(round(x))}"


def _b(x: float) -> str:
    """An exponent: '+2.90', '−2.00', and '+0.00' for a tiny negative one."""
    return f"{round(x, 2) or 0.0:+.2f}".replace("-", "−")


def onset_text(r: pd.Series) -> str:
    if pd.notna(r["onset"]):
        at_edge = int(r["onset"]) == int(r["min_width"])  # holds already at the smallest width: the onset is ≤ it
        return f"**{'≤ ' if at_edge else ''}{int(r['onset'])}**"
    text = f"not reached up to m = {int(r['max_width'])}"
    if math.isfinite(r["onset_extrapolated"]) or r["onset_extrapolated"] == math.inf:
        text += f"; extrapolated {_w(r['onset_extrapolated'])} (seeds {_w(r['extrapolated_lo'])}–" \
                f"{_w(r['extrapolated_hi'])})"
    return text


def to_markdown(onsets: pd.DataFrame, metrics: pd.DataFrame, exps: pd.DataFrame) -> str:
    labels = {m.claim: m for m in PER_WIDTH}
    lines = ["# Where the theory starts to hold: onset widths", "",
             "Onset: the smallest width m from which the claim holds (in every seed) at that width and at every larger "
             "width measured. Not reached: the largest width, and where the claim's metric follows a power law in m "
             f"(e, and 1 − λmin/λ0), the width where a power law fitted per seed over its {EXTRAPOLATE_WIDTHS} largest "
             "widths reaches the bar (the slowest seed decides; the range over seeds beside it). Theory: the widths "
             f"its statements ask for at this n and λ0, with the Ω's constants set to 1 and δ = {DELTA:g}: Lemma 2 "
             "n² log(n/δ)/λ0², Theorems 1-2 n⁶/(δ³λ0⁴).", ""]
    for claim, g in onsets.groupby("claim", sort=False):
        m = labels[claim]
        side = "≤" if m.below else "≥"
        lines += [f"## {claim}: {m.label} {side} {m.bar:g}", "",
                  "| dataset | method | n | λ0 | onset width | Lemma 2 width | Theorems' width | onset / Lemma 2 |",
                  "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
        for _, r in g.sort_values(["dataset", "method", "n"]).iterrows():
            width = r["onset"] if pd.notna(r["onset"]) else r["onset_extrapolated"]
            ratio = width / r["lemma2_width"] if width is not None and math.isfinite(float(width)) else math.nan
            lines.append(f"| {r['dataset']} | {methods.get(r['method']).label} | {r['n']} | {r['lambda0']:.3g} | "
                         f"{onset_text(r)} | {r['lemma2_width']:.2g} | {r['theorem_width']:.2g} | "
                         f"{ratio:.2g} |".replace("nan", "–"))
        lines.append("")
    lines += ["## Onset against n", "", "Log-log slope of the onset width against n (measured onsets, else the "
              "extrapolated ones; onsets at the smallest width measured, which only bound it from above, are left out), "
              "beside the slope of the theory's widths at the same n and λ0 (n² log n / λ0² and n⁶ / λ0⁴, λ0 of each "
              "n's data).", "",
              "| dataset | method | claim | n values | onset ∝ n^b | Lemma 2 width ∝ n^b | Theorems' width ∝ n^b |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for _, r in exps.iterrows():
        lines.append(f"| {r['dataset']} | {methods.get(r['method']).label} | {r['claim']} | {r['n_values']} | "
                     f"{_b(r['exponent'])} | {_b(r['lemma2_exponent'])} | {_b(r['theorem_exponent'])} |")
    lines += ["", "## The metric at each width (worst seed / median / best seed)", "",
              "| claim | dataset | method | n | width | worst | median | best | verdict |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for _, r in metrics.sort_values(["claim", "dataset", "method", "n", "width"]).iterrows():
        lines.append(f"| {r['claim']} | {r['dataset']} | {methods.get(r['method']).label} | {r['n']} | {r['width']} | "
                     f"{r['worst']:.3g} | {r['median']:.3g} | {r['best']:.3g} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def figure_metrics(onsets: pd.DataFrame, metrics: pd.DataFrame):
    """Each claim's metric against m (log-log): a row per claim, a column per dataset; colour = method, line style
    = n; band = seed range; dashed bar; onset marked with a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(metrics["dataset"].unique())
    claims = [m for m in PER_WIDTH if m.claim in set(metrics["claim"])]
    ns = sorted(metrics["n"].unique())
    styles = dict(zip(ns, ["-", "--", ":", "-."] * 3))
    fig, axes = plt.subplots(len(claims), len(datasets), figsize=(4.2 * len(datasets), 2.9 * len(claims)),
                             squeeze=False, layout="constrained")
    for i, m in enumerate(claims):
        for j, ds in enumerate(datasets):
            ax = axes[i, j]
            for (method, n), g in metrics[(metrics["claim"] == m.claim) & (metrics["dataset"] == ds)].groupby(
                    ["method", "n"], sort=True):
                g = g.sort_values("width")
                color = methods.get(method).color
                ax.plot(g["width"], g["median"], styles[n], color=color, lw=1.2,
                        label=f"{methods.get(method).label}, n={n}")
                ax.fill_between(g["width"], g["worst"], g["best"], color=color, alpha=0.12, lw=0)
                o = onsets[(onsets["claim"] == m.claim) & (onsets["dataset"] == ds) & (onsets["method"] == method)
                           & (onsets["n"] == n)]
                if len(o) and pd.notna(o["onset"].iloc[0]):
                    at = g[g["width"] == int(o["onset"].iloc[0])]
                    ax.plot(at["width"], at["median"], "*", color=color, ms=9, mec="k", mew=0.5)
            ax.axhline(m.bar, color="k", ls="--", lw=0.8)
            ax.set_xscale("log", base=2)
            if m.claim == "linearization_accurate":
                ax.set_yscale("log")
            ax.set_title(f"{ds}: {m.claim}", fontsize=8)
            ax.set_xlabel("width m")
            ax.set_ylabel(m.label, fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, len(labels)), fontsize=7, frameon=False)
    fig.suptitle("Each claim's metric against the width (line: median seed; band: seed range; dashed: the bar; "
                 "star: onset)", fontsize=9)
    return fig


def figure_onset_n(onsets: pd.DataFrame, exps: pd.DataFrame):
    """Onset width against n (log-log), measured (filled) or extrapolated (open), with the theory's widths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(onsets["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.6), squeeze=False,
                             layout="constrained")
    markers = {"linearization_accurate": "o", "gram_stays_pd": "s", "theorem_bound_holds": "^"}
    for ax, ds in zip(axes[0], datasets):
        g = onsets[onsets["dataset"] == ds]
        for (claim, method), s in g.groupby(["claim", "method"], sort=True):
            s = s.sort_values("n")
            width = s["onset"].astype(float).fillna(s["onset_extrapolated"])
            measured = s["onset"].notna()
            color = methods.get(method).color
            e = exps[(exps["dataset"] == ds) & (exps["method"] == method) & (exps["claim"] == claim)]
            slope = f" (∝ n^{e['exponent'].iloc[0]:.1f})" if len(e) else ""
            ax.plot(s["n"], width, "-", color=color, lw=0.8, marker=markers.get(claim, "o"), mfc="none", ms=5,
                    label=f"{methods.get(method).label} {claim}{slope}")
            ax.plot(s["n"][measured], width[measured], markers.get(claim, "o"), color=color, ms=5)
        lem = g.groupby("n")["lemma2_width"].first()
        thm = g.groupby("n")["theorem_width"].first()
        ax.plot(lem.index, lem.to_numpy(), "k--", lw=1, label="Lemma 2: n² log(n/δ)/λ0²")
        ax.plot(thm.index, thm.to_numpy(), "k:", lw=1, label="Theorems: n⁶/(δ³λ0⁴)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (training instances)")
        ax.set_ylabel("width m")
        ax.set_title(f"{ds}: onset width (filled: measured, open: extrapolated)", fontsize=8)
        ax.legend(fontsize=5.5, frameon=False)
    return fig


def report(root: Path) -> pd.DataFrame:
    """Read every ``<root>/n*/`` sub-run and write the report files under ``root``; returns the onset table."""
    folders = sorted((p for p in root.glob("n*") if (p / "results").is_dir()), key=lambda p: int(p.name[1:]))
    if not folders:
        raise UserError(f"{root}: no sub-run folders n<N>/results; run `python -m momentum_ntk.regime run "
                        "--configfile workflow/presets/regime.yaml` first")
    subs = [read_subrun(f) for f in folders]
    onsets, metrics = onset_table(subs)
    exps = n_exponents(onsets)
    from momentum_ntk.plotting import save_figure

    with atomic_path(root / "onset.md") as tmp:
        tmp.write_text(to_markdown(onsets, metrics, exps))
    with atomic_path(root / "onset.csv") as tmp:
        onsets.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(root / "onset_metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(root / "onset_n.csv") as tmp:
        exps.to_csv(tmp, index=False, float_format="%.6g")
    save_figure(figure_metrics(onsets, metrics), root / "regime_metrics.pdf", root / "regime_metrics.png")
    save_figure(figure_onset_n(onsets, exps), root / "regime_onset_n.pdf", root / "regime_onset_n.png")
    print(f"regime report: {len(onsets)} onsets from n = {[s.n for s in subs]} -> {root}/onset.md")
    return onsets


# --------------------------------------------------------------------------------------------------------------------
# The sweep


def preset_ns(configfile: Path) -> list[int]:
    """The preset's regime.n (the schema's default when it has none)."""
    cfg = yaml.safe_load(configfile.read_text()) or {}
    return [int(n) for n in (cfg.get("regime") or {}).get("n", defaults.REGIME_N)]


def run(configfile: Path, ns: Sequence[int], root: Path, cores: str, snakemake_args: Sequence[str]) -> None:
    """One ordinary workflow run per n in ``<root>/n<N>/`` (resumable), then :func:`report`."""
    repo = Path(__file__).resolve().parents[2]  # this package's checkout: its Snakefile runs every n
    root = root.resolve()
    for n in ns:
        if n < 2 or n % 2:
            raise UserError(f"--n {n}: n must be an even number ≥ 2 (n/2 instances per class)")
    for n in ns:
        folder = root / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        overlay = folder / "regime-n.yaml"  # what differs from the preset: the name and the sample size
        overlay.write_text(yaml.safe_dump({"name": f"regime-n{n}", "data": {"max_per_class": n // 2}}))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(folder), "--cores", cores,
               "--configfile", str(configfile.resolve()), str(overlay.resolve()), "--rerun-incomplete",
               *snakemake_args]
        print(f"regime: n = {n} in {folder} ...", flush=True)
        log = folder / "snakemake.log"
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=repo, env=os.environ.copy())
        if proc.returncode:
            tail = log.read_text()[-3000:]
            raise UserError(f"the sub-run for n = {n} failed (its log: {log}); fix what it says and rerun "
                            f"`python -m momentum_ntk.regime run --configfile {configfile}` (it resumes):\n{tail}")
    report(root)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.regime", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="the width sweep at every n (one workflow run each), then the report")
    r.add_argument("--configfile", type=Path, default=Path("workflow/presets/regime.yaml"))
    r.add_argument("--n", type=int, nargs="+", help="sample sizes (default: the preset's regime.n)")
    r.add_argument("--root", type=Path, default=Path("results/regime"))
    r.add_argument("--cores", default="all")
    r.add_argument("snakemake_args", nargs="*", help="passed to each snakemake call (after --)")
    p = sub.add_parser("report", help="the onset table and figures from finished sub-runs")
    p.add_argument("--root", type=Path, default=Path("results/regime"))
    args = ap.parse_args(argv)
    if args.command == "run":
        if not args.configfile.is_file():
            raise UserError(f"--configfile {args.configfile}: no such file")
        run(args.configfile, args.n or preset_ns(args.configfile), args.root, args.cores, args.snakemake_args)
    else:
        report(args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
