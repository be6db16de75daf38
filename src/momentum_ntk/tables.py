"""The run table, spelled once: the columns of a run's Parquet file (docs/CONTRACT.md), the long table aggregation
builds from them, and the key lists every stage groups by. Light on purpose (pyarrow only): the train, aggregate,
figures, theory-report and claims stages all import it.

    from momentum_ntk.tables import RUN_COLUMNS, SETTING_KEYS
"""

from __future__ import annotations

import pyarrow as pa

# One row per step of one run: what train writes (per-run Parquet) and aggregate reads.
RUN_COLUMNS = ("step", "loss", "max_dist", "lambda_min_H", "lambda_max_H", "pattern_changed", "traj_err_h0",
               "traj_err_inf")

# A setting: one point of the grid up to the seed; a run: a setting and a seed.
SETTING_KEYS = ["dataset", "method", "width", "eta_divisor", "beta"]
RUN_KEYS = [*SETTING_KEYS, "seed"]
SORT_KEYS = [*RUN_KEYS, "step"]
# HB and NAG paired: a setting without the method.
PAIR_KEYS = ["dataset", "width", "eta_divisor", "beta"]
# Within one dataset: a setting, a run, and a width series (a setting without the width).
DATASET_SETTING_KEYS = SETTING_KEYS[1:]
DATASET_RUN_KEYS = [*DATASET_SETTING_KEYS, "seed"]
WIDTH_SERIES_KEYS = ["method", "eta_divisor", "beta"]
DATASET_SORT_KEYS = [*DATASET_RUN_KEYS, "step"]
# Across datasets: a width series, and one seed's width series (what a width exponent is fitted to).
SERIES_KEYS = ["dataset", *WIDTH_SERIES_KEYS]
SEED_SERIES_KEYS = [*SERIES_KEYS, "seed"]

# The sidecar fields aggregation copies onto every row of a run.
SIDECAR_KEYS = ("dataset", "method", "width", "eta_divisor", "eta", "beta", "seed", "diverged", "lambda0_rows")

# The long table of one dataset (results/aggregate/<dataset>/runs.parquet): sidecar keys and run columns, typed.
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
        ("traj_err_h0", pa.float64()),
        ("traj_err_inf", pa.float64()),
    ]
)
