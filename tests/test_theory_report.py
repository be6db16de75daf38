"""Tests of the theory figures and table (src/momentum_ntk/theory_report.py) on constructed prediction files.

Run: PYTHONPATH=src python -m pytest tests/test_theory_report.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from momentum_ntk import compare, records, theory, theory_report
from momentum_ntk.entry import cli
from momentum_ntk.io import write_json, write_parquet

STEPS = 60
RATE = 0.05  # measured loss ℓ(k) = ℓ0 e^{−RATE k}
SLOPE = -0.7  # max relative error of the H(0) prediction ∝ m^SLOPE


def prediction_table(method: str, width: int, seed: int, steps: int = STEPS) -> pd.DataFrame:
    """A prediction table as `theory predict --run` writes it, with known relative errors.

    ℓ_lin_h0 = ℓ(1 + a m^SLOPE k/steps), so max_{k ≤ T} relerr = a m^SLOPE T/steps with a = 1 + 0.2·seed, and the
    trajectory error e(k) of the run the same a m^SLOPE k/steps; ℓ_lin_inf and e_inf twice as far off; the ODE curves decay at 0.04 / 0.06 per step; the bound sits 10× above ℓ(0) and decays
    at 0.01 per step (never reached).
    """
    k = np.arange(steps + 1)
    loss0 = 3.0 + seed
    meas = loss0 * np.exp(-RATE * k)
    err = (1 + 0.2 * seed) * width**SLOPE * k / steps
    gd = method == "gd"
    pred = pd.DataFrame({
        "step": k,
        "time": k * math.sqrt(0.01),
        "loss_lin_inf": meas * (1 + 2 * err),
        "loss_lin_h0": meas * (1 + err),
        "loss_ode_beta": np.nan if gd else loss0 * np.exp(-0.04 * k),
        "loss_ode_paper": np.nan if gd else loss0 * np.exp(-0.06 * k),
        "bound_theorem": np.nan if gd else 10 * loss0 * np.exp(-0.01 * k),
    })
    return compare.attach_run(pred, pd.DataFrame({"step": k, "loss": meas, "traj_err_h0": err, "traj_err_inf": 2 * err}))


def write_prediction(root: Path, method: str, width: int, seed: int, *, dataset: str = "toy", eta_divisor: int = 10,
                     beta: float = 0.9, steps: int = STEPS) -> Path:
    """Write one prediction Parquet and its record (the fields of `theory predict --run`)."""
    table = prediction_table(method, width, seed, steps)
    rec = {
        "dataset": dataset, "method": method, "width": width, "seed": seed, "eta_divisor": eta_divisor, "eta": 0.01,
        "s": 0.01, "beta": beta, "steps": steps, "lambda0": 0.02, "rate_lin_inf": 0.045, "rate_lin_h0": 0.048,
        "rate_ode_beta": None if method == "gd" else 0.04, "rate_ode_paper": None if method == "gd" else 0.06,
        "rate_theorem": None if method == "gd" else 0.01, "alpha_damping_beta": 0.28, "alpha_damping_paper": 0.01,
        **compare.comparison_record(table, (steps // 2, steps)),
    }
    path = root / dataset / method / f"m{width}_c{eta_divisor}_b{beta:g}_s{seed}.parquet"
    write_parquet(path, table)
    write_json(path.with_suffix(".json"), theory._finite_or_none(rec))
    return path


@pytest.fixture(scope="module")
def preds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("theory")
    return [write_prediction(root, m, w, s) for m in ("hb", "nag") for w in (50, 200, 800) for s in (0, 1)]


# --------------------------------------------------------------------------------------------------------------------
# Horizon, errors and the slope fit


def test_horizon_stops_at_the_fraction_and_before_the_floor() -> None:
    k = np.arange(101)
    assert compare.horizon_step(k, np.exp(-0.01 * k)) == 50  # ½ of the run, loss still ≥ 1e-4·ℓ(0)
    assert compare.horizon_step(k, np.exp(-0.2 * k)) == 46  # e^{−0.2k} < 1e-4 from k = 47 on
    diverged = np.where(k <= 40, np.exp(-0.01 * k), np.nan)
    assert compare.horizon_step(k, diverged, fraction=1.0) == 40  # no loss after the run stopped
    assert compare.horizon_step(k, np.full(101, np.nan)) is None


def test_run_errors_use_each_runs_own_horizon(preds: list[Path]) -> None:
    pred = records.load_predictions(preds)
    err = compare.run_errors(pred.curves)
    assert (err["horizon"] == STEPS // 2).all() and len(err) == 12
    row = err[(err["method"] == "hb") & (err["width"] == 200) & (err["seed"] == 1)].iloc[0]
    assert row["max_traj_err_lin_h0"] == pytest.approx(1.2 * 200**SLOPE * 0.5, rel=1e-9)
    assert row["max_traj_err_lin_inf"] == pytest.approx(2 * row["max_traj_err_lin_h0"], rel=1e-9)
    assert row["max_relerr_lin_h0"] == pytest.approx(1.2 * 200**SLOPE * 0.5, rel=1e-9)  # descriptive, still there
    # one run falls below 1e-4·ℓ(0) after step 20: its T is 20, the others' stays 30 (no minimum over a series)
    curves = pred.curves.copy()
    one = (curves["method"] == "hb") & (curves["width"] == 200) & (curves["seed"] == 1)
    curves.loc[one & (curves["step"] > 20), "loss_measured"] *= 1e-6
    err = compare.run_errors(curves).set_index(["method", "width", "seed"])
    assert err.loc[("hb", 200, 1), "horizon"] == 20
    assert err.loc[("hb", 200, 1), "max_traj_err_lin_h0"] == pytest.approx(1.2 * 200**SLOPE * 20 / STEPS, rel=1e-9)
    assert (err.drop(index=[("hb", 200, 1)])["horizon"] == STEPS // 2).all()


def test_width_fit_recovers_the_slope(preds: list[Path]) -> None:
    err = compare.run_errors(records.load_predictions(preds).curves)
    fit = compare.fit_width_slope(err)
    assert fit["slope"] == pytest.approx(SLOPE, abs=1e-9)  # seed factors are per-series offsets, not slope
    assert fit["n_points"] == 12 and fit["n_groups"] == 2

    rng = np.random.default_rng(0)
    widths = np.repeat([100, 300, 1000, 3000, 10000], 8)
    noisy = pd.DataFrame({"method": np.tile(["hb", "nag"], 20), "eta_divisor": 10, "beta": 0.9, "width": widths,
                          "max_traj_err_lin_h0": np.where(np.tile(["hb", "nag"], 20) == "hb", 3.0, 0.5)
                          * widths**-0.5 * np.exp(rng.normal(0, 0.1, widths.size))})
    fit = compare.fit_width_slope(noisy)
    assert abs(fit["slope"] + 0.5) < 3 * fit["stderr"] and fit["stderr"] < 0.05
    one_width = noisy[noisy["width"] == 100]
    assert math.isnan(compare.fit_width_slope(one_width)["slope"])


# --------------------------------------------------------------------------------------------------------------------
# CLI


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_cli_renders_figures_and_table(preds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = [str(p) for p in preds]
    for sub in ("overlay", "width"):
        pdf, png = tmp_path / f"{sub}.pdf", tmp_path / f"{sub}.png"
        assert cli(theory_report.main, [sub, "--pred", *files, "--pdf", str(pdf), "--png", str(png)]) == 0
        assert pdf.read_bytes()[:4] == b"%PDF" and _is_png(png)
    assert f"slope={SLOPE:.4g}" in capsys.readouterr().out

    md, csv = tmp_path / "rates.md", tmp_path / "rates.csv"
    assert cli(theory_report.main, ["table", "--pred", *files, "--out-md", str(md), "--out-csv", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert len(table) == 6 and set(table["method"]) == {"hb", "nag"}
    assert table["rate_measured"].to_numpy() == pytest.approx(RATE, rel=1e-6)
    assert table["rate_lin_h0_window"].between(0.04, RATE).all()  # the growing error slows the prediction a little
    assert table["rate_ode_paper_window"].to_numpy() == pytest.approx(0.06, rel=1e-6)
    assert table["rate_theorem"].to_numpy() == pytest.approx(0.01)
    text = md.read_text()
    assert text.count("\n| HB |") == 3 and "| NAG | 800 |" in text and "ODE α=λ0/2" in text


def test_seed_mean_and_panels(preds: list[Path]) -> None:
    pred = records.load_predictions(preds)
    mean, which = theory_report.one_curve_per_setting(pred.curves, None, True)
    assert which == "mean over 2 seeds" and len(mean) == 6 * (STEPS + 1)
    first = mean[(mean["method"] == "hb") & (mean["width"] == 50) & (mean["step"] == 0)]
    assert first["loss_measured"].iloc[0] == pytest.approx(3.5)  # ℓ0 = 3 + seed
    stopped = pred.curves.copy()
    stopped.loc[(stopped["seed"] == 1) & (stopped["step"] > 40), "loss_measured"] = np.nan  # seed 1 diverged
    mean, _ = theory_report.one_curve_per_setting(stopped, None, True)
    assert mean.loc[mean["step"] > 40, "loss_measured"].isna().all()
    assert mean.loc[mean["step"] <= 40, "loss_measured"].notna().all()
    one, which = theory_report.one_curve_per_setting(pred.curves, 1, False)
    assert which == "seed 1" and (one.loc[one["step"] == 0, "loss_measured"] == 4.0).all()
    fig = theory_report.figure_overlay(pred, mean_seeds=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6 and any("NAG, m=800" in t for t in titles)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "ODE, paper's α = λ0/2" in labels and any("α from β" in lab for lab in labels)
    theory_report.plt.close(fig)


def test_gd_runs_draw_without_ode_or_bound(tmp_path: Path) -> None:
    files = [str(write_prediction(tmp_path, m, w, 0)) for m in ("gd", "nag") for w in (50, 200)]
    fig = theory_report.figure_overlay(records.load_predictions(files))
    gd_axes = [ax for ax in fig.axes if ax.get_title().startswith("GD")]
    assert len(gd_axes) == 2 and all(len(ax.get_lines()) == 4 for ax in gd_axes)  # measured, 2 linearized, T
    theory_report.plt.close(fig)
    md, csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert cli(theory_report.main, ["table", "--pred", *files, "--out-md", str(md), "--out-csv", str(csv)]) == 0
    gd = pd.read_csv(csv).query("method == 'gd'")
    assert gd["rate_theorem"].isna().all() and "| GD | 50 |" in md.read_text()


def test_bad_input_exits_2_naming_the_file(preds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = ["--pdf", str(tmp_path / "x.pdf"), "--png", str(tmp_path / "x.png")]
    no_measured = tmp_path / "toy" / "hb" / "m50_c10_b0.9_s0.parquet"
    no_measured.parent.mkdir(parents=True)
    write_parquet(no_measured, prediction_table("hb", 50, 0).drop(columns="loss_measured"))
    no_measured.with_suffix(".json").write_text(preds[0].with_suffix(".json").read_text())
    no_record = tmp_path / "lonely.parquet"
    write_parquet(no_record, prediction_table("hb", 50, 0))
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    broken.with_suffix(".json").write_text(preds[0].with_suffix(".json").read_text())
    bad_json = tmp_path / "bad_json.parquet"
    write_parquet(bad_json, prediction_table("hb", 50, 0))
    bad_json.with_suffix(".json").write_text("{")
    for bad in (no_measured, no_record, broken, bad_json, tmp_path / "missing.parquet"):
        assert cli(theory_report.main, ["overlay", "--pred", str(preds[1]), str(bad), *out]) == 2
        assert bad.stem in capsys.readouterr().err
    assert cli(theory_report.main, ["overlay", "--pred", str(preds[1]), str(preds[1]), *out]) == 2
    assert "twice" in capsys.readouterr().err
    other = write_prediction(tmp_path, "hb", 50, 0, dataset="other")
    assert cli(theory_report.main, ["width", "--pred", str(preds[1]), str(other), *out]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert cli(theory_report.main, ["overlay", "--pred", str(preds[1]), "--seed", "7", *out]) == 2
    assert not (tmp_path / "x.png").exists()


def test_record_carries_horizon_and_bound_margin(preds: list[Path]) -> None:
    rec = json.loads(preds[0].with_suffix(".json").read_text())
    assert rec["horizon"] == {"step": STEPS // 2, "fraction": 0.5, "floor_ratio": 1e-4}
    assert rec["max_relerr_lin_h0_horizon"] == pytest.approx(50**SLOPE * 0.5)
    assert rec["bound_check"]["fraction_holds"] == 1.0
    assert rec["bound_margin"]["max_ratio"] == pytest.approx(0.1)  # ℓ(0) / (10 ℓ(0)) at step 0
    assert rec["bound_margin"]["measured_ratio_at_first_violation"] is None
