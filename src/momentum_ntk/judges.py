"""The judges of the paper's claims (library): the :data:`REGISTRY`, one :class:`Claim` per claim (statement, paper
reference, thresholds with their defaults, judge, claims.md columns, how it is judged), and the judges: each reads the
:class:`Evidence` and a thresholds dict (default :data:`THRESHOLDS`) and returns one row per setting with a ``verdict``
(:data:`HOLDS`, :data:`FAILS`, :data:`INCONCLUSIVE`) and a ``reason``; the claims stage renders them.

What each judge measures (k the iteration, ℓ the training loss, m the width, λ0 = λmin(H∞)):

1. :func:`claim_linear`: ρ = exp(slope) of the least-squares line log L(k) ≈ a + k log ρ, L(k) = min_{j≤k} ℓ(j)
   (the lower envelope; that of an oscillating linear recursion decays exactly geometrically), per seed.
2. :func:`claim_nag_below`: the share of compared iterations k with mean_seeds ℓ_NAG(k) < mean_seeds ℓ_HB(k), and
   the same share per seed pair; compared until both methods sit on a loss floor.
3. :func:`claim_width_scaling`: b in log max_r‖w_r(t) − w_r(0)‖ ≈ a + b log m per seed; holds needs the interval of
   the mean b (:func:`interval_verdict`) ≤ −1/2 + slope_tol.
4. :func:`claim_gram`: min_t λmin(H(t))/λ0 ≥ ½ (Lemma 3), with Lemma 2's premise λmin(H(0)) ≥ ¾λ0 told apart.
5. :func:`claim_bound`: ℓ(k) ≤ C e^{−r k} (Theorems 1-2, eqs. 28-29) at every checked step and fitted rate r_fit ≥ r
   (:func:`bound_rates`; a slower envelope a − r_fit k crosses the bound at k* = (log C − a)/(r − r_fit)).
6. :func:`claim_linearization`: sup_{k≤T} e(k) ≤ traj_err_max, e(k) = ‖u(k) − u_lin(k)‖/‖u(0) − y‖ with u_lin the
   network linearized at its own W(0) (kernel H(0)); NTK theory bounds e by O(1/√m).

Also :func:`gram_per_run` (λmin(H(t))/λ0 per run) and :func:`width_slopes` (b in e ∝ m^b, with its uncertainty).
The list below is generated from the records (:func:`registry_doc`).

Claims (paper §4-§5):
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import methods, uncertainty
from momentum_ntk.compare import TRAJ_STEPS, width_slope_uncertainty
from momentum_ntk.rates import fit_runs, width_exponents
from momentum_ntk.tables import PAIR_KEYS, RUN_KEYS, SERIES_KEYS, SETTING_KEYS

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


# ---- Claims 1-4, from the aggregate outputs
def claim_linear(summary: pd.DataFrame, theorem: pd.DataFrame | None = None, th: dict | None = None) -> pd.DataFrame:
    """Claim 1 per setting (rule: the record's ``how``) from the aggregate summary's per-seed envelope fits; every
    condition is on the worst seed. inconclusive also for too little decay or too short a window to tell, or R² in
    between. With ``theorem``: ``theorem_exponent`` and ``fitted_over_theorem`` = −log ρ / theorem_exponent."""
    th = THRESHOLDS if th is None else th
    rows = []
    for _, r in summary.iterrows():
        row = {k: r[k] for k in SETTING_KEYS}
        row.update(n_seeds=int(r["n_seeds"]), n_diverged=int(r["n_diverged"]), rho=float(r["rate_rho"]),
                   rho_max=float(r["rate_rho_max"]), r2_min=float(r["rate_r2_min"]),
                   decades_min=float(r["rate_decades_min"]), coverage=float(r["rate_coverage_min"]),
                   floor_ratio_max=float(r["rate_floor_ratio_max"]),
                   osc_decades=float(r.get("rate_osc_decades_max", math.nan)),
                   window=f"{r['rate_start_mean']:.0f}-{r['rate_end_mean']:.0f}")
        if row["n_diverged"] > 0:
            v, why = FAILS, f"{row['n_diverged']}/{row['n_seeds']} seeds diverged"
        elif not math.isfinite(row["rho_max"]):
            v, why = INCONCLUSIVE, "no rate could be fitted"
        elif row["rho_max"] >= 1:
            v, why = FAILS, (f"a seed's loss envelope does not decay (ρ_max = {row['rho_max']:.4g} >= 1: no new low "
                             "in the fitted window)")
        elif row["floor_ratio_max"] >= th["stall_ratio"]:
            v, why = FAILS, (f"the loss stalls at {row['floor_ratio_max']:.2g}·ℓ(0) (>= {th['stall_ratio']:g}): it "
                             "stops decaying")
        elif row["decades_min"] >= th["min_decades"] and row["r2_min"] < th["r2_fail"]:
            v, why = FAILS, (f"R² {row['r2_min']:.3f} < {th['r2_fail']} over {row['decades_min']:.1f} decades: "
                             "not linear")
        elif row["floor_ratio_max"] > th["max_floor_ratio"]:
            v, why = INCONCLUSIVE, (f"the loss levels off at {row['floor_ratio_max']:.2g}·ℓ(0) (> "
                                    f"{th['max_floor_ratio']:g}): a plateau, or a low-precision floor")
        elif (row["r2_min"] >= th["r2_hold"] and row["decades_min"] >= th["min_decades"]
              and row["coverage"] >= th["min_coverage"]):
            v, why = HOLDS, (f"ρ = {row['rho']:.5g} < 1, R² >= {row['r2_min']:.3f} over >= "
                             f"{row['decades_min']:.1f} decades, >= {row['coverage']:.0%} of the run")
        else:
            parts = []
            if row["decades_min"] < th["min_decades"]:
                parts.append(f"only {row['decades_min']:.2g} decades fitted (< {th['min_decades']})")
            if row["r2_min"] < th["r2_hold"]:
                parts.append(f"R² {row['r2_min']:.3f} < {th['r2_hold']}")
            if not row["coverage"] >= th["min_coverage"]:
                parts.append(f"window covers {row['coverage']:.0%} of the run (< {th['min_coverage']:.0%})")
            v, why = INCONCLUSIVE, "; ".join(parts)
        row.update(verdict=v, reason=why)
        rows.append(row)
    out = pd.DataFrame(rows)
    if theorem is not None and not out.empty:
        out = out.merge(theorem, on=SETTING_KEYS, how="left")
        out["fitted_over_theorem"] = -np.log(out["rho"]) / out["theorem_exponent"]
    return out


def _compare_pair(base: pd.DataFrame, acc: pd.DataFrame, cutoff: float, tie_rtol: float) -> dict[str, Any]:
    """Fractions of compared iterations where the accelerated method is below the baseline: seed means, seed pairs."""
    def wide(g: pd.DataFrame) -> pd.DataFrame:
        w = g.pivot_table(index="step", columns="seed", values="loss", aggfunc="first")
        return w.where(np.isfinite(w))

    h, n = wide(base), wide(acc)
    steps = h.index.intersection(n.index)
    steps = steps[steps < cutoff]
    h, n = h.loc[steps], n.loc[steps]
    hm, nm = h.mean(axis=1, skipna=False), n.mean(axis=1, skipna=False)
    ok = np.isfinite(hm) & np.isfinite(nm) & ((hm - nm).abs() > tie_rtol * hm.abs())
    frac = float((nm[ok] < hm[ok]).mean()) if ok.any() else math.nan
    seed_fracs = []
    for s in h.columns.intersection(n.columns):
        a, b = h[s], n[s]
        k = np.isfinite(a) & np.isfinite(b) & ((a - b).abs() > tie_rtol * a.abs())
        if k.any():
            seed_fracs.append(float((b[k] < a[k]).mean()))
    last = steps[ok.to_numpy()][-1] if ok.any() else None
    return {"n_compared": int(ok.sum()), "first_compared": int(steps[ok.to_numpy()][0]) if ok.any() else -1,
            "last_compared": int(last) if last is not None else -1, "frac_mean_below": frac,
            "n_seed_pairs": len(seed_fracs), "seed_frac_mean": float(np.mean(seed_fracs)) if seed_fracs else math.nan,
            "seed_frac_min": float(np.min(seed_fracs)) if seed_fracs else math.nan,
            "ratio_at_last": float(nm.loc[last] / hm.loc[last]) if last is not None else math.nan}


def _first_floor(fits: pd.DataFrame) -> float:
    """Earliest detected floor step over the seeds of one method; inf if none of them levels off."""
    floors = fits["floor_step"].to_numpy(dtype=float)
    return float(np.nanmin(floors)) if np.isfinite(floors).any() else math.inf


def claim_nag_below(runs: pd.DataFrame, fits: pd.DataFrame, th: dict | None = None) -> pd.DataFrame:
    """Claim 2 per (dataset, m, η, β) from the long run table and the per-run fits (:func:`run_fits`; their floor
    steps end the comparison). inconclusive also: < min_compared_steps compared iterations, or HB diverged."""
    th = THRESHOLDS if th is None else th
    runs = runs.assign(method=runs["method"].str.lower())
    rows = []
    b, a = methods.BASELINE, methods.ACCELERATED  # HB, NAG
    B, A = methods.get(b).label, methods.get(a).label
    for key, g in runs[runs["method"].isin([b, a])].groupby(PAIR_KEYS, sort=True):
        base, acc = g[g["method"] == b], g[g["method"] == a]
        row = dict(zip(PAIR_KEYS, key))
        if base.empty or acc.empty:
            row.update(verdict=INCONCLUSIVE, reason=f"only {B if acc.empty else A} runs present")
            rows.append(row)
            continue
        f = fits[(fits[PAIR_KEYS] == list(key)).all(axis=1)]
        cutoff = max(_first_floor(f[f["method"] == m]) for m in (b, a))
        b_div, a_div = bool(base["diverged"].any()), bool(acc["diverged"].any())
        row.update(_compare_pair(base, acc, cutoff, th["tie_rtol"]))
        row.update({f"{b}_diverged": b_div, f"{a}_diverged": a_div, "floor_cutoff": cutoff,
                    f"rho_{b}": float(np.exp(f.loc[f["method"] == b, "slope"].mean())),
                    f"rho_{a}": float(np.exp(f.loc[f["method"] == a, "slope"].mean()))})
        fm, sm = row["frac_mean_below"], row["seed_frac_min"]
        if a_div and not b_div:
            v, why = FAILS, f"{A} diverged where {B} did not"
        elif b_div:
            v, why = INCONCLUSIVE, f"{B} diverged" + (f" (and {A})" if a_div else "")
        elif row["n_compared"] < th["min_compared_steps"]:
            v, why = INCONCLUSIVE, f"only {row['n_compared']} comparable iterations (< {th['min_compared_steps']})"
        elif fm >= th["frac_hold"] and sm >= th["seed_frac_hold"]:
            v, why = HOLDS, (f"mean {A} < mean {B} at {fm:.1%} of {row['n_compared']} iterations; worst seed pair "
                             f"{sm:.1%}")
        elif fm <= th["frac_fail"]:
            v, why = FAILS, (f"mean {A} < mean {B} at only {fm:.1%} of {row['n_compared']} iterations "
                             f"({A} at or above {B} at {1 - fm:.1%})")
        else:
            v, why = INCONCLUSIVE, (f"mean {A} below at {fm:.1%}, worst seed pair {sm:.1%} (holds needs "
                                    f"{th['frac_hold']:.0%} / {th['seed_frac_hold']:.0%}, fails at <= "
                                    f"{th['frac_fail']:.0%})")
        row.update(verdict=v, reason=why)
        rows.append(row)
    return pd.DataFrame(rows)


def claim_width_scaling(runs: pd.DataFrame, th: dict | None = None) -> pd.DataFrame:
    """Claim 3 per (dataset, method, η, β) from the long run table: per-seed exponents (rates.width_exponents),
    their interval (:func:`_exponent_uncertainty`) judged by :func:`interval_verdict`; ``matches_minus_half``:
    |mean + 1/2| ≤ slope_tol."""
    th = THRESHOLDS if th is None else th
    runs = runs.assign(method=runs["method"].str.lower())
    expo = width_exponents(runs)
    rows = []
    for key, g in runs.groupby(SERIES_KEYS, sort=True):
        e = expo[(expo[SERIES_KEYS] == list(key)).all(axis=1)] if not expo.empty else expo
        sl = e["slope"].to_numpy(dtype=float) if not e.empty else np.array([])
        sl = sl[np.isfinite(sl)]
        n_w = int(e["n_widths"].max()) if not e.empty else 0
        row = dict(zip(SERIES_KEYS, key))
        row.update(
            widths=",".join(str(int(w)) for w in sorted(g["width"].unique())), n_widths=n_w, n_seeds=int(sl.size),
            n_diverged_runs=int(g.groupby(["width", "seed"])["diverged"].first().sum()),
            slope_mean=float(sl.mean()) if sl.size else math.nan,
            slope_std=float(sl.std(ddof=1)) if sl.size > 1 else (0.0 if sl.size == 1 else math.nan),
            slope_min=float(sl.min()) if sl.size else math.nan, slope_max=float(sl.max()) if sl.size else math.nan,
        )
        row["matches_minus_half"] = bool(sl.size and abs(row["slope_mean"] + 0.5) <= th["slope_tol"])
        unc = _exponent_uncertainty(g)
        row.update(slope_lo=unc["lo"], slope_hi=unc["hi"], slope_ci_lo=unc["ci_lo"], slope_ci_hi=unc["ci_hi"],
                   fit_step=unc["fit_step"])
        bar = -0.5 + th["slope_tol"]
        if n_w < th["min_widths"] or not sl.size:
            v, why = INCONCLUSIVE, f"{n_w} usable width(s) (< {th['min_widths']})"
        else:
            v = interval_verdict(unc["lo"], unc["hi"], bar, below=True)
            where = {HOLDS: "all of it ≤", FAILS: "all of it above", INCONCLUSIVE: "it straddles"}[v]
            why = (f"interval of the exponent [{unc['lo']:+.3f}, {unc['hi']:+.3f}]: {where} the bar −1/2 + "
                   f"{th['slope_tol']:g} = {bar:+.2f}")
            if v == HOLDS and not row["matches_minus_half"]:
                why += "; decays faster than 1/√m"
        if row["n_diverged_runs"]:
            why += f"; {row['n_diverged_runs']} diverged run(s) left out"
        if sl.size:
            interval = uncertainty.interval_text(row["slope_mean"], (unc["ci_lo"], unc["ci_hi"]),
                                                 (unc["spec_lo"], unc["spec_hi"]))
            why += f"; exponent {interval}, fitted on m = {row['widths']} at step {unc['fit_step']}"
        row.update(verdict=v, reason=why)
        rows.append(row)
    return pd.DataFrame(rows)


def interval_verdict(lo: float, hi: float, bar: float, *, below: bool) -> str:
    """The verdict of a claim that a quantity lies below (``below``) or above ``bar``, from its reported interval
    [lo, hi]: holds when the whole interval is on the claimed side (the bar itself counts as that side), fails when
    the whole interval is on the other side, inconclusive when it straddles the bar or is not finite."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if not below:
        lo, hi, bar = -hi, -lo, -bar
    if hi <= bar:
        return HOLDS
    if lo > bar:
        return FAILS
    return INCONCLUSIVE


def _exponent_uncertainty(runs: pd.DataFrame) -> dict[str, Any]:
    """Seed bootstrap and drop-one-width range of the mean distance exponent of one setting (final step of each
    non-diverged run), and the step the distances were taken at."""
    last = runs.sort_values("step").groupby(["width", "seed"], sort=True).tail(1)
    last = last[~last["diverged"] & np.isfinite(last["max_dist"]) & (last["max_dist"] > 0)]
    unc = uncertainty.exponent_summary(last, value="max_dist")
    return unc | {"fit_step": int(last["step"].max()) if len(last) else -1}


# The width slopes claims.md reports: name -> (column of compare.run_errors, what it is).
SLOPE_STATISTICS = {
    "lin_h0": ("max_traj_err_lin_h0", "sup_{k≤T} e(k), H(0)"),
    "lin_inf": ("max_traj_err_lin_inf", "sup_{k≤T} e(k), H∞"),
    **{f"lin_h0_k{k}": (f"traj_err_lin_h0_k{k}", f"e({k}), H(0)") for k in TRAJ_STEPS},
}


def width_slopes(curves_by_dataset: dict[str, Any], fraction: float) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset, the width slope of the trajectory error e(k) (sup up to each run's T for the H(0) and H∞
    linearizations, and e at the fixed steps for H(0)) with its uncertainty
    (:func:`momentum_ntk.compare.width_slope_uncertainty`): {dataset: {statistic: {...}}}, the statistics of
    :data:`SLOPE_STATISTICS`."""
    return {ds: {name: width_slope_uncertainty(pred.curves, col, fraction=fraction)
                 for name, (col, _) in SLOPE_STATISTICS.items()} for ds, pred in curves_by_dataset.items()}


def gram_per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: λmin(H(0))/λ0 (``h0_ratio``), the minimum of λmin(H(t))/λ0 over the tracked steps (``min_ratio``) and
    the step where it occurs (``min_step``), the tracked-step count and λmin's minimum; λ0 = lambda0_rows."""
    rows = []
    for key, g in runs.groupby(RUN_KEYS, sort=True):
        g = g[np.isfinite(g["lambda_min_H"])].sort_values("step")
        lam0 = float(g["lambda0_rows"].iloc[0]) if len(g) else math.nan
        ratio = g["lambda_min_H"].to_numpy(dtype=float) / lam0 if len(g) and lam0 > 0 else np.array([])
        at0 = ratio[g["step"].to_numpy() == 0] if ratio.size else ratio
        i = int(np.argmin(ratio)) if ratio.size else -1
        rows.append({**dict(zip(RUN_KEYS, key)), "n_tracked": int(len(g)),
                     "h0_ratio": float(at0[0]) if at0.size else math.nan,
                     "min_ratio": float(ratio[i]) if i >= 0 else math.nan,
                     "min_step": int(g["step"].iloc[i]) if i >= 0 else -1,
                     "lambda_min_H_min": float(g["lambda_min_H"].min()) if len(g) else math.nan})
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "n_tracked", "h0_ratio", "min_ratio", "min_step",
                                       "lambda_min_H_min"])


def claim_gram(summary: pd.DataFrame, runs: pd.DataFrame, th: dict | None = None) -> pd.DataFrame:
    """Claim 4 per setting: Lemma 3's λmin(H(t)) ≥ λ0/2 from :func:`gram_per_run`, its premise (Lemma 2, ≥ ¾λ0 at
    k = 0) told apart from drift. inconclusive: no tracked eigenvalue, λ0 missing, or a diverged run whose tracked
    minimum is ≥ gram_ratio."""
    th = THRESHOLDS if th is None else th
    per_run = gram_per_run(runs)
    rows = []
    for _, r in summary.iterrows():
        key = tuple(r[k] for k in SETTING_KEYS)
        g = per_run[(per_run[SETTING_KEYS] == list(key)).all(axis=1)]
        row = {k: r[k] for k in SETTING_KEYS}
        ok = g[np.isfinite(g["min_ratio"])]
        worst = ok.loc[ok["min_ratio"].idxmin()] if len(ok) else None
        row.update(n_seeds=int(r["n_seeds"]), n_diverged=int(r["n_diverged"]),
                   gram_ratio_min=float(worst["min_ratio"]) if worst is not None else math.nan,
                   gram_ratio_min_mean=float(ok["min_ratio"].mean()) if len(ok) else math.nan,
                   min_step=int(worst["min_step"]) if worst is not None else -1,
                   h0_ratio_min=float(ok["h0_ratio"].min()) if len(ok) else math.nan,
                   h0_ratio_max=float(ok["h0_ratio"].max()) if len(ok) else math.nan,
                   n_premise_failed=int((ok["h0_ratio"] < th["premise_ratio"]).sum()),
                   n_tracked_min=int(g["n_tracked"].min()) if len(g) else 0,
                   lambda_min_H_min=float(g["lambda_min_H_min"].min()) if len(g) else math.nan)
        row["positive_definite"] = bool(row["lambda_min_H_min"] > 0)
        ratio, lo, hi, npf = row["gram_ratio_min"], row["h0_ratio_min"], row["h0_ratio_max"], row["n_premise_failed"]
        start = (f"λmin(H(0))/λ0 = {lo:.2f}–{hi:.2f}" if len(ok) > 1 else f"λmin(H(0))/λ0 = {lo:.2f}")
        if not math.isfinite(ratio) or row["n_tracked_min"] == 0:
            v, why = INCONCLUSIVE, "no tracked λmin(H(t)) or λ0 of the tracked rows"
        elif ratio < th["gram_ratio"]:
            low = (f"min λmin(H(t))/λ0 = {ratio:.3f} < {th['gram_ratio']:g} (step {row['min_step']})"
                   + ("" if row["positive_definite"] else "; H(t) not even positive definite"))
            if npf:
                v, why = FAILS, (f"premise fails at initialisation: {start}, below ¾ (Lemma 2) in {npf}/{len(ok)} "
                                 f"seed(s); {low}")
            else:
                v, why = FAILS, f"drift: the premise holds ({start} ≥ ¾ in every seed), then {low}"
        elif row["n_diverged"]:
            v, why = INCONCLUSIVE, f"{row['n_diverged']} seed(s) diverged; tracked minimum {ratio:.3f}"
        else:
            v, why = HOLDS, (f"min λmin(H(t))/λ0 = {ratio:.3f} >= {th['gram_ratio']:g} ({row['n_tracked_min']}+ "
                             f"steps); {start}")
        row.update(verdict=v, reason=why)
        rows.append(row)
    return pd.DataFrame(rows)


# ---- Claims 5-6, from the theory records (``theory predict --run``)
def run_fits(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-run envelope fits (:func:`momentum_ntk.rates.fit_runs`) that claims 2 and 5 read, fitted once: the runs
    of the compared pair (methods.BASELINE, methods.ACCELERATED) and of every method with a theorem."""
    fitted = {methods.BASELINE, methods.ACCELERATED} | {m.name for m in methods.METHODS.values() if m.has_theorem}
    runs = runs.assign(method=runs["method"].str.lower())
    return fit_runs(runs[runs["method"].isin(sorted(fitted))])


def bound_rates(theory: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """The theory rows of the methods with a theorem (HB, NAG), each with its run's fitted loss rate: ``rate_fitted``
    = −slope of the envelope fit (rates.fit_runs, the rate claim 1 and Table 1 report), ``rate_ratio`` = rate_fitted /
    rate_theorem and, for ratio < 1, ``crossing_step`` k* = (log C − intercept)/(rate_theorem − rate_fitted), where
    the fitted envelope meets the bound C e^{−rate_theorem k} (NaN otherwise)."""
    sub = theory[theory["method"].isin([m.name for m in methods.METHODS.values() if m.has_theorem])]
    out = sub.merge(fits[[*RUN_KEYS, "slope", "intercept"]], on=RUN_KEYS, how="left")
    out["rate_fitted"] = -out["slope"]
    out["rate_ratio"] = out["rate_fitted"] / out["rate_theorem"]
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (np.log(out["bound_prefactor"]) - out["intercept"]) / (out["rate_theorem"] - out["rate_fitted"])
    out["crossing_step"] = np.where(out["rate_ratio"] < 1.0, k, np.nan)
    return out


def claim_bound(theory: pd.DataFrame, fits: pd.DataFrame, th: dict | None = None) -> pd.DataFrame:
    """Claim 5 per setting of a method with a theorem: measured ℓ(k) ≤ C e^{−r_thm k} at every checked step (the
    theory records' bound check) and every seed's fitted rate ≥ min_rate_ratio·r_thm (:func:`bound_rates`). C is
    6ℓ̂(0)/λ0 (HB, eq. 28) or 26ℓ̂(0)/(3λ0) (NAG, eq. 29), ℓ̂(0) = ½Δ0ᵀH(0)Δ0 of the run's own initialisation."""
    th = THRESHOLDS if th is None else th
    rows = []
    sub = bound_rates(theory, fits)
    for key, g in sub.groupby(SETTING_KEYS, sort=True):
        violated = g[g["fraction_holds"] < 1.0]
        slow = g[g["rate_ratio"] < th["min_rate_ratio"]]
        first = violated["first_violation_step"].min() if not violated.empty else math.nan
        row = dict(zip(SETTING_KEYS, key))
        row.update(n_seeds=len(g), steps_checked_min=int(g["steps_checked"].min()),
                   fraction_holds_min=float(g["fraction_holds"].min()), n_seeds_violated=len(violated),
                   first_violation_step=first, max_measured_over_bound=float(g["max_measured_over_bound"].max()),
                   violation_loss_ratio=float(violated["violation_loss_ratio"].max()) if not violated.empty
                   else math.nan, rate_ratio_min=float(g["rate_ratio"].min()),
                   rate_ratio_max=float(g["rate_ratio"].max()), n_seeds_slower=len(slow),
                   crossing_step=float(slow["crossing_step"].min()) if not slow.empty else math.nan,
                   prefactor_over_loss0=float((g["bound_prefactor"] / g["loss0"]).median()),
                   beta_theorem=float(g["beta_theorem"].iloc[0]))
        slack, ratio = row["max_measured_over_bound"], row["rate_ratio_min"]
        sizes = (f"slack max ℓ/bound = {slack:.2g}, fitted rate / theorem's = {ratio:.2f}–{row['rate_ratio_max']:.2f}; "
                 f"the prefactor is {row['prefactor_over_loss0']:.3g}·ℓ(0)")
        if row["steps_checked_min"] < th["bound_min_steps"]:
            v, why = INCONCLUSIVE, (f"only {row['steps_checked_min']} steps with a measured loss and a bound "
                                    f"(< {th['bound_min_steps']:g})")
        elif len(violated):
            v, why = FAILS, (f"measured loss above the bound in {len(violated)}/{len(g)} seed(s): at "
                             f"{1 - row['fraction_holds_min']:.1%} of the steps of the worst seed, first at step "
                             f"{first:.0f} (then ℓ = {row['violation_loss_ratio']:.2g}·ℓ(0)); max measured/bound "
                             f"{slack:.3g}; fitted rate / theorem's = {ratio:.2f}–{row['rate_ratio_max']:.2f}")
        elif not math.isfinite(ratio):
            v, why = INCONCLUSIVE, f"below the bound at every step, but no loss rate could be fitted; {sizes}"
        elif len(slow):
            v, why = FAILS, (f"below the bound within the run, but the fitted rate is slower than the theorem's in "
                             f"{len(slow)}/{len(g)} seed(s) (ratio {ratio:.2f} < {th['min_rate_ratio']:g}): the "
                             f"fitted envelope crosses the bound at step ≈ {row['crossing_step']:.3g} "
                             f"(extrapolated); {sizes}")
        else:
            v, why = HOLDS, (f"measured ≤ bound at every checked step (≥ {row['steps_checked_min']} per seed) and "
                             f"every seed decays at least at the theorem's rate; {sizes}")
        row.update(verdict=v, reason=why)
        rows.append(row)
    return pd.DataFrame(rows)


def claim_linearization(theory: pd.DataFrame, th: dict | None = None) -> pd.DataFrame:
    """Claim 6 per setting from the theory records: sup_{k≤T} e(k) of the H(0) linearization per seed, T the run's
    horizon (:func:`momentum_ntk.compare.horizon_step`). Reported beside: e at fixed steps, the H∞ sup and the
    relative loss error (descriptive only: it peaks where an oscillating loss passes through a trough)."""
    th = THRESHOLDS if th is None else th
    x = th["traj_err_max"]
    rows = []
    for key, g in theory.groupby(SETTING_KEYS, sort=True):
        ok = g[(g["horizon"] >= th["min_horizon_steps"]) & np.isfinite(g["traj_h0"])]
        row = dict(zip(SETTING_KEYS, key))
        row.update(n_seeds=len(g), n_compared=len(ok), horizon_min=float(g["horizon"].min()),
                   horizon_max=float(g["horizon"].max()),
                   traj_h0_max=float(ok["traj_h0"].max()) if len(ok) else math.nan,
                   traj_h0_min=float(ok["traj_h0"].min()) if len(ok) else math.nan,
                   **{f"traj_h0_k{k}_max": float(ok[f"traj_h0_k{k}"].max()) if len(ok) else math.nan
                      for k in TRAJ_STEPS},
                   traj_inf_max=float(ok["traj_inf"].max()) if len(ok) else math.nan,
                   relerr_h0_max=float(ok["relerr_h0"].max()) if len(ok) else math.nan)
        n_within = int((ok["traj_h0"] <= x).sum())
        short = f"; {len(g) - len(ok)} seed(s) left out (T < {th['min_horizon_steps']:g})" if len(ok) < len(g) else ""
        if not len(ok):
            v, why = INCONCLUSIVE, (f"no seed with a horizon T ≥ {th['min_horizon_steps']:g} steps (the loss falls "
                                    "below 1e-4·ℓ(0) or the run ends too early)")
        elif n_within == len(ok):
            v, why = HOLDS, (f"sup_(k≤T) e(k) = {row['traj_h0_max']:.1%} (worst seed) ≤ {x:.0%}, T = "
                             f"{row['horizon_min']:.0f}–{row['horizon_max']:.0f}{short}")
        elif n_within == 0:
            v, why = FAILS, (f"sup_(k≤T) e(k) = {row['traj_h0_min']:.1%} even in the best seed (worst "
                             f"{row['traj_h0_max']:.1%}) > {x:.0%}, T = {row['horizon_min']:.0f}–"
                             f"{row['horizon_max']:.0f}{short}")
        else:
            v, why = INCONCLUSIVE, (f"{n_within}/{len(ok)} seeds within {x:.0%} (sup_(k≤T) e(k) "
                                    f"{row['traj_h0_min']:.1%}–{row['traj_h0_max']:.1%}){short}")
        row.update(verdict=v, reason=why)
        rows.append(row)
    return pd.DataFrame(rows)


# ---- The registry: one record per claim. claims.md, claims.json and this module's docstring are generated from it.
@dataclass(frozen=True)
class Evidence:
    """What the judges read: the aggregate summary, the long run table, its per-run loss-rate fits (:func:`run_fits`,
    fitted once), the theorem exponents per setting (NTK summaries) and the theory records (None: not given)."""

    summary: pd.DataFrame
    runs: pd.DataFrame
    fits: pd.DataFrame
    theorem: pd.DataFrame | None = None
    theory: pd.DataFrame | None = None


@dataclass(frozen=True)
class Claim:
    """One claim: statement, where the paper makes it, thresholds (name -> value, printed in claims.md), the judge of
    every setting (Evidence, thresholds -> DataFrame with 'verdict', 'reason'), claims.md columns, how it is judged."""

    id: str
    statement: str
    paper: str
    thresholds: dict[str, float]
    judge: Callable[[Evidence, dict[str, float]], pd.DataFrame]
    columns: tuple[str, ...]
    how: str
    needs_theory: bool = False  # judged only when the theory stage's records are given (--theory)
    shows_width_slopes: bool = False  # its claims.md section carries the width slopes of e (width_slopes)


_TRAJ_ERR_MAX = 0.10
REGISTRY: tuple[Claim, ...] = (
    Claim(
        "linear_convergence", "HB and NAG converge linearly (training loss decays at a linear rate)", "§5.2, Fig. 2",
        {
            "r2_hold": 0.95,  # worst seed's R² of the log-loss fit for 'holds'
            "r2_fail": 0.80,  # below this over >= min_decades the decay is clearly not linear
            "min_decades": 2.0,  # the fit window must span this many decades of loss
            "min_coverage": 0.5,  # window length / (steps before the floor or end of run)
            "max_floor_ratio": 1e-4,  # a loss plateau above this fraction of ℓ(0) is no numerical floor
            "stall_ratio": 0.1,  # a plateau at or above this fraction of ℓ(0) means the loss stopped decaying: fails
        },
        lambda e, th: claim_linear(e.summary, e.theorem, th),
        ("dataset", "method", "width", "eta_divisor", "beta", "verdict", "rho", "r2_min", "decades_min", "coverage",
         "window", "floor_ratio_max", "osc_decades", "n_diverged", "theorem_exponent", "fitted_over_theorem",
         "reason"),
        "Fit: least squares of log L vs step, L = running minimum of the loss (its lower envelope, robust to the "
        "oscillation of momentum), from the first 10× drop to the end or a detected floor; ρ = exp(slope), R² of that "
        "fit. holds: no divergence, ρ < 1 for every seed, worst-seed R² ≥ r2_hold over ≥ min_decades, window ≥ "
        "min_coverage of the run before its floor. fails: divergence, ρ ≥ 1 (no new low), a stall at ≥ "
        "stall_ratio·ℓ(0), or R² < r2_fail over ≥ min_decades. A plateau above max_floor_ratio·ℓ(0) is inconclusive. "
        "osc_decades: largest rise of ℓ above its running minimum in a window. η is shown as its divisor c in "
        "η = 1/(cλm).",
    ),
    Claim(
        "nag_below_hb", "NAG's training loss lies below HB's at the same iteration, in every setting", "§5.2, Fig. 2",
        {
            "frac_hold": 0.95,  # fraction of compared iterations with mean NAG < mean HB for 'holds'
            "seed_frac_hold": 0.90,  # the same fraction for the worst seed pair
            "frac_fail": 0.75,  # at or below this, NAG is above HB too often: 'fails'
            "min_compared_steps": 50,  # fewer compared iterations is 'inconclusive'
            "tie_rtol": 1e-12,  # |NAG − HB| <= tie_rtol·HB counts as a tie (not compared)
        },
        lambda e, th: claim_nag_below(e.runs, e.fits, th),
        ("dataset", "width", "eta_divisor", "beta", "verdict", "frac_mean_below", "seed_frac_min", "n_compared",
         "ratio_at_last", f"rho_{methods.BASELINE}", f"rho_{methods.ACCELERATED}", "reason"),
        "Compared on non-tied iterations until both methods have reached a loss floor. holds: mean NAG < mean HB at ≥ "
        "frac_hold and every seed pair at ≥ seed_frac_hold. fails: ≤ frac_fail, or NAG alone diverged. ratio_at_last: "
        "mean NAG / mean HB at the last compared iteration.",
    ),
    Claim(
        "distance_width_scaling", "max_r ‖w_r(t) − w_r(0)‖ decreases with the width m, like O(1/√m)",
        "§5.2, Figs. 3-4, Lemmas 4 and 6",
        {
            "min_widths": 3,  # widths needed for an exponent
            "slope_tol": 0.15,  # the bar: 'holds' needs the whole interval <= -1/2 + slope_tol, 'fails' all of it above
        },
        lambda e, th: claim_width_scaling(e.runs, th),
        ("dataset", "method", "eta_divisor", "beta", "verdict", "widths", "fit_step", "slope_mean", "slope_lo",
         "slope_hi", "slope_ci_lo", "slope_ci_hi", "slope_std", "slope_min", "slope_max", "n_seeds",
         "matches_minus_half", "reason"),
        "Exponent = slope of log(final max distance) vs log m per seed; slope_mean their mean. [slope_lo, slope_hi], "
        "the reported interval of the mean, is the union of the 95 % seed-bootstrap interval [slope_ci_lo, "
        "slope_ci_hi] (whole seeds resampled) and the range over the width subsets that leave one width out; the "
        "verdict comes from it: holds when all of it is ≤ −1/2 + slope_tol, fails when all of it is above, "
        "inconclusive when it straddles that bar or there are < min_widths widths. fit_step: the step the distances "
        "are taken at.",
    ),
    Claim(
        "gram_stays_pd", "H(t) stays positive definite with λmin(H(t)) ≥ λ0/2 during training", "Lemma 3",
        {
            "gram_ratio": 0.5,  # Lemma 3's λmin(H(t)) >= λ0/2
            "premise_ratio": 0.75,  # Lemma 2's λmin(H(0)) >= ¾λ0, the premise Lemma 3 starts from
        },
        lambda e, th: claim_gram(e.summary, e.runs, th),
        ("dataset", "method", "width", "eta_divisor", "beta", "verdict", "h0_ratio_min", "n_premise_failed",
         "gram_ratio_min", "min_step", "gram_ratio_min_mean", "positive_definite", "n_tracked_min", "reason"),
        "λ0 = λmin(H∞) on the tracked rows (lambda0_rows). h0_ratio_min: the worst seed's λmin(H(0))/λ0, Lemma 2's "
        "premise (≥ premise_ratio; n_premise_failed seeds below it); gram_ratio_min: the minimum over seeds and tracked "
        "steps of λmin(H(t))/λ0, at min_step in that seed. holds: gram_ratio_min ≥ gram_ratio; fails: below it, and the "
        "reason says whether the premise already failed at initialisation or H(t) drifted below from a start that met "
        "it.",
    ),
    Claim(
        "theorem_bound_holds",
        "the measured loss stays below the bound of Theorem 1 (HB) / Theorem 2 (NAG) at every step",
        "Theorems 1-2, eqs. (28)-(29)",
        {
            "bound_min_steps": 10,  # fewer checked steps (finite measured loss) is 'inconclusive'
            "min_rate_ratio": 1.0,  # 'holds' needs every seed's fitted rate >= this times the theorem's exponent
        },
        lambda e, th: claim_bound(e.theory, e.fits, th),
        ("dataset", "method", "width", "eta_divisor", "beta", "verdict", "max_measured_over_bound", "rate_ratio_min",
         "rate_ratio_max", "n_seeds_slower", "crossing_step", "prefactor_over_loss0", "n_seeds_violated",
         "first_violation_step", "fraction_holds_min", "n_seeds", "beta_theorem", "reason"),
        "Bound C·e^{−r k} of eq. (28)/(29) with the run's η (t = k√η), λ0 of H∞ and ℓ̂(0) of the run's H(0), checked "
        "at every step with a finite measured loss. Its prefactor C (prefactor_over_loss0 = C/ℓ(0), median over seeds) "
        "is hundreds of times ℓ(0), so within a run the check mostly tests the rate; a run that decays more slowly "
        "than the theorem's exponent crosses the bound later. holds: no seed ever above it (slack = "
        "max_measured_over_bound < 1) and every seed's fitted rate (claim 1's envelope fit) ≥ min_rate_ratio × the "
        "theorem's exponent (rate_ratio_min). fails: a seed above the bound at some step (first_violation_step, "
        "fraction_holds_min: share of steps at or below it in the worst seed), or a slower seed, with the step where "
        "its fitted envelope crosses the bound (crossing_step, extrapolated). inconclusive: < bound_min_steps steps or "
        "no fitted rate. The theorems assume α = λ0/2, i.e. β = beta_theorem, and m = Ω(n⁶/λ0⁴); the runs use the "
        "paper's experimental β and m.",
        needs_theory=True,
    ),
    Claim(
        "linearization_accurate",
        f"the network's outputs stay within {_TRAJ_ERR_MAX:.0%} of the NTK-linearized model's (run's H(0)) up to "
        "step T",
        "§3, eqs. (4)-(5), (9)",
        {
            "traj_err_max": _TRAJ_ERR_MAX,  # sup_{k≤T} ‖u(k) − u_lin(k)‖/‖u(0) − y‖ for 'holds' (0.10 = 10 %)
            "min_horizon_steps": 10,  # a horizon T shorter than this is 'inconclusive'
        },
        lambda e, th: claim_linearization(e.theory, th),
        ("dataset", "method", "width", "eta_divisor", "beta", "verdict", "traj_h0_max", "traj_h0_min",
         *(f"traj_h0_k{k}_max" for k in TRAJ_STEPS), "traj_inf_max", "relerr_h0_max", "horizon_min", "horizon_max",
         "n_compared", "n_seeds", "reason"),
        "e(k) = ‖u(k) − u_lin(k)‖/‖u(0) − y‖: u the network's outputs at step k, u_lin those of the model linearized "
        "at the run's W(0) (kernel H(0)), followed step by step inside the training job; the error NTK theory bounds, "
        "uniformly in time, by O(1/√m). traj_h0_max/min: worst/best seed's sup over k ≤ T; traj_h0_k<K>_max: worst "
        "seed's e at step K (blank past T); traj_inf_max: the same sup for the H∞ linearization. T: the run's horizon "
        "(last step ≤ analysis.theory_horizon of the run before ℓ < 1e-4·ℓ(0); the same T in the slope table and the "
        "figures). holds: every seed ≤ traj_err_max; fails: every seed above it; inconclusive: seeds on both sides, "
        "or T < min_horizon_steps. relerr_h0_max, the worst seed's max_{k≤T} |ℓ_lin(k) − ℓ(k)|/ℓ(k), is descriptive "
        "only: near a trough of the oscillating loss it measures the phase offset of two curves, not how linear the "
        "dynamics are.",
        needs_theory=True, shows_width_slopes=True,
    ),
)  # fmt: skip
CLAIMS: dict[str, Claim] = {c.id: c for c in REGISTRY}
THRESHOLDS: dict[str, float] = {name: v for c in REGISTRY for name, v in c.thresholds.items()}


def registry_doc() -> str:
    """The claims list of the module docstring: one paragraph per registry record."""
    out = []
    for i, c in enumerate(REGISTRY, 1):
        th = ", ".join(f"{k} = {v:g}" for k, v in c.thresholds.items())
        text = f"{i}. ``{c.id}`` ({c.paper}): {c.statement}. {c.how} Thresholds: {th}."
        out.append(textwrap.fill(text, width=118, subsequent_indent="   "))
    return "\n".join(out)


__doc__ = (__doc__ or "") + "\n" + registry_doc() + "\n"
