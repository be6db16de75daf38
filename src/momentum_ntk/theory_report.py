"""Theory overlays: measured vs predicted loss curves, the width dependence of the linearization error, a rate table.

Run (inputs: the per-run predictions of one dataset, each a Parquet written by ``theory predict --run`` with its
``.json`` record beside it; docs/CONTRACT.md)::

    PYTHONPATH=src python -m momentum_ntk.theory_report overlay --pred results/theory/D/*/*.parquet \\
        --pdf results/figures/theory_overlay_D.pdf --png results/figures/theory_overlay_D.png [--seed 0 | --mean-seeds]
    PYTHONPATH=src python -m momentum_ntk.theory_report width --pred results/theory/D/*/*.parquet \\
        --pdf results/figures/theory_width_error_D.pdf --png ... [--horizon-fraction 0.5] [--floor-ratio 1e-4]
    PYTHONPATH=src python -m momentum_ntk.theory_report table --pred results/theory/D/*/*.parquet \\
        --out-md results/figures/theory_rates_D.md --out-csv results/figures/theory_rates_D.csv

``--dataset NAME`` picks one dataset when the files hold several.

What is drawn (the predictions themselves are defined in :mod:`momentum_ntk.theory`):

* ``overlay``: one panel per (m, η, β) and method, log-y loss vs iteration k: the measured loss, the NTK-linearized
  recursion with H(0) (this initialisation's Gram matrix) and with H∞, the high-resolution ODE with the damping α
  matched to the run's β (α = ((1 − β)/(1 + β))²/η) and with the paper's α = λ0/2, and the bound of Theorem 1 (HB) /
  Theorem 2 (NAG).
  One seed (default the smallest) or the mean over seeds. A dotted vertical line marks the error horizon T, and each
  panel gives sup_{k≤T} e(k) of the H(0) linearization (the largest over seeds for the mean).
* ``width``: per run, e_max = sup_{k ≤ T} ‖u(k) − u_lin(k)‖/‖u(0) − y‖, the distance of the network's outputs from
  those of the H(0)- and H∞-linearized models (momentum_ntk.trajectory), against m on log-log axes. T is the run's own
  horizon, :func:`momentum_ntk.compare.horizon_step` (last step ≤ fraction·K while ℓ ≥ floor_ratio·ℓ(0)), the same T
  the claims use. The printed slope is a least-squares fit of log e_max = a_g + b log m with one intercept a_g per
  (method, η, β) and a common slope b (:func:`fit_width_slope`); NTK theory bounds e by O(1/√m), so b ≈ −1/2 is
  expected in the NTK regime.
* ``table``: per setting (mean over seeds), loss exponents per iteration r (ℓ(k) ∝ e^{−rk}): the measured one, a
  least-squares fit of log ℓ over :func:`rate_window` (from the first 10× drop to where ℓ falls below floor_ratio·ℓ(0)
  or the run ends: many oscillation periods of a momentum method), each prediction fitted over that same window and its
  asymptotic rate (slowest excited mode), and the theorem's exponent ρ·√(λ0/2)·√η.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from momentum_ntk import defaults, methods  # noqa: E402
from momentum_ntk.compare import (  # noqa: E402
    HORIZON_FLOOR_RATIO,
    PREDICTIONS,
    fit_rate,
    horizon_step,
    run_errors,
    width_slope_uncertainty,
)
from momentum_ntk.entry import cli  # noqa: E402
from momentum_ntk.errors import UserError  # noqa: E402
from momentum_ntk.io import atomic_path  # noqa: E402
from momentum_ntk.names import beta_text, with_beta_text  # noqa: E402
from momentum_ntk.plotting import eta_label, save_figure, style  # noqa: E402
from momentum_ntk.records import CURVE_COLUMNS, Predictions, load_predictions  # noqa: E402
from momentum_ntk.tables import DATASET_RUN_KEYS, DATASET_SETTING_KEYS  # noqa: E402

SETTING = DATASET_SETTING_KEYS
RUN = DATASET_RUN_KEYS
# curve key -> (column, colour, line style, width, legend label)
STYLE = {
    "measured": ("loss_measured", "k", "-", 1.6, "measured"),
    "lin_h0": ("loss_lin_h0", "C0", "--", 1.2, "linearized, H(0) of this init"),
    "lin_inf": ("loss_lin_inf", "C1", ":", 1.4, "linearized, H∞"),
    "ode_beta": ("loss_ode_beta", "C2", "-.", 1.1, "ODE, α from β: ((1−β)/(1+β))²/η"),
    "ode_paper": ("loss_ode_paper", "C3", (0, (5, 1.5)), 1.1, "ODE, paper's α = λ0/2"),
    "theorem": ("bound_theorem", "0.45", "-", 0.9, "bound, Thm 1 (HB) / Thm 2 (NAG)"),
}
START_RATIO = 0.1  # the rate table's fit window starts at the first 10× drop of the loss ...
MIN_WINDOW = 10  # ... and must span at least this many steps
BOUND_CAP = 1e3  # overlay panels extend up to the theorem bound if it starts at most this multiple of ℓ(0) above
PRED_LABELS = {"lin_h0": "linearized, H(0)", "lin_inf": "linearized, H∞"}


# --------------------------------------------------------------------------------------------------------------------
# Input


def _methods(df: pd.DataFrame) -> list[str]:
    return methods.present(df["method"])


def setting_text(eta_divisor: int, beta: float) -> str:
    return f"{eta_label(eta_divisor)}, β={beta_text(beta)}"


# --------------------------------------------------------------------------------------------------------------------
# Horizon and errors


# --------------------------------------------------------------------------------------------------------------------
# Overlay figure


def one_curve_per_setting(curves: pd.DataFrame, seed: int | None, mean_seeds: bool) -> tuple[pd.DataFrame, str]:
    """The curves of one seed (``seed``, default the smallest present) or their mean over seeds (a seed without a
    value at a step, e.g. after a divergence, makes the mean NaN there), and a phrase saying which."""
    if mean_seeds:
        cols = [c for c in CURVE_COLUMNS if c != "step"]
        n = curves.groupby(SETTING)["seed"].nunique().max()
        g = curves.groupby([*SETTING, "step"], sort=True)
        mean = g[cols].mean().where(g[cols].count().eq(g.size(), axis=0)).reset_index()
        return mean, f"mean over {n} seeds"
    seeds = sorted(curves["seed"].unique())
    pick = seeds[0] if seed is None else seed
    if pick not in seeds:
        raise UserError(f"--seed {pick}: the predictions have seeds {[int(s) for s in seeds]}")
    return curves[curves["seed"] == pick].drop(columns="seed"), f"seed {pick}"


def _panel_limits(g: pd.DataFrame) -> tuple[float, float]:
    """Log-y limits: from below the smallest curve value (at most 6 decades under the measured minimum) to above the
    largest start value, and up to the bound if it starts within BOUND_CAP of it (else the panel says where it is)."""
    cols = [STYLE[k][0] for k in STYLE if k != "theorem"]
    meas = g["loss_measured"].to_numpy(dtype=float)
    meas = meas[np.isfinite(meas) & (meas > 0)]
    vals = g[cols].to_numpy(dtype=float).ravel()
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not vals.size:
        return 1e-3, 10.0
    start = g.loc[g["step"] == g["step"].min(), cols].to_numpy(dtype=float)
    start = start[np.isfinite(start) & (start > 0)]
    base = float(start.max()) if start.size else float(vals.max())
    top = 3.0 * min(float(vals.max()), 100.0 * base)  # a diverging prediction leaves the panel
    bound = g["bound_theorem"].to_numpy(dtype=float)
    bound = bound[np.isfinite(bound) & (bound > 0)]
    if bound.size and bound.max() <= BOUND_CAP * base:
        top = max(top, 2.0 * float(bound.max()))
    floor = 1e-6 * float(meas.min()) if meas.size else 0.0
    low = min(float(vals.min()), float(bound.min())) if bound.size else float(vals.min())
    return 0.3 * max(low, floor), top


def draw_overlay(ax: plt.Axes, g: pd.DataFrame, horizon: int | None, traj: float = math.nan) -> None:
    """Measured loss, the four predictions and the theorem bound of one setting on a log-y axis; ``traj``, the
    trajectory error sup_{k≤T} e(k) of the H(0) linearization, is written in the panel when finite."""
    g = g.sort_values("step")
    step = g["step"].to_numpy()
    for key, (col, color, ls, lw, label) in STYLE.items():
        y = g[col].to_numpy(dtype=float)
        if np.isfinite(y).any():
            ax.plot(step, np.where(y > 0, y, np.nan), color=color, ls=ls, lw=lw, label=label,
                    zorder=3 if key == "measured" else 2)
    ax.set_yscale("log")
    lo, hi = _panel_limits(g)
    ax.set_ylim(lo, hi)
    bound0 = g["bound_theorem"].to_numpy(dtype=float)[:1]
    if bound0.size and np.isfinite(bound0[0]) and bound0[0] > hi:
        loss0 = float(g["loss_measured"].iloc[0])
        ax.text(0.03, 0.04, f"bound off the panel: {bound0[0] / loss0:.2g}·ℓ(0) at k=0", transform=ax.transAxes,
                ha="left", va="bottom", fontsize=6, color="0.3")
    if horizon is not None and horizon >= 0:
        ax.axvline(horizon, color="0.6", ls=":", lw=0.9, label="T (error horizon)")
    if math.isfinite(traj):
        ax.text(0.97, 0.96, f"sup e(k≤T) = {traj:.2g}", transform=ax.transAxes, ha="right", va="top", fontsize=6,
                color="C0")


def figure_overlay(pred: Predictions, *, seed: int | None = None, mean_seeds: bool = False,
                   fraction: float = defaults.THEORY_HORIZON, floor_ratio: float = HORIZON_FLOOR_RATIO) -> plt.Figure:
    """Rows: widths; columns: (η, β) × method. Each panel: measured vs predicted loss (see module docstring)."""
    style()
    curves, which = one_curve_per_setting(pred.curves, seed, mean_seeds)
    err = run_errors(pred.curves, fraction, floor_ratio)
    if not mean_seeds:  # the drawn seed's own T and e; for the mean over seeds, the smallest T and the largest e
        err = err[err["seed"] == (min(err["seed"]) if seed is None else seed)]
    by_setting = err.groupby(SETTING).agg(horizon=("horizon", "min"), traj=("max_traj_err_lin_h0", "max"))
    widths = sorted(curves["width"].unique())
    combos = sorted({(int(e), float(b)) for e, b in zip(curves["eta_divisor"], curves["beta"])})
    present = _methods(curves)
    cols = [(e, b, m) for e, b in combos for m in present]
    fig, axes = plt.subplots(len(widths), len(cols), figsize=(max(7.5, 2.3 * len(cols)), 1.9 * len(widths) + 1.1),
                             squeeze=False, sharex=True, layout="constrained")
    for i, w in enumerate(widths):
        for j, (e, b, m) in enumerate(cols):
            ax = axes[i, j]
            g = curves[(curves["width"] == w) & (curves["eta_divisor"] == e) & (curves["beta"] == b)
                       & (curves["method"] == m)]
            if g.empty:
                ax.set_axis_off()
                continue
            key = (m, w, e, b)
            draw_overlay(ax, g, int(by_setting["horizon"].get(key, -1)), float(by_setting["traj"].get(key, math.nan)))
            ax.set_title(f"{methods.get(m).label}, m={w}\n{setting_text(e, b)}", fontsize=7.5)
            if i == len(widths) - 1:
                ax.set_xlabel("iteration k")
            if j == 0:
                ax.set_ylabel("training loss ℓ")
            ax.tick_params(labelsize=6.5)
    handles: dict[str, Any] = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
               frameon=False, fontsize=7.5)
    fig.suptitle(f"{pred.dataset}: measured training loss vs NTK-linearized, high-resolution ODE and theorem "
                 f"predictions\n({which}; the ODE's time t = k√η is drawn on the iteration axis; e(k) = ‖u(k) − "
                 "u_lin(k)‖/‖u(0) − y‖, H(0) linearization, up to the run's T)", fontsize=9.5)
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Width figure


def _range(values: pd.Series) -> str:
    """'328–710' (or '500' when all equal) of integer values."""
    lo, hi = int(values.min()), int(values.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def slope_text(fit: dict[str, Any]) -> str:
    """'slope −0.52 [−0.70, −0.41]\n95% seed bootstrap [−0.60, −0.45], widths/T −0.70…−0.41 (32 runs; theory −1/2)'."""
    if not math.isfinite(fit["slope"]):
        return "fitted slope n/a (needs ≥ 2 widths; NTK theory −1/2)"

    def f(x: float) -> str:
        return f"{x:+.2f}" if math.isfinite(x) else "n/a"

    return (f"slope {f(fit['slope'])} [{f(fit['lo'])}, {f(fit['hi'])}]\nseed bootstrap 95% [{f(fit['ci_lo'])}, "
            f"{f(fit['ci_hi'])}]; widths/T {f(fit['spec_lo'])}…{f(fit['spec_hi'])}\n({fit['n_points']} runs, "
            f"{fit['n_seeds']} seeds; NTK theory −1/2)").replace("-", "−")


def figure_width_error(pred: Predictions, *, fraction: float = defaults.THEORY_HORIZON,
                       floor_ratio: float = HORIZON_FLOOR_RATIO) -> tuple[plt.Figure, dict[str, dict[str, float]]]:
    """Trajectory error sup_{k≤T} e(k) of the H(0)- and H∞-linearized models vs m (log-log), with fitted slopes."""
    style()
    err = run_errors(pred.curves, fraction, floor_ratio)
    series = sorted({(m, int(e), float(b)) for m, e, b in zip(err["method"], err["eta_divisor"], err["beta"])},
                    key=lambda s: (_methods(err).index(s[0]), s[1], s[2]))
    colors = dict(zip(series, plt.get_cmap("tab10").colors * 3))
    fits: dict[str, dict[str, float]] = {}
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.6), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], ("lin_h0", "lin_inf")):
        col = f"max_traj_err_{p}"
        fits[p] = width_slope_uncertainty(pred.curves, col, fraction=fraction, floor_ratio=floor_ratio)
        for s in series:
            g = err[(err["method"] == s[0]) & (err["eta_divisor"] == s[1]) & (err["beta"] == s[2])]
            g = g[np.isfinite(g[col]) & (g[col] > 0)]
            if g.empty:
                continue
            ax.scatter(g["width"], g[col], s=14, marker=methods.get(s[0]).marker, color=colors[s], alpha=0.55, lw=0)
            gm = np.exp(np.log(g[col]).groupby(g["width"]).mean())
            ax.plot(gm.index, gm.to_numpy(), "-", lw=0.9, color=colors[s], marker=methods.get(s[0]).marker, ms=3,
                    label=f"{methods.get(s[0]).label}, {setting_text(s[1], s[2])}, T={_range(g['horizon'])}")
        ok = err[np.isfinite(err[col]) & (err[col] > 0)]
        if ok["width"].nunique() >= 2:
            w = np.array(sorted(ok["width"].unique()), dtype=float)
            x0, y0 = np.exp(np.log(ok["width"].astype(float)).mean()), np.exp(np.log(ok[col]).mean())
            ax.plot(w, y0 * (w / x0) ** -0.5, color="k", ls=":", lw=1.2, label=r"$\propto m^{-1/2}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_title(f"{PRED_LABELS[p]} prediction: {slope_text(fits[p])}", fontsize=7.5)
        widths = sorted(err["width"].unique())
        ax.set_xticks(widths)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0, 0].set_ylabel(r"$\sup_{k\leq T}\,\|u(k)-u_{lin}(k)\|\,/\,\|u(0)-y\|$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=7)
    fig.suptitle(f"{pred.dataset}: distance of the network's outputs from the linearized model's vs width (dots: "
                 f"seeds; line: geometric mean)\nT: each run's last step ≤ {fraction:g}·K with ℓ ≥ {floor_ratio:g}·ℓ(0)",
                 fontsize=8.5)
    fig.tight_layout()
    return fig, fits


# --------------------------------------------------------------------------------------------------------------------
# Rate table


def run_rates(pred: Predictions, fraction: float = defaults.THEORY_HORIZON,
              floor_ratio: float = HORIZON_FLOOR_RATIO) -> pd.DataFrame:
    """Per run: the measured rate over its robust window, every prediction's rate over that window, the asymptotic
    rates and damping constants of its record, and up to T the trajectory errors and the relative loss errors."""
    rec = pred.records.set_index(RUN)
    err = run_errors(pred.curves, fraction, floor_ratio).set_index(RUN)
    rows = []
    for key, g in pred.curves.groupby(RUN, sort=True):
        g = g.sort_values("step")
        step = g["step"].to_numpy()
        lo, hi = rate_window(step, g["loss_measured"].to_numpy(), floor_ratio)
        r = rec.loc[key]
        row: dict[str, Any] = {**dict(zip(RUN, key)), "eta": float(r["eta"]), "lambda0": float(r["lambda0"]),
                               "window_start": lo, "window_end": hi}
        for p in ("measured", *PREDICTIONS):
            row[f"rate_{p}_window" if p != "measured" else "rate_measured"] = (
                fit_rate(step, g[f"loss_{p}"], lo, hi) if lo >= 0 else math.nan)
            row[f"rate_{p}_asymptotic"] = _num(r.get(f"rate_{p}"))
        row["rate_theorem"] = _num(r.get("rate_theorem"))
        row["alpha_damping_beta"] = _num(r.get("alpha_damping_beta"))
        row["alpha_damping_paper"] = _num(r.get("alpha_damping_paper"))
        row["horizon"] = int(err.loc[key, "horizon"])
        for p in ("lin_h0", "lin_inf"):
            row[f"max_relerr_{p}"] = float(err.loc[key, f"max_relerr_{p}"])
            row[f"max_traj_err_{p}"] = float(err.loc[key, f"max_traj_err_{p}"])
        rows.append(row)
    return pd.DataFrame(rows)


def rate_window(step: np.ndarray, measured: np.ndarray, floor_ratio: float = HORIZON_FLOOR_RATIO,
                start_ratio: float = START_RATIO, min_steps: int = MIN_WINDOW) -> tuple[int, int]:
    """Fit window [s, e] for the rate table: s the first step with ℓ ≤ start_ratio·ℓ(0) (step 0 if never: skips the
    momentum warm-up), e the last step before ℓ first falls below floor_ratio·ℓ(0) or the run ends (a floor or a
    divergence stays out). Long on purpose: a momentum method's loss oscillates, and a fit over many periods measures
    its mean decay. (−1, −1) if the window is shorter than ``min_steps``."""
    e = horizon_step(step, measured, fraction=1.0, floor_ratio=floor_ratio)
    if e is None:
        return -1, -1
    meas = np.asarray(measured, dtype=np.float64)
    st = np.asarray(step)
    hit = np.flatnonzero((meas <= start_ratio * meas[0]) & (st <= e))
    s = int(st[hit[0]]) if hit.size else int(st[0])
    return (s, int(e)) if e - s >= min_steps else (-1, -1)


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def rate_table(pred: Predictions, fraction: float = defaults.THEORY_HORIZON,
               floor_ratio: float = HORIZON_FLOOR_RATIO) -> pd.DataFrame:
    """Per setting: seed means of :func:`run_rates` (std of the measured rate; worst-seed trajectory and relative
    loss errors; the smallest and largest T)."""
    runs = run_rates(pred, fraction, floor_ratio)
    num = [c for c in runs.columns if c not in RUN]
    g = runs.groupby(SETTING, sort=True)
    out = g[num].mean()
    out["rate_measured_std"] = g["rate_measured"].std(ddof=1)
    for p in ("lin_h0", "lin_inf"):
        out[f"max_relerr_{p}"] = g[f"max_relerr_{p}"].max()
        out[f"max_traj_err_{p}"] = g[f"max_traj_err_{p}"].max()
    out["horizon"] = g["horizon"].min()
    out["horizon_max"] = g["horizon"].max()
    out["n_seeds"] = g["seed"].nunique()
    out = out.reset_index()
    out.insert(0, "dataset", pred.dataset)
    out["measured_over_theorem"] = out["rate_measured"] / out["rate_theorem"]
    order = {m: i for i, m in enumerate(_methods(out))}
    return out.sort_values(DATASET_SETTING_KEYS, key=lambda s: s.map(order) if
                           s.name == "method" else s).reset_index(drop=True)


def _g(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}g}" if math.isfinite(x) else "–"


def _pair(window: float, asym: float) -> str:
    return f"{_g(window)} ({_g(asym)})" if math.isfinite(window) or math.isfinite(asym) else "–"


def table_markdown(table: pd.DataFrame, dataset: str, fraction: float, floor_ratio: float) -> str:
    """The rate table as Markdown, with the definitions of every column."""
    lines = [
        f"# {dataset}: loss exponents per iteration, measured vs predicted",
        "",
        "Every rate r is a loss exponent per iteration, ℓ(k) ∝ e^{−r k}; larger is faster. **measured**: −slope of "
        "log ℓ (least squares) over the window from the first 10× drop of the loss to where it first falls below "
        f"{floor_ratio:g}·ℓ(0) or the run ends; mean over seeds (± std). The window is long on purpose: momentum makes "
        "the loss oscillate, and a fit over many periods measures its mean decay. Each prediction: its rate fitted "
        "over the **same window**, and in parentheses its asymptotic rate (slowest mode carrying initial residual). "
        "lin: NTK-linearized recursion with H∞ or with "
        "this initialisation's H(0). ODE: high-resolution ODE (time t = k√η) with the damping α matched to β "
        "(α = ((1−β)/(1+β))²/η) or the paper's α = λ0/2. theorem: exponent of the Theorem 1 (HB) / 2 (NAG) bound, "
        "ρ·√(λ0/2)·√η, ρ = 2 − √2 (HB) or ρ\\*_NAG(√(2λ0η)/4) (NAG); a bound, so a measured rate at or above it is "
        "consistent with the theorem. e ≤ T: the worst seed's trajectory error sup_{k≤T} ‖u(k) − u_lin(k)‖/‖u(0) − y‖ "
        "of the network's outputs from the linearized model's (H(0) or H∞), T each run's last step ≤ "
        f"{fraction:g}·K with ℓ ≥ {floor_ratio:g}·ℓ(0) (T: smallest–largest over the seeds). The CSV also has the "
        "relative loss error max_{k≤T} |ℓ_lin − ℓ|/ℓ (max_relerr_*), a descriptive number: it peaks where the "
        "oscillating loss passes through a trough.",
        "",
        "| method | m | η | β | seeds | window | measured | lin H∞ | lin H(0) | ODE α(β) | ODE α=λ0/2 | theorem | "
        "measured / theorem | T | e H(0) ≤ T | e H∞ ≤ T |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in table.itertuples(index=False):
        window = f"{r.window_start:.0f}–{r.window_end:.0f}" if math.isfinite(r.window_start) else "–"
        std = f" ± {r.rate_measured_std:.2g}" if math.isfinite(r.rate_measured_std) else ""
        lines.append(
            f"| {methods.get(r.method).label} | {r.width} | 1/({r.eta_divisor}λm) = {r.eta:.3g} | "
            f"{beta_text(r.beta)} | {r.n_seeds} | {window} | {_g(r.rate_measured)}{std} | "
            f"{_pair(r.rate_lin_inf_window, r.rate_lin_inf_asymptotic)} | "
            f"{_pair(r.rate_lin_h0_window, r.rate_lin_h0_asymptotic)} | "
            f"{_pair(r.rate_ode_beta_window, r.rate_ode_beta_asymptotic)} | "
            f"{_pair(r.rate_ode_paper_window, r.rate_ode_paper_asymptotic)} | {_g(r.rate_theorem)} | "
            f"{_g(r.measured_over_theorem)} | {_range(pd.Series([r.horizon, r.horizon_max]))} | "
            f"{_pct(r.max_traj_err_lin_h0)} | {_pct(r.max_traj_err_lin_inf)} |"
        )
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %" if math.isfinite(x) else "–"


# --------------------------------------------------------------------------------------------------------------------
# CLI


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", nargs="+", required=True, help="prediction Parquets (theory predict --run), .json beside")
    p.add_argument("--dataset", help="dataset to use when the files hold several")
    p.add_argument("--horizon-fraction", type=float, default=defaults.THEORY_HORIZON,
                   help="T is at most this fraction of the run (default %(default)s)")
    p.add_argument("--floor-ratio", type=float, default=HORIZON_FLOOR_RATIO,
                   help="T ends before the measured loss falls below this times ℓ(0) (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.theory_report", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="name", required=True)
    o = sub.add_parser("overlay", help="measured vs predicted loss curves, a panel per (m, η, β) and method")
    _inputs(o)
    o.add_argument("--seed", type=int, help="seed to draw (default: the smallest present)")
    o.add_argument("--mean-seeds", action="store_true", help="draw the mean over seeds instead of one seed")
    w = sub.add_parser("width", help="trajectory error of the linearized model up to T vs m, fitted slope")
    _inputs(w)
    for p in (o, w):
        p.add_argument("--pdf", required=True)
        p.add_argument("--png", required=True)
    t = sub.add_parser("table", help="rates per setting: measured, linearized, ODE, theorem (Markdown + CSV)")
    _inputs(t)
    t.add_argument("--out-md", required=True)
    t.add_argument("--out-csv", required=True)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 < args.horizon_fraction <= 1.0 or not 0.0 <= args.floor_ratio < 1.0:
        raise UserError(f"--horizon-fraction must lie in (0, 1] and --floor-ratio in [0, 1), got "
                        f"{args.horizon_fraction} and {args.floor_ratio}")
    pred = load_predictions(args.pred, args.dataset)
    kw = {"fraction": args.horizon_fraction, "floor_ratio": args.floor_ratio}
    if args.name == "table":
        table = rate_table(pred, **kw)
        with atomic_path(args.out_md) as tmp:
            tmp.write_text(table_markdown(table, pred.dataset, **kw))
        with atomic_path(args.out_csv) as tmp:
            with_beta_text(table).to_csv(tmp, index=False, float_format="%.10g")
        print(f"table: {len(table)} settings -> {args.out_md}, {args.out_csv}")
        return 0
    if args.name == "overlay":
        fig = figure_overlay(pred, seed=args.seed, mean_seeds=args.mean_seeds, **kw)
    else:
        fig, fits = figure_width_error(pred, **kw)
        for p, f in fits.items():
            print(f"width: {p} slope={f['slope']:.4g} interval=[{f['lo']:.3g}, {f['hi']:.3g}] seed bootstrap="
                  f"[{f['ci_lo']:.3g}, {f['ci_hi']:.3g}] widths={f['widths']} horizons={f['horizons']} points={f['n_points']}")
    save_figure(fig, args.pdf, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
