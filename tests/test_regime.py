"""The width sweep into the NTK regime (src/momentum_ntk/regime.py): onset widths, extrapolation, the theory's widths,
and the driver end to end on the tiny preset at two sample sizes.

    PYTHONPATH=src python -m pytest tests/test_regime.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from momentum_ntk import regime
from momentum_ntk.entry import cli

ROOT = Path(__file__).resolve().parents[1]


def test_onset_is_the_start_of_the_last_run_of_holds():
    assert regime.onset_width({128: "fails", 256: "holds", 512: "fails", 1024: "holds", 2048: "holds"}) == 1024
    assert regime.onset_width({128: "holds", 256: "holds"}) == 128
    assert regime.onset_width({128: "holds", 256: "inconclusive"}) is None  # the largest width must hold


def test_extrapolation_of_a_power_law_reaches_the_bar_where_it_should():
    w = np.array([128, 256, 512, 1024, 2048])
    e = 3.0 * w**-0.5
    assert regime.extrapolate(w, e, 0.01) == pytest.approx((3.0 / 0.01) ** 2, rel=1e-9)  # 3 m^-1/2 = 0.01
    assert regime.extrapolate(w, np.full(5, 0.5), 0.1) == math.inf  # does not fall: never
    assert math.isnan(regime.extrapolate(w[:1], e[:1], 0.1))


def test_theory_widths_are_the_lemma_and_theorem_formulas():
    t = regime.theory_widths(64, 0.05, delta=0.1)
    assert t["lemma2_width"] == pytest.approx(64**2 * math.log(640) / 0.05**2)
    assert t["theorem_width"] == pytest.approx(64**6 / (0.1**3 * 0.05**4))


def test_n_exponent_of_onsets_growing_like_n_squared():
    rows = [{"dataset": "d", "method": "nag", "claim": "gram_stays_pd", "n": n, "onset": 4 * n * n, "min_width": 128,
             "onset_extrapolated": math.nan, **regime.theory_widths(n, 0.05)} for n in (32, 64, 128)]
    exps = regime.n_exponents(pd.DataFrame(rows))
    assert exps["exponent"].iloc[0] == pytest.approx(2.0)
    assert exps["theorem_exponent"].iloc[0] == pytest.approx(6.0)
    # an onset at the smallest width only bounds it from above: left out of the fit
    edge = pd.DataFrame(rows).assign(min_width=4 * 32 * 32)
    assert regime.n_exponents(edge)["exponent"].iloc[0] == pytest.approx(2.0)  # fitted on n = 64, 128
    assert regime.n_exponents(edge.assign(onset=128, min_width=128)).empty  # every onset at the edge: nothing to fit


@pytest.mark.slow
def test_sweep_at_two_sample_sizes_end_to_end(tmp_path: Path):
    """`regime run` on the tiny preset at n = 16 and 24: two ordinary workflow runs in their own folders, then the
    onset table, CSVs and figures; every per-width claim has a row per (n, method)."""
    root = tmp_path / "regime"
    argv = ["run", "--configfile", str(ROOT / "workflow/presets/tiny.yaml"), "--n", "16", "24", "--root", str(root),
            "--cores", "2"]
    assert cli(regime.main, argv) == 0
    for n in (16, 24):
        assert (root / f"n{n}/results/claims.json").is_file()
        assert (root / f"n{n}/results/.config.json").read_text().count(f"regime-n{n}") == 1
    onsets = pd.read_csv(root / "onset.csv")
    assert sorted(onsets["n"].unique()) == [16, 24]
    assert len(onsets) == 2 * 2 * len(regime.PER_WIDTH)  # n × methods × claims (one dataset)
    assert (onsets["lemma2_width"] > 0).all() and (onsets["theorem_width"] > onsets["lemma2_width"]).all()
    metrics = pd.read_csv(root / "onset_metrics.csv")
    assert set(metrics["width"]) == {64, 256} and (metrics["seeds"] == 2).all()
    assert (metrics["worst"] >= 0).all()
    text = (root / "onset.md").read_text()
    assert "## gram_stays_pd" in text and "## Onset against n" in text
    for name in ("regime_metrics", "regime_onset_n"):
        assert (root / f"{name}.png").read_bytes()[:4] == b"\x89PNG" and (root / f"{name}.pdf").is_file()
    # rerunning resumes: nothing left to train, the report is written again
    assert cli(regime.main, argv) == 0
    assert "Nothing to be done" in (root / "n16/snakemake.log").read_text()
