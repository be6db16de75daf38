"""How a run's parameters are spelled in file names and for people: one lossless spelling for both.

β is the one real-valued parameter in a run's name (m, c and the seed are integers). :func:`beta_name` is its
shortest positional decimal that reads back as the same float: the file names use it, and the tables
(:func:`beta_text`), so β = 0.9 and β = 0.90000000001, two files, are also two distinct rows in summary.csv, table1,
theory_rates_* and claims.md (``%g`` and ``%.10g`` print both as 0.9). For the usual β (0.97, 0.99) the text is what
``%g`` printed, and the figures' panel titles use it too. Imports only numpy: the analysis stages that print β do not
depend on the workflow's planning code.
"""

from __future__ import annotations

import math
from typing import Any

# Longest β file name: a β ≥ 1e-6 with up to 17 significant digits (every double) fits, so does 0; 1e-300 (302
# characters, longer than a file name may be) does not. momentum_ntk.configcheck rejects longer ones at plan time.
BETA_NAME_MAX = 24


def beta_name(beta: float) -> str:
    """β as it appears in file names: the shortest positional decimal that reads back as exactly the same float
    (0.97 -> '0.97', 1e-05 -> '0.00001', 0.90000000001 -> '0.90000000001'), so distinct β never share a file and the
    β a job reads from its file name is the configured one."""
    import numpy as np

    name = np.format_float_positional(float(beta), unique=True, trim="-")
    assert float(name) == float(beta), (beta, name)
    return name


def beta_text(beta: Any) -> str:
    """β as the tables print it: the file-name spelling (0.97 -> '0.97', 0.90000000001 -> '0.90000000001'); a
    missing β (NaN) as 'nan'."""
    value = float(beta)
    return beta_name(value) if math.isfinite(value) else "nan"


def with_beta_text(df: Any) -> Any:
    """A copy of the DataFrame ``df`` with its ``beta`` column (if any) as :func:`beta_text` strings, for a CSV whose
    float format would round it; a missing β stays missing (an empty CSV field, as before)."""
    if "beta" not in df.columns:
        return df
    return df.assign(beta=[beta_text(b) if math.isfinite(float(b)) else None for b in df["beta"]])
