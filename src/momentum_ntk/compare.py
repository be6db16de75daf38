"""The theory next to a run: the predicted loss curves and rates of one run from the modes of its initialisation
(momentum_ntk.modes), and how they compare with its measured loss (relative errors up to the horizon T, the theorem
bound's check), down to the width slope of the linearization error over many runs. Pure functions of arrays and
frames; the theory stage (momentum_ntk.theory) reads and writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import defaults, methods, uncertainty
from momentum_ntk.dynamics import (
    alpha_damping_from_beta,
    linear_loss,
    linear_rate,
    ode_loss,
    ode_rate,
    theorem_bound,
    theorem_rate,
)
from momentum_ntk.tables import DATASET_RUN_KEYS, WIDTH_SERIES_KEYS

PREDICTIONS = ("lin_inf", "lin_h0", "ode_beta", "ode_paper")
# The trajectory errors e(k) = ‖u(k) − u_lin(k)‖/‖u(0) − y‖ a run records (momentum_ntk.trajectory), per linearization.
TRAJ_COLUMNS = {"lin_h0": "traj_err_h0", "lin_inf": "traj_err_inf"}
TRAJ_STEPS = (100, 300)  # e(k) is also reported at these fixed steps (when ≤ the run's horizon T)


# ----------------------------------------------------------------------------------------------------------------------
# Comparisons with a measured run
# ----------------------------------------------------------------------------------------------------------------------


def relative_error(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Signed relative error (predicted − measured)/measured, NaN where the measured loss is missing or ≤ 0."""
    meas = np.asarray(measured, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(meas) & (meas > 0), (pred - meas) / meas, np.nan)


def max_relative_error(table: pd.DataFrame, prediction: str = "lin_h0", upto: int | None = None) -> float:
    """max |relative error| of ``loss_<prediction>`` vs ``loss_measured`` over steps ≤ ``upto`` (NaN if no data)."""
    rows = table if upto is None else table[table["step"] <= upto]
    err = np.abs(relative_error(rows["loss_measured"].to_numpy(), rows[f"loss_{prediction}"].to_numpy()))
    err = err[np.isfinite(err)]
    return float(err.max()) if err.size else math.nan


def max_trajectory_error(table: pd.DataFrame, prediction: str = "lin_h0", upto: int | None = None) -> float:
    """sup_{k ≤ upto} e(k) of the ``prediction``'s linearization (NaN if no finite value): the error NTK theory bounds
    uniformly in time."""
    rows = table if upto is None else table[table["step"] <= upto]
    err = rows[TRAJ_COLUMNS[prediction]].to_numpy(dtype=np.float64)
    err = err[np.isfinite(err)]
    return float(err.max()) if err.size else math.nan


def trajectory_error_at(table: pd.DataFrame, prediction: str, step: int, upto: int | None) -> float:
    """e(step) of the ``prediction``'s linearization; NaN past the horizon ``upto`` or where the run has no value."""
    if upto is None or step > upto:
        return math.nan
    hit = table.loc[table["step"] == step, TRAJ_COLUMNS[prediction]].to_numpy(dtype=np.float64)
    return float(hit[0]) if hit.size else math.nan


def bound_check(table: pd.DataFrame, upto: int | None = None) -> dict[str, Any]:
    """Does the measured loss stay below ``bound_theorem``?

    Returns ``{"steps_checked", "fraction_holds", "first_violation_step"}`` (step None if it always holds) over the
    steps ≤ ``upto`` with a finite measured loss and bound.
    """
    rows = table if upto is None else table[table["step"] <= upto]
    meas, bound = rows["loss_measured"].to_numpy(), rows["bound_theorem"].to_numpy()
    ok = np.isfinite(meas) & np.isfinite(bound)
    holds = meas[ok] <= bound[ok]
    steps = rows["step"].to_numpy()[ok]
    bad = np.flatnonzero(~holds)
    return {
        "steps_checked": int(ok.sum()),
        "fraction_holds": float(holds.mean()) if holds.size else math.nan,
        "first_violation_step": int(steps[bad[0]]) if bad.size else None,
    }


def fit_rate(step: np.ndarray, loss: np.ndarray, lo: int, hi: int) -> float:
    """Least-squares loss exponent per iteration −d ln ℓ / dk over steps lo ≤ k ≤ hi with finite ℓ > 0 (NaN if < 2)."""
    step = np.asarray(step, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    ok = (step >= lo) & (step <= hi) & np.isfinite(loss) & (loss > 0)
    if ok.sum() < 2:
        return math.nan
    slope = np.polyfit(step[ok], np.log(loss[ok]), 1)[0]
    return float(-slope)


# The default horizon T: at most defaults.THEORY_HORIZON (the config's analysis.theory_horizon) of the run ...
HORIZON_FLOOR_RATIO = 1e-4  # ... and only while the measured loss stays above this fraction of ℓ(0)


def horizon_step(
    step: np.ndarray,
    measured: np.ndarray,
    fraction: float = defaults.THEORY_HORIZON,
    floor_ratio: float = HORIZON_FLOOR_RATIO,
) -> int | None:
    """Comparison horizon T: the last step k ≤ fraction·K (K: last step with a finite measured loss) such that every
    measured loss up to k is finite and ≥ floor_ratio·ℓ(0).

    Relative errors are only meaningful while the loss is well above its numerical floor (float32 rounding, a
    plateau), and a diverged run has no loss after it stopped. None when not even step 0 qualifies.
    """
    step = np.asarray(step)
    meas = np.asarray(measured, dtype=np.float64)
    order = np.argsort(step, kind="stable")
    step, meas = step[order], meas[order]
    good = np.isfinite(meas) & (meas > 0)
    if not good.size or not good[0]:
        return None
    resolved = good & (meas >= floor_ratio * meas[0])
    n_ok = int(np.argmin(resolved)) if not resolved.all() else resolved.size  # length of the resolved prefix
    last = float(step[np.flatnonzero(good)[-1]])
    limit = math.floor(fraction * last)
    within = step[:n_ok][step[:n_ok] <= limit]
    return int(within[-1]) if within.size else int(step[0])


def bound_margin(table: pd.DataFrame, upto: int | None = None) -> dict[str, Any]:
    """Largest measured / bound ratio (> 1 means the bound is violated) and its step, over steps ≤ ``upto`` with a
    finite measured loss and bound; also the measured loss over ℓ(0) at the first violation (None if none), which
    says whether a violation happens while the loss is still large or only near its floor."""
    rows = table if upto is None else table[table["step"] <= upto]
    meas, bound = rows["loss_measured"].to_numpy(), rows["bound_theorem"].to_numpy()
    ok = np.isfinite(meas) & np.isfinite(bound) & (bound > 0)
    if not ok.any():
        return {"max_ratio": None, "step_of_max": None, "measured_ratio_at_first_violation": None}
    ratio = meas[ok] / bound[ok]
    steps = rows["step"].to_numpy()[ok]
    i = int(np.argmax(ratio))
    bad = np.flatnonzero(ratio > 1.0)
    loss0 = float(table["loss_measured"].iloc[0])
    at_first = float(meas[ok][bad[0]] / loss0) if bad.size and loss0 > 0 else None
    return {"max_ratio": float(ratio[i]), "step_of_max": int(steps[i]), "measured_ratio_at_first_violation": at_first}


# ----------------------------------------------------------------------------------------------------------------------
# Predictions for one run (from the modes of its initialisation, momentum_ntk.modes)
# ----------------------------------------------------------------------------------------------------------------------


def predict_table(
    modes: pd.DataFrame,
    *,
    method: str,
    eta: float,
    beta: float,
    lambda0: float,
    pseudo_loss0: float,
    steps: int,
    ode_gram: str = "inf",
) -> pd.DataFrame:
    """One row per step 0..steps: step, time (= k√η), loss_lin_inf, loss_lin_h0, loss_ode_beta, loss_ode_paper,
    bound_theorem. The ODE columns use H∞'s modes (``ode_gram="inf"``) or H(0)'s (``"h0"``); NaN for GD."""
    m = methods.get(method)
    s = eta
    k = np.arange(steps + 1, dtype=np.int64)
    times = k * math.sqrt(s)
    lam_inf, c_inf = modes["lambda_inf"].to_numpy(), modes["coef_inf"].to_numpy()
    lam_h0, c_h0 = modes["lambda_h0"].to_numpy(), modes["coef_h0"].to_numpy()
    out = {
        "step": k,
        "time": times,
        "loss_lin_inf": linear_loss(lam_inf, c_inf, eta, beta, method, steps),
        "loss_lin_h0": linear_loss(lam_h0, c_h0, eta, beta, method, steps),
    }
    if not m.has_ode:
        nan = np.full(steps + 1, np.nan)
        out |= {"loss_ode_beta": nan, "loss_ode_paper": nan.copy()}
    else:
        lam_o, c_o = (lam_inf, c_inf) if ode_gram == "inf" else (lam_h0, c_h0)
        out["loss_ode_beta"] = ode_loss(lam_o, c_o, alpha_damping_from_beta(beta, s), s, method, times)
        out["loss_ode_paper"] = ode_loss(lam_o, c_o, lambda0 / 2.0, s, method, times)
    out["bound_theorem"] = theorem_bound(method, lambda0, s, pseudo_loss0, times)
    return pd.DataFrame(out)


def prediction_rates(
    modes: pd.DataFrame, *, method: str, eta: float, beta: float, lambda0: float, ode_gram: str = "inf"
) -> dict[str, Any]:
    """Asymptotic loss exponents per iteration (ℓ(k) ∝ e^{−r k}) of every prediction, and the damping constants."""
    m = methods.get(method)
    s = eta
    lam_inf, c_inf = modes["lambda_inf"].to_numpy(), modes["coef_inf"].to_numpy()
    lam_h0, c_h0 = modes["lambda_h0"].to_numpy(), modes["coef_h0"].to_numpy()
    rec: dict[str, Any] = {
        "rate_lin_inf": linear_rate(lam_inf, eta, beta, method, c_inf),
        "rate_lin_h0": linear_rate(lam_h0, eta, beta, method, c_h0),
        "alpha_damping_beta": alpha_damping_from_beta(beta, s) if m.has_ode else None,
        "alpha_damping_paper": lambda0 / 2.0,
        "rate_ode_beta": None,
        "rate_ode_paper": None,
        "rate_theorem": theorem_rate(method, lambda0, s) if m.has_theorem else None,
    }
    if m.has_ode:
        lam_o, c_o = (lam_inf, c_inf) if ode_gram == "inf" else (lam_h0, c_h0)
        rec["rate_ode_beta"] = ode_rate(lam_o, rec["alpha_damping_beta"], s, method, c_o)
        rec["rate_ode_paper"] = ode_rate(lam_o, lambda0 / 2.0, s, method, c_o)
    rho, alpha = m.rate_constant(lambda0, s) if m.rate_constant is not None else (math.nan, math.nan)
    if not math.isnan(alpha):  # a theorem with its own α (Theorem 2, NAG): its constants, for the record
        rec["alpha_thm2"] = alpha
        rec["rho_nag"] = rho
    return rec


def attach_run(pred: pd.DataFrame, run: pd.DataFrame) -> pd.DataFrame:
    """Add ``loss_measured`` (NaN past the run's last step), ``relerr_<prediction>`` = (pred − meas)/meas, and the
    run's trajectory errors ``traj_err_h0`` / ``traj_err_inf`` (NaN past its last step)."""
    run = run.set_index("step")
    steps = pred["step"].to_numpy()
    out = pred.copy()
    out["loss_measured"] = run["loss"].astype(np.float64).reindex(steps).to_numpy()
    for name in PREDICTIONS:
        out[f"relerr_{name}"] = relative_error(out["loss_measured"].to_numpy(), out[f"loss_{name}"].to_numpy())
    for col in TRAJ_COLUMNS.values():
        out[col] = run[col].astype(np.float64).reindex(steps).to_numpy()
    return out


def comparison_record(
    table: pd.DataFrame,
    window: tuple[int, int],
    horizon_fraction: float = defaults.THEORY_HORIZON,
    horizon_floor_ratio: float = HORIZON_FLOOR_RATIO,
) -> dict[str, Any]:
    """Window-fitted rates of the measured and predicted curves, max relative errors (over the whole run and up to the
    horizon T of :func:`horizon_step`), the trajectory errors up to T (sup, its step, and at :data:`TRAJ_STEPS`), the
    bound check and the bound margin."""
    lo, hi = window
    step = table["step"].to_numpy()
    T = horizon_step(step, table["loss_measured"].to_numpy(), horizon_fraction, horizon_floor_ratio)
    rec: dict[str, Any] = {
        "window": [lo, hi],
        "window_rate_measured": fit_rate(step, table["loss_measured"], lo, hi),
        "horizon": {"step": T, "fraction": horizon_fraction, "floor_ratio": horizon_floor_ratio},
    }
    for name in PREDICTIONS:
        rec[f"window_rate_{name}"] = fit_rate(step, table[f"loss_{name}"], lo, hi)
        rec[f"max_relerr_{name}"] = max_relative_error(table, name)
        rec[f"max_relerr_{name}_horizon"] = max_relative_error(table, name, upto=T) if T is not None else math.nan
    for name, col in TRAJ_COLUMNS.items():
        rec[f"max_traj_err_{name}_horizon"] = max_trajectory_error(table, name, upto=T) if T is not None else math.nan
        rec[f"traj_err_{name}_at"] = {str(k): trajectory_error_at(table, name, k, T) for k in TRAJ_STEPS}
    rec["bound_check"] = bound_check(table)
    rec["bound_margin"] = bound_margin(table)
    return rec


def run_errors(curves: pd.DataFrame, fraction: float = defaults.THEORY_HORIZON,
               floor_ratio: float = HORIZON_FLOOR_RATIO) -> pd.DataFrame:
    """Per run: its horizon T (:func:`momentum_ntk.compare.horizon_step`, the one definition the claims, this
    report's figures and tables all use; -1 where no step qualifies), and up to T: the trajectory errors
    ``max_traj_err_<p>`` = sup_{k≤T} e(k) and ``traj_err_<p>_k<K>`` = e(K) at the fixed steps :data:`TRAJ_STEPS`
    (NaN past T), and the relative loss errors ``max_relerr_<p>`` (descriptive), for every prediction p."""
    rows = []
    for key, g in curves.groupby(DATASET_RUN_KEYS, sort=True):
        T = horizon_step(g["step"].to_numpy(), g["loss_measured"].to_numpy(), fraction, floor_ratio)
        T = -1 if T is None else int(T)
        row = {**dict(zip(DATASET_RUN_KEYS, key)), "horizon": T}
        for p in PREDICTIONS:
            row[f"max_relerr_{p}"] = max_relative_error(g, p, upto=T) if T >= 0 else math.nan
        for p in TRAJ_COLUMNS:
            row[f"max_traj_err_{p}"] = max_trajectory_error(g, p, upto=T) if T >= 0 else math.nan
            for k in TRAJ_STEPS:
                row[f"traj_err_{p}_k{k}"] = trajectory_error_at(g, p, k, T if T >= 0 else None)
        rows.append(row)
    return pd.DataFrame(rows)


def _centred(errors: pd.DataFrame, value: str, groups: Sequence[str]) -> pd.DataFrame:
    """Usable points with log-width x and log-error y centred within each group (columns x, y)."""
    df = errors[np.isfinite(errors[value]) & (errors[value] > 0)].copy()
    df["x"], df["y"] = np.log(df["width"].astype(float)), np.log(df[value].astype(float))
    df = df[df.groupby(list(groups))["width"].transform("nunique") >= 2]
    if not df.empty:
        g = df.groupby(list(groups))
        df["x"], df["y"] = df["x"] - g["x"].transform("mean"), df["y"] - g["y"].transform("mean")
    return df


def fit_width_slope(errors: pd.DataFrame, value: str = "max_traj_err_lin_h0",
                    groups: Sequence[str] = WIDTH_SERIES_KEYS) -> dict[str, float]:
    """Common slope b of log e = a_g + b log m, one intercept a_g per group (fixed effects), least squares.

    With x̃, ỹ the log-width and log-error centred within each group, b = Σ x̃ỹ / Σ x̃² and its standard error
    √(Σ r² / (N − G − 1) / Σ x̃²) (r: residuals, N points, G groups). Points with a non-finite or non-positive error
    and groups with fewer than two distinct widths are left out. Returns slope, stderr, n_points, n_groups (slope NaN
    when nothing is left).
    """
    df = _centred(errors, value, groups)
    if df.empty:
        return {"slope": math.nan, "stderr": math.nan, "n_points": 0, "n_groups": 0}
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    sxx = float(x @ x)
    slope = float(x @ y) / sxx
    n_groups = int(df.groupby(list(groups)).ngroups)
    dof = len(df) - n_groups - 1
    resid = y - slope * x
    stderr = math.sqrt(float(resid @ resid) / dof / sxx) if dof > 0 else math.nan
    return {"slope": slope, "stderr": stderr, "n_points": int(len(df)), "n_groups": n_groups}


def width_slope_uncertainty(curves: pd.DataFrame, value: str = "max_traj_err_lin_h0", *,
                            fraction: float = defaults.THEORY_HORIZON,
                            floor_ratio: float = HORIZON_FLOOR_RATIO) -> dict[str, Any]:
    """The common width slope of a column of :func:`run_errors` (:func:`fit_width_slope`) with its uncertainty.

    ``ci_lo``/``ci_hi``: the 95 % percentile interval over resamples of whole seeds (each seed's points contribute
    Σx̃ỹ and Σx̃² with x̃, ỹ centred by the full data's group means, so a resample's slope is ΣΣx̃ỹ / ΣΣx̃²).
    ``spec_lo``/``spec_hi``: the range of the slope over the horizon at ½ and 1 × ``fraction`` and every subset of the
    widths leaving one out (≥ 3 left). ``lo``/``hi``: their union, the interval to report. Also the widths, the
    smallest and largest per-run horizon T at ``fraction`` (``horizons``) and the seed count.
    """
    err = run_errors(curves, fraction, floor_ratio)
    fit = fit_width_slope(err, value)
    df = _centred(err, value, WIDTH_SERIES_KEYS)
    if df.empty:
        ci = (math.nan, math.nan)
    else:
        sums = df.assign(xy=df["x"] * df["y"], xx=df["x"] ** 2).groupby("seed")[["xy", "xx"]].sum().to_numpy()
        ci = uncertainty.seed_bootstrap(sums, lambda d: d[..., 0].sum(1) / d[..., 1].sum(1))
    widths = sorted(int(w) for w in err["width"].unique())
    fits = []
    for fr in (fraction / 2, fraction):
        e = err if fr == fraction else run_errors(curves, fr, floor_ratio)
        fits += [fit_width_slope(e[e["width"].isin(sub)], value)["slope"] for sub in uncertainty.drop_one_subsets(widths)]
    spec = uncertainty.spec_range(fits)
    lo, hi = uncertainty.reported_interval(ci, spec)
    hz = err.loc[err["horizon"] >= 0, "horizon"]
    horizons = [int(hz.min()), int(hz.max())] if len(hz) else []
    return {**fit, "ci_lo": ci[0], "ci_hi": ci[1], "spec_lo": spec[0], "spec_hi": spec[1], "lo": lo, "hi": hi,
            "widths": widths, "horizons": horizons, "fraction": fraction, "n_seeds": int(err["seed"].nunique())}
