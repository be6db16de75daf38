"""Uncertainty of fitted width exponents: a bootstrap over seeds and the spread over fitting choices.

    PYTHONPATH=src python -c "from momentum_ntk import uncertainty; help(uncertainty)"

Two exponents in this project are fitted across widths m on log-log axes: the exponent of the final max distance
max_r ‖w_r − w_r(0)‖ ∝ m^b (claim 3; the paper says b = −1/2) and the slope of the trajectory error
sup_{k≤T} ‖u(k) − u_lin(k)‖/‖u(0) − y‖ ∝ m^b (NTK theory bounds it by O(1/√m)). Each comes with

* a **seed bootstrap**: the seeds are the independent replicates (one W(0), a per seed and width), so the fit is
  repeated on ``n_boot`` resamples of whole seeds drawn with replacement, and the percentile interval of the
  resampled estimates at ``level`` is reported (:func:`seed_bootstrap`);
* a **specification range**: the same fit over the choices an analyst could reasonably have made — every subset of
  the widths that drops one width (when at least three remain) and, for the linearization error, the horizon T at
  half and at the full configured fraction of the run (:func:`spec_range`). The reported interval is the union of the
  two (:func:`reported_interval`), so it covers both the noise between seeds and the dependence on the fit window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95
BOOT_SEED = 0  # the resampling is seeded: the same data gives the same interval


def seed_bootstrap(
    per_seed: np.ndarray,
    stat: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    rng_seed: int = BOOT_SEED,
) -> tuple[float, float]:
    """Percentile interval (lo, hi) at ``level`` of a statistic over resamples of whole seeds with replacement.

    ``per_seed`` (n_seeds, k): what each seed contributes (its slope, or its sufficient statistics); ``stat`` maps
    resampled contributions (n_boot, n_seeds, k) to one value per resample (n_boot,). Non-finite values are dropped.
    (nan, nan) with fewer than two seeds or no finite resample.
    """
    per_seed = np.asarray(per_seed, dtype=float).reshape(len(per_seed), -1)
    if len(per_seed) < 2:
        return math.nan, math.nan
    rng = np.random.Generator(np.random.PCG64(rng_seed))
    draws = rng.integers(0, len(per_seed), size=(n_boot, len(per_seed)))
    values = np.asarray(stat(per_seed[draws]), dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def mean_of_draws(draws: np.ndarray) -> np.ndarray:
    """The resampled mean of per-seed values (n_boot, n_seeds, 1) -> (n_boot,)."""
    return np.nanmean(draws[..., 0], axis=1)


def drop_one_subsets(widths: Iterable[int], min_left: int = 3) -> list[tuple[int, ...]]:
    """All widths, and every subset that leaves one width out while at least ``min_left`` remain."""
    ws = tuple(sorted(set(int(w) for w in widths)))
    subsets = [ws]
    if len(ws) - 1 >= min_left:
        subsets += [tuple(c) for c in itertools.combinations(ws, len(ws) - 1)]
    return subsets


def spec_range(fits: Sequence[float]) -> tuple[float, float]:
    """(min, max) of the finite estimates of one exponent over fitting choices; (nan, nan) when there are none."""
    ok = [f for f in fits if math.isfinite(f)]
    return (min(ok), max(ok)) if ok else (math.nan, math.nan)


def reported_interval(ci: tuple[float, float], spec: tuple[float, float]) -> tuple[float, float]:
    """The union of the seed-bootstrap interval and the specification range (each may be NaN)."""
    lo = [x for x in (ci[0], spec[0]) if math.isfinite(x)]
    hi = [x for x in (ci[1], spec[1]) if math.isfinite(x)]
    return (min(lo) if lo else math.nan, max(hi) if hi else math.nan)


def interval_text(estimate: float, ci: tuple[float, float], spec: tuple[float, float], level: float = LEVEL,
                  spec_label: str = "width subsets") -> str:
    """'−0.52 [−0.61, −0.44] (95% seed bootstrap [−0.58, −0.47]; over width subsets −0.61…−0.44)'."""
    def f(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:+.2f}".replace("-", "−")

    lo, hi = reported_interval(ci, spec)
    return (f"{f(estimate)} [{f(lo)}, {f(hi)}] ({level:.0%} seed bootstrap [{f(ci[0])}, {f(ci[1])}]; "
            f"over {spec_label} {f(spec[0])}…{f(spec[1])})")


def slope_log_log(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y on log x (nan with fewer than two distinct x)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if len(np.unique(x[ok])) < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def exponent_summary(
    points: pd.DataFrame, *, value: str, width_col: str = "width", seed_col: str = "seed"
) -> dict[str, Any]:
    """Width exponent of ``value`` for one setting: per seed the log-log slope over its widths; their mean; the seed
    bootstrap of that mean; and the range of the mean over drop-one-width subsets.

    ``points``: one row per (seed, width). Returns mean, ci_lo, ci_hi, spec_lo, spec_hi, lo, hi (the reported
    interval), widths (sorted list), n_seeds.
    """

    def per_seed(df: pd.DataFrame) -> np.ndarray:
        slopes = [slope_log_log(g[width_col], g[value]) for _, g in df.groupby(seed_col, sort=True)]
        return np.array([s for s in slopes if math.isfinite(s)])

    widths = sorted(int(w) for w in points[width_col].unique())
    slopes = per_seed(points)
    est = float(slopes.mean()) if slopes.size else math.nan
    ci = seed_bootstrap(slopes[:, None], mean_of_draws) if slopes.size else (math.nan, math.nan)
    subsets = [per_seed(points[points[width_col].isin(s)]) for s in drop_one_subsets(widths)]
    spec = spec_range([float(s.mean()) if s.size else math.nan for s in subsets])
    lo, hi = reported_interval(ci, spec)
    return {"mean": est, "ci_lo": ci[0], "ci_hi": ci[1], "spec_lo": spec[0], "spec_hi": spec[1], "lo": lo, "hi": hi,
            "widths": widths, "n_seeds": int(slopes.size)}
