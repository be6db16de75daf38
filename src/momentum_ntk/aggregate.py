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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from momentum_ntk.errors import UserError, cli
from momentum_ntk.io import atomic_path, read_record, read_table, rebuild_fix, write_parquet

RUN_COLUMNS = ("step", "loss", "max_dist", "lambda_min_H", "lambda_max_H", "pattern_changed")
SIDECAR_KEYS = ("dataset", "method", "width", "eta_divisor", "eta", "beta", "seed", "diverged", "lambda0_rows")
SETTING_KEYS = ["dataset", "method", "width", "eta_divisor", "beta"]
RUN_KEYS = [*SETTING_KEYS, "seed"]
SORT_KEYS = [*RUN_KEYS, "step"]
PAIR_KEYS = ["dataset", "width", "eta_divisor", "beta"]

RUN_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("method", pa.string()),
        ("width", pa.int64()),
        ("eta_divisor", pa.int64()),
        ("eta", pa.float64()),
        ("beta", pa.float64()),
        ("seed", pa.int64()),
        ("step", pa.int64()),
        ("loss", pa.float64()),
        ("max_dist", pa.float64()),
        ("lambda_min_H", pa.float64()),
        ("lambda_max_H", pa.float64()),
        ("pattern_changed", pa.float64()),
        ("lambda0_rows", pa.float64()),
        ("diverged", pa.bool_()),
    ]
)

DEFAULT_REPORT_STEPS = (100, 500, 1000)
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


def read_runs_table(path: str | Path) -> pd.DataFrame:
    """Read a long table written by this stage and check it has the :data:`RUN_SCHEMA` columns."""
    fix = rebuild_fix(path)
    table = read_table(path, RUN_SCHEMA.names, what="long run table", fix=fix)
    try:
        table = table.select(RUN_SCHEMA.names).cast(RUN_SCHEMA)
    except (pa.ArrowException, ValueError) as exc:
        raise UserError(f"{path}: columns do not match the long-table schema ({exc}); {fix}") from None
    return table.to_pandas()


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


def read_ntk_summary(path: str | Path) -> dict:
    """NTK summary.json with the keys this module uses checked (dataset, lambda0, eta)."""
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


# --------------------------------------------------------------------------------------------------------------------
# Per-run and per-setting numbers


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


def _paired_ratios(per_run: pd.DataFrame, report_steps: Sequence[int]) -> pd.DataFrame:
    """Per (dataset, width, eta_divisor, beta, seed): NAG loss / HB loss at each report step."""
    cols = [f"loss_t{s}" for s in report_steps]
    method = per_run["method"].str.lower()
    nag = per_run[method == "nag"].set_index([*PAIR_KEYS, "seed"])[cols]
    hb = per_run[method == "hb"].set_index([*PAIR_KEYS, "seed"])[cols]
    common = nag.index.intersection(hb.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = nag.loc[common] / hb.loc[common]
    return ratio.reset_index()


def summarize(
    runs: pd.DataFrame, report_steps: Sequence[int] = DEFAULT_REPORT_STEPS, decades: int = DEFAULT_DECADES
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
      (NaN elsewhere), the seed-paired ratio ℓ_NAG(S)/ℓ_HB(S) of the same (width, eta_divisor, beta, seed): geometric
      mean, min and max over seeds
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
        is_nag = str(key[1]).lower() == "nag"
        pair = ratios.loc[(ratios[PAIR_KEYS] == [key[0], key[2], key[3], key[4]]).all(axis=1)] if is_nag else None
        row["n_pairs"] = int(len(pair)) if pair is not None else 0
        for s in report_steps:
            r = pair[f"loss_t{s}"].to_numpy() if pair is not None else np.array([])
            r = r[np.isfinite(r) & (r > 0)]
            row[f"nag_hb_ratio_gmean_t{s}"] = float(np.exp(np.mean(np.log(r)))) if r.size else math.nan
            row[f"nag_hb_ratio_min_t{s}"] = float(r.min()) if r.size else math.nan
            row[f"nag_hb_ratio_max_t{s}"] = float(r.max()) if r.size else math.nan
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


def width_exponents(runs: pd.DataFrame) -> pd.DataFrame:
    """Width scaling of the final max distance: per (dataset, method, eta_divisor, beta, seed) the least-squares slope
    of log(max_dist at the run's last step) vs log(width) over the non-diverged runs.

    Columns: dataset, method, eta_divisor, beta, seed, n_widths, widths (comma list), slope (NaN if < 2 widths).
    """
    last = runs.sort_values(SORT_KEYS).groupby(RUN_KEYS, sort=True).tail(1)
    last = last[~last["diverged"] & np.isfinite(last["max_dist"]) & (last["max_dist"] > 0)]
    rows = []
    for key, g in last.groupby(["dataset", "method", "eta_divisor", "beta", "seed"], sort=True):
        w = g["width"].to_numpy(dtype=float)
        d = g["max_dist"].to_numpy(dtype=float)
        slope = float(np.polyfit(np.log(w), np.log(d), 1)[0]) if len(np.unique(w)) >= 2 else math.nan
        rows.append(
            {
                **dict(zip(["dataset", "method", "eta_divisor", "beta", "seed"], key)),
                "n_widths": int(len(np.unique(w))),
                "widths": ",".join(str(int(x)) for x in sorted(np.unique(w))),
                "slope": slope,
            }
        )
    cols = ["dataset", "method", "eta_divisor", "beta", "seed", "n_widths", "widths", "slope"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------------------------
# CLI


def _write_csv(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.aggregate", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", metavar="RUN.parquet", help="per-run Parquet files (sidecar .json beside)")
    src.add_argument("--concat", nargs="+", metavar="RUNS.parquet", help="per-dataset long tables to concatenate")
    ap.add_argument("--out", required=True, help="long table to write (Parquet)")
    ap.add_argument("--summary", help="per-setting summary to write (Parquet); with --runs")
    ap.add_argument("--summary-csv", help="the same summary as CSV; with --runs")
    ap.add_argument("--report-steps", nargs="+", type=int, default=list(DEFAULT_REPORT_STEPS), metavar="STEP")
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
