"""Rate fitting: the linear rate of a loss curve and the width exponent of the max distance, the numbers the
aggregate, claims, figures and theory-report stages all read (one definition, imported from here).

    from momentum_ntk.rates import fit_linear_rate, fit_runs, width_exponents
    fit = fit_linear_rate(step, loss)          # RateFit: rho = exp(slope) of log L(t), L the running minimum
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from momentum_ntk import methods
from momentum_ntk.dynamics import theorem_rate
from momentum_ntk.errors import UserError
from momentum_ntk.records import summary_eta
from momentum_ntk.tables import RUN_KEYS, SEED_SERIES_KEYS, SETTING_KEYS, SORT_KEYS


# --------------------------------------------------------------------------------------------------------------------
# Linear-rate fit
#
# Momentum methods make the loss oscillate (an underdamped HB/NAG mode multiplies the decay by a periodic factor such
# as (1 + a·cos ωt)²), so a least-squares line through log ℓ itself, or a search for a window with small residuals,
# can lock onto one swing of the oscillation and report a rate ρ > 1 for a run that fell by orders of magnitude. The
# fit is therefore done on the running minimum of the loss, L(t) = min_{s ≤ t} ℓ(s), the tightest non-increasing
# lower envelope of the curve: for C·ρ^t·(oscillation) it is a staircase under C'·ρ^t that descends at exactly the
# rate ρ, it has no end effect (its last stair is at most one period long), and a least-squares line through a
# non-increasing sequence has a slope ≤ 0, so ρ ≤ 1 always, with ρ = 1 only when the loss made no new low in the
# window. Where a smooth slow mode lies under a decaying oscillation, L follows the slow mode, i.e. the rate that
# governs the loss in the long run.


@dataclass(frozen=True)
class RateFit:
    """Least-squares fit log L ≈ intercept + slope·step over a window [start_step, end_step], L the running minimum of
    the loss (its lower envelope, see above).

    ``rho = exp(slope)`` is the per-step contraction factor of the loss envelope; ``r2`` and ``rms`` (natural-log
    units) measure how well a line fits log L over the window; ``decades`` is the loss drop of the fitted line over
    the window in powers of ten; ``floor_step`` the step where a detected floor (or plateau) begins and
    ``floor_ratio`` its level (median loss after ``floor_step``) over ℓ(0) (both NaN if none); ``within_tol`` whether
    ``rms`` ≤ the tolerance of :func:`fit_linear_rate`; ``reached_start`` whether the loss fell to
    ``start_ratio``·ℓ(0) (False: the window starts at step 0). For comparison, ``raw_slope`` and ``raw_r2`` are the
    same least-squares fit to log ℓ itself over the same window (oscillation makes them unreliable), and
    ``osc_decades`` the largest rise of the loss above its running minimum inside the window, in decades (0 for a
    monotone curve).
    """

    slope: float
    intercept: float
    rho: float
    r2: float
    rms: float
    start_step: float
    end_step: float
    n_points: int
    decades: float
    floor_step: float
    floor_ratio: float
    within_tol: bool
    reached_start: bool
    raw_slope: float
    raw_r2: float
    osc_decades: float

    @staticmethod
    def empty() -> RateFit:
        nan = math.nan
        return RateFit(nan, nan, nan, nan, nan, nan, nan, 0, nan, nan, nan, False, False, nan, nan, nan)


def _cumsums(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    z = np.zeros(1)
    return tuple(np.concatenate([z, np.cumsum(v)]) for v in (np.ones_like(t), t, y, t * t, t * y, y * y))


def _segment_sse(cs: tuple[np.ndarray, ...], i: np.ndarray | int, j: np.ndarray | int) -> tuple[np.ndarray, ...]:
    """Slope and SSE of the least-squares line over indices [i, j) from cumulative sums (vectorised over i, j)."""
    n, st, sy, stt, sty, syy = (c[j] - c[i] for c in cs)
    stt_c = stt - st * st / n
    sty_c = sty - st * sy / n
    syy_c = syy - sy * sy / n
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(stt_c > 0, sty_c / stt_c, 0.0)
    sse = np.maximum(syy_c - slope * sty_c, 0.0)
    return slope, sse, n


def _line_fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, R², RMS residual) of the least-squares line y ≈ intercept + slope·t (R² NaN if y is flat)."""
    slope, intercept = np.polyfit(t, y, 1)
    resid = y - (intercept + slope * t)
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / sst if sst > 0 else math.nan
    return float(slope), float(intercept), r2, float(np.sqrt(np.mean(resid**2)))


def _floor_index(
    t: np.ndarray, env: np.ndarray, y: np.ndarray, s: int, *, min_points: int, floor_drop: float,
    floor_factor: float, floor_slope_frac: float,
) -> tuple[int, int | None, float]:
    """(last admissible window index, floor start index or None, floor level ln ℓ or NaN) after index ``s``.

    A floor (or plateau) is found with a two-segment least-squares fit of the log envelope ``env`` (running minimum of
    log ℓ) on [s, end]: it starts at the best split if that split clearly beats one line (the SSE halves), the first
    segment decays, and the second segment both loses less than a factor ``floor_drop`` in all and is at most
    ``floor_slope_frac`` as steep as the first. A slow but steady decay (a second, slower time scale) is therefore no
    floor. The floor level is the median of log ℓ (``y``) after the split; a loss that turns up again after decaying
    shows as a floor at that (high) level. The window then ends before the envelope first comes within
    ``floor_factor`` of the floor level, which keeps the bend of the knee out of the fit.
    """
    n = len(t)
    if n - s < 2 * min_points:
        return n - 1, None, math.nan
    cs = _cumsums(t[s:] - t[s], env[s:])
    m = n - s
    _, sse1, _ = _segment_sse(cs, 0, m)
    splits = np.arange(min_points, m - min_points + 1)
    sl_a, sse_a, _ = _segment_sse(cs, np.zeros_like(splits), splits)
    sl_b, sse_b, _ = _segment_sse(cs, splits, np.full_like(splits, m))
    k = int(np.argmin(sse_a + sse_b))
    split = s + int(splits[k])
    tail_drop = -sl_b[k] * (t[-1] - t[split])
    flat = sl_b[k] >= floor_slope_frac * sl_a[k]
    if not (sl_a[k] < 0 and flat and tail_drop < math.log(floor_drop) and sse_a[k] + sse_b[k] < 0.5 * sse1):
        return n - 1, None, math.nan
    level = float(np.median(y[split:]))
    near = np.nonzero(env[s : split + 1] <= level + math.log(floor_factor))[0]
    end = s + int(near[0]) - 1 if near.size else split - 1
    return max(end, s + min_points - 1), split, level


def fit_linear_rate(
    step: np.ndarray,
    loss: np.ndarray,
    *,
    start_ratio: float = 0.1,
    rms_tol: float = 0.25,
    min_points: int = 5,
    floor_drop: float = 3.0,
    floor_factor: float = 10.0,
    floor_slope_frac: float = 0.2,
) -> RateFit:
    """Per-step linear convergence rate of one loss curve, robust to oscillation (see :class:`RateFit`).

    1. Use the finite, positive prefix of the curve (a diverged run stops at its last finite loss) and its running
       minimum L (the lower envelope; the section comment above says why).
    2. Start at the first step with loss ≤ ``start_ratio``·ℓ(0) (skips the momentum warm-up; step 0 if never).
    3. Cut a floor or plateau off the end (:func:`_floor_index`, parameters ``floor_*``).
    4. Fit log L by least squares over the whole remaining window (at least ``min_points`` steps). ``within_tol``
       records whether the residual RMS is ≤ ``rms_tol`` (natural-log units); it does not move the window.
    """
    t = np.asarray(step, dtype=float)
    y_raw = np.asarray(loss, dtype=float)
    bad = ~(np.isfinite(y_raw) & (y_raw > 0))
    n = int(np.argmax(bad)) if bad.any() else len(y_raw)
    if n < min_points:
        return RateFit.empty()
    t, y = t[:n], np.log(y_raw[:n])
    env = np.minimum.accumulate(y)
    hit = np.nonzero(y <= y[0] + math.log(start_ratio))[0]
    reached = bool(hit.size)
    s = int(hit[0]) if reached else 0
    if n - s < min_points:
        s = max(0, n - min_points)
    e, floor, level = _floor_index(t, env, y, s, min_points=min_points, floor_drop=floor_drop,
                                   floor_factor=floor_factor, floor_slope_frac=floor_slope_frac)
    e = min(max(e, s + min_points - 1), n - 1)
    tw, ew, yw = t[s : e + 1], env[s : e + 1], y[s : e + 1]
    slope, intercept, r2, rms = _line_fit(tw, ew)
    raw_slope, _, raw_r2, _ = _line_fit(tw, yw)
    return RateFit(
        slope=slope,
        intercept=intercept,
        rho=math.exp(slope),
        r2=r2,
        rms=rms,
        start_step=float(tw[0]),
        end_step=float(tw[-1]),
        n_points=int(len(tw)),
        decades=-slope * float(tw[-1] - tw[0]) / math.log(10),
        floor_step=float(t[floor]) if floor is not None else math.nan,
        floor_ratio=float(math.exp(level - y[0])) if floor is not None else math.nan,
        within_tol=bool(rms <= rms_tol),
        reached_start=reached,
        raw_slope=raw_slope,
        raw_r2=raw_r2,
        osc_decades=float(np.max(yw - ew)) / math.log(10),
    )


def steps_to_fraction(step: np.ndarray, loss: np.ndarray, fraction: float) -> float:
    """First step with loss ≤ fraction·ℓ(0); NaN if never reached."""
    loss = np.asarray(loss, dtype=float)
    hit = np.nonzero(loss <= fraction * loss[0])[0]
    return float(np.asarray(step)[hit[0]]) if hit.size else math.nan


def loss_at(step: np.ndarray, loss: np.ndarray, at: int) -> float:
    """Loss at step ``at``; NaN if the run has no such step (it ended earlier)."""
    idx = np.nonzero(np.asarray(step) == at)[0]
    return float(np.asarray(loss)[idx[0]]) if idx.size else math.nan


def fit_runs(runs: pd.DataFrame, **fit_kwargs) -> pd.DataFrame:
    """One row per run: keys, ``diverged``, ``last_step``, ``loss0``, ``loss_last`` and the :class:`RateFit` fields."""
    rows = []
    for key, g in runs.groupby(RUN_KEYS, sort=True):
        fit = fit_linear_rate(g["step"].to_numpy(), g["loss"].to_numpy(), **fit_kwargs)
        rows.append(
            {
                **dict(zip(RUN_KEYS, key)),
                "eta": float(g["eta"].iloc[0]),
                "diverged": bool(g["diverged"].iloc[0]),
                "last_step": int(g["step"].iloc[-1]),
                "loss0": float(g["loss"].iloc[0]),
                "loss_last": float(g["loss"].iloc[-1]),
                **asdict(fit),
            }
        )
    return pd.DataFrame(rows)


def width_exponents(runs: pd.DataFrame) -> pd.DataFrame:
    """Width scaling of the final max distance: per (dataset, method, eta_divisor, beta, seed) the least-squares slope
    of log(max_dist at the run's last step) vs log(width) over the non-diverged runs.

    Columns: dataset, method, eta_divisor, beta, seed, n_widths, widths (comma list), slope (NaN if < 2 widths).
    """
    last = runs.sort_values(SORT_KEYS).groupby(RUN_KEYS, sort=True).tail(1)
    last = last[~last["diverged"] & np.isfinite(last["max_dist"]) & (last["max_dist"] > 0)]
    rows = []
    for key, g in last.groupby(SEED_SERIES_KEYS, sort=True):
        w = g["width"].to_numpy(dtype=float)
        d = g["max_dist"].to_numpy(dtype=float)
        slope = float(np.polyfit(np.log(w), np.log(d), 1)[0]) if len(np.unique(w)) >= 2 else math.nan
        rows.append(
            {
                **dict(zip(SEED_SERIES_KEYS, key)),
                "n_widths": int(len(np.unique(w))),
                "widths": ",".join(str(int(x)) for x in sorted(np.unique(w))),
                "slope": slope,
            }
        )
    cols = [*SEED_SERIES_KEYS, "n_widths", "widths", "slope"]
    return pd.DataFrame(rows, columns=cols)


THEOREM_COLUMNS = (*SETTING_KEYS, "eta", "lambda0", "alpha", "rho_theorem", "theorem_exponent")


def theorem_table(summary: pd.DataFrame, ntk: list[dict] | tuple[dict, ...]) -> pd.DataFrame:
    """The theorems' per-iteration loss exponent per setting, the one table Table 1 and the claims read.

    ``summary``: per-setting rows with :data:`SETTING_KEYS`; ``ntk``: the NTK summaries (one per dataset). Per row:
    η = summary_eta (the one η lookup), λ0, the method's rate constant ρ and Theorem 2's α (``Method.rate_constant``;
    NaN without a theorem) and theorem_exponent = ρ·√(λ0/2)·√η (:func:`momentum_ntk.dynamics.theorem_rate`).
    UserError when a dataset has no NTK summary.
    """
    by_ds = {str(r["dataset"]): r for r in ntk}
    rows = []
    for _, r in summary.iterrows():
        ds, method = str(r["dataset"]), methods.get(str(r["method"]).lower())
        if ds not in by_ds:
            raise UserError(f"no NTK summary for dataset {ds!r}; pass its summary.json with --ntk-summary")
        lam0 = float(by_ds[ds]["lambda0"])
        eta = summary_eta(by_ds[ds], int(r["eta_divisor"]), f"NTK summary of {ds}")
        rho, alpha = method.rate_constant(lam0, eta) if method.rate_constant else (math.nan, math.nan)
        rows.append({**{k: r[k] for k in SETTING_KEYS}, "eta": eta, "lambda0": lam0, "alpha": alpha,
                     "rho_theorem": rho, "theorem_exponent": theorem_rate(method.name, lam0, eta)})
    return pd.DataFrame(rows, columns=list(THEOREM_COLUMNS))
