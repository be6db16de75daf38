"""The figures' shared look and file handling: one style, one writer, one way to label a setting.

Imported by every stage that draws (figures, theory_report, regime); matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from momentum_ntk.io import atomic_path  # noqa: E402
from momentum_ntk.names import beta_text  # noqa: E402


MAX_POINTS = 1500  # points per plotted curve; longer runs are thinned evenly (first and last step kept)


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "axes.titlesize": 8.5, "legend.fontsize": 7.5})


def save_figure(fig: plt.Figure, pdf: str | Path, png: str | Path) -> None:
    """Write ``fig`` as PNG and PDF, atomically, and close it. The layout engine runs for the PNG only (the faster
    renderer); the PDF reuses its axes positions: the same layout, one fewer layout pass over every panel."""
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
        fig.set_layout_engine("none")
    plt.close(fig)


def thin(idx: np.ndarray) -> np.ndarray:
    if len(idx) <= MAX_POINTS:
        return idx
    keep = np.unique(np.linspace(0, len(idx) - 1, MAX_POINTS).round().astype(int))
    return idx[keep]


def eta_label(divisor: int) -> str:
    return f"η=1/({int(divisor)}λm)"


def setting_label(eta_divisor: int, beta: float) -> str:
    return f"{eta_label(eta_divisor)}, β={beta_text(beta)}"
