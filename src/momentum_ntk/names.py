"""How a run's parameters are spelled for people: the tables print them as losslessly as the file names do.

β is the one real-valued parameter in a run's name (m, c and the seed are integers). :func:`beta_text` is its
shortest positional decimal that reads back as the same float, the spelling of the file names
(:func:`momentum_ntk.plan.beta_name`), so β = 0.9 and β = 0.90000000001, two files, are also two distinct rows in
summary.csv, table1, theory_rates_* and claims.md (``%g`` and ``%.10g`` print both as 0.9). For the usual β (0.97,
0.99) the text is what ``%g`` printed, and the figures' panel titles use it too.
"""

from __future__ import annotations

import math
from typing import Any

from momentum_ntk.plan import beta_name


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
