"""Tests of the figures stage (src/momentum_ntk/figures.py): every figure renders from a constructed long table,
Table 1 carries the theorem's exponents, and bad input exits 2 naming the file.

Run: PYTHONPATH=src python -m pytest tests/test_figures.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from momentum_ntk import dynamics, figures, methods
from momentum_ntk.aggregate import runs_to_arrow, summarize
from momentum_ntk.entry import cli

STEPS = 80


def long_table(dataset: str = "toy") -> pd.DataFrame:
    """2 methods × 3 widths × 2 (η, β) × 2 seeds of exponential losses with Gram tracking every 10 steps."""
    t = np.arange(STEPS + 1)
    rows = []
    for method, rho in (("hb", 0.93), ("nag", 0.9)):
        for width in (100, 400, 1600):
            for eta_divisor, beta in ((10, 0.9), (20, 0.99)):
                for seed in (0, 1):
                    lam = np.where(t % 10 == 0, 0.2 * (1 - 0.3 * t / STEPS * 100 / width), np.nan)
                    rows.append(pd.DataFrame({
                        "dataset": dataset, "method": method, "width": width, "eta_divisor": eta_divisor,
                        "eta": 1.0 / (eta_divisor * 2.0), "beta": beta, "seed": seed, "step": t,
                        "loss": (1 + seed) * rho**t,
                        "max_dist": (1 - np.exp(-t / 20)) * (1 + 0.1 * seed) / np.sqrt(width),
                        "lambda_min_H": lam, "lambda_max_H": lam * 10, "pattern_changed": lam * 0,
                        "traj_err_h0": 0.01 * t / t.max(), "traj_err_inf": 0.02 * t / t.max(),
                        "lambda0_rows": 0.2, "diverged": False,
                    }))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def runs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agg") / "runs.parquet"
    pq.write_table(runs_to_arrow(long_table()), path)
    return path


def assert_pdf_png(pdf: Path, png: Path) -> None:
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 3000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


@pytest.mark.parametrize("name", ["fig1", "fig2", "fig3", "fig4", "width", "gram"])
def test_each_figure_renders_pdf_and_png(name: str, runs_file: Path, tmp_path: Path) -> None:
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    argv = [name, "--pdf", str(pdf), "--png", str(png)]
    if name != "fig1":
        argv += ["--runs", str(runs_file)]
    assert cli(figures.main, argv) == 0
    assert_pdf_png(pdf, png)


def test_figures_render_with_a_diverged_run(tmp_path: Path) -> None:
    runs = long_table()
    hit = (runs["method"] == "nag") & (runs["width"] == 400) & (runs["seed"] == 1) & (runs["eta_divisor"] == 10)
    runs.loc[hit, "diverged"] = True
    runs.loc[hit & (runs["step"] >= 40), "loss"] = np.inf
    runs = runs[~hit | (runs["step"] <= 45)]  # a diverged run stops early
    path = tmp_path / "runs.parquet"
    pq.write_table(runs_to_arrow(runs), path)
    for name in ("fig2", "width"):
        pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
        assert cli(figures.main, [name, "--runs", str(path), "--pdf", str(pdf), "--png", str(png)]) == 0
        assert_pdf_png(pdf, png)


def test_figure_methods_are_data() -> None:
    assert figures.FIGURE_METHOD == {"fig3": "hb", "fig4": "nag"}  # the paper: Fig. 3 is HB, Fig. 4 NAG
    assert [figures._note_y(m) for m in methods.names()] == [0.9, 0.8, 0.7][: len(methods.names())]


def test_theorem_exponents_by_hand() -> None:
    lam0, eta = 0.02, 0.05
    root = math.sqrt(lam0 / 2) * math.sqrt(eta)
    # the one definition (dynamics.theorem_rate) that Table 1 (rates.theorem_table), the figures and the claims use
    assert dynamics.theorem_rate("hb", lam0, eta) == pytest.approx((2 - math.sqrt(2)) * root)
    a = math.sqrt(2 * lam0 * eta) / 4
    rho = 0.5 * (4 + 3 * a - math.sqrt(8 + 16 * a + 9 * a * a))
    assert dynamics.theorem_rate("nag", lam0, eta) == pytest.approx(rho * root)
    assert math.isnan(dynamics.theorem_rate("gd", lam0, eta))
    assert methods.rho_nag(0.5) == pytest.approx(figures.NAG_RHO_MAX)
    assert methods.rho_nag(1e-12) == pytest.approx(methods.HB_RHO)


def test_table1_markdown_and_csv(tmp_path: Path) -> None:
    summ = tmp_path / "summary.parquet"
    pq.write_table(pa.Table.from_pandas(summarize(long_table(), [10, 40]), preserve_index=False), summ)
    ntk = tmp_path / "ntk.json"
    ntk.write_text(json.dumps({"dataset": "toy", "lambda0": 0.02, "lambda_m": 2.0, "eta": {"10": 0.05, "20": 0.025}}))
    md, csv = tmp_path / "t1.md", tmp_path / "t1.csv"
    argv = ["table1", "--summary", str(summ), "--ntk-summary", str(ntk), "--out-md", str(md), "--out-csv", str(csv)]
    assert cli(figures.main, argv) == 0
    text = md.read_text()
    assert "3√μ t/7" in text and "Zhang et al. 2021" in text and "(2-√2)" in text
    table = pd.read_csv(csv)
    assert (table["part"] == "literature").sum() == 6
    emp = table[table["part"] == "this workflow"]
    assert len(emp) == 2 * 3 * 2
    row = emp[(emp["method"] == "HB") & (emp["eta_divisor"] == 20)].iloc[0]
    assert row["eta"] == 0.025  # η from the NTK summary, keyed by divisor
    assert row["theorem_exponent_per_iter"] == pytest.approx((2 - math.sqrt(2)) * math.sqrt(0.01) * math.sqrt(0.025))
    assert row["empirical_exponent_per_iter"] == pytest.approx(-math.log(0.93), rel=1e-9)  # CSV keeps 12 digits
    assert row["empirical_over_theorem"] == pytest.approx(-math.log(0.93) / row["theorem_exponent_per_iter"])


def test_bad_inputs_exit_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"dataset": ["toy"], "step": [0]}), bad)
    out = ["--pdf", str(tmp_path / "x.pdf"), "--png", str(tmp_path / "x.png")]
    assert cli(figures.main, ["fig2", "--runs", str(bad), *out]) == 2
    assert str(bad) in capsys.readouterr().err
    two = tmp_path / "two.parquet"
    pq.write_table(runs_to_arrow(pd.concat([long_table("a"), long_table("b")])), two)
    assert cli(figures.main, ["fig3", "--runs", str(two), *out]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert cli(figures.main, ["fig3", "--runs", str(two), "--dataset", "b", *out]) == 0
    missing = tmp_path / "nope.json"
    argv = ["table1", "--summary", str(bad), "--ntk-summary", str(missing), "--out-md", str(tmp_path / "t.md"),
            "--out-csv", str(tmp_path / "t.csv")]
    assert cli(figures.main, argv) == 2
    assert str(bad) in capsys.readouterr().err
