"""The table of optimizers (momentum_ntk.methods) is the one definition: training, theory, figures, the Snakefile's
wildcard and the config schema read it, an unknown method raises everywhere, and a method added to the table alone
trains, predicts and plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from momentum_ntk import aggregate, compare, dynamics, engine, figures, methods, theory, theory_report, train
from momentum_ntk.errors import UserError
from momentum_ntk.methods import Method

ROOT = Path(__file__).resolve().parents[1]


def test_schema_enum_and_snakefile_wildcard_read_the_table():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["grid"]["properties"]["methods"]["items"]["enum"]
    assert enum == list(methods.names())
    assert set(yaml.safe_load((ROOT / "config.yaml").read_text())["grid"]["methods"]) <= set(enum)
    snakefile = (ROOT / "Snakefile").read_text()
    assert 'method="|".join(method_names())' in snakefile and "gd|hb|nag" not in snakefile


def test_records_match_the_papers_formulas():
    """Closed forms of eqs. (3)-(5), the linearized factor, the ODE damping and Theorems 1-2, spelled out by hand."""
    beta, eta, lam = 0.9, 0.01, np.array([0.5, 2.0])
    assert methods.get("gd").buffer(beta) == (0.0, 0.0, 1.0, 1.0)
    assert methods.get("hb").buffer(beta) == (0.9, 0.0, 1.0, 1.0)
    assert methods.get("nag").buffer(beta) == (0.9, 1.0, 0.9, 0.0)
    b, one_minus_b = methods.get("nag").momentum(lam, eta, beta)
    np.testing.assert_allclose(b, beta * (1 - eta * lam), rtol=1e-15)
    np.testing.assert_allclose(one_minus_b, 1 - beta * (1 - eta * lam), rtol=1e-14)
    gamma, _ = dynamics.ode_coefficients(lam, 0.04, eta, "nag")
    np.testing.assert_allclose(gamma, 0.2 + 0.5 * math.sqrt(eta) * lam, rtol=1e-15)
    lambda0, pl0 = 0.3, 2.0
    c, e = dynamics.theorem_constants("hb", lambda0, eta, pl0)
    assert (c, e) == pytest.approx((6 * pl0 / lambda0, (2 - math.sqrt(2)) * math.sqrt(lambda0 / 2)), rel=1e-15)
    alpha = math.sqrt(2 * lambda0 * eta) / 4
    rho = (4 + 3 * alpha - math.sqrt(8 + 16 * alpha + 9 * alpha**2)) / 2
    c, e = dynamics.theorem_constants("nag", lambda0, eta, pl0)
    assert (c, e) == pytest.approx((26 * pl0 / (3 * lambda0), rho * math.sqrt(lambda0 / 2)), rel=1e-14)
    assert dynamics.theorem_rate("nag", lambda0, eta) == pytest.approx(e * math.sqrt(eta), rel=1e-15)
    assert math.isnan(dynamics.theorem_rate("gd", lambda0, eta))


@pytest.mark.parametrize(
    "call",
    [
        lambda: methods.get("adam"),
        lambda: methods.present(["hb", "adam"]),
        lambda: dynamics.momentum_factor(np.ones(2), 0.1, 0.9, "adam"),
        lambda: dynamics.ode_coefficients(np.ones(2), 0.1, 0.1, "adam"),
        lambda: dynamics.theorem_constants("adam", 0.1, 0.1, 1.0),
        lambda: dynamics.theorem_rate("adam", 0.1, 0.1),
    ],
)
def test_an_unknown_method_raises(call):
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        call()


def test_an_unknown_method_stops_training():
    with pytest.raises(UserError, match="'adam' is not one of hb, nag, gd"):
        engine.RunSpec.of({"method": "adam", "eta": 0.1, "beta": 0.9})
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--data", "x", "--dataset", "d", "--width", "4", "--method", "adam",
                                         "--out", "o", "--meta", "m"])  # fmt: skip


def test_one_beta_check():
    assert methods.check_beta(0) == 0.0 and methods.check_beta(0.99) == 0.99
    for bad in (1.0, -0.1, float("nan"), 2):
        with pytest.raises(UserError, match=r"must lie in \[0, 1\) \(config key grid.betas\)"):
            methods.check_beta(bad)
    with pytest.raises(UserError, match="grid.betas"):
        dynamics.alpha_damping_from_beta(1.0, 0.1)


def test_theorem_2_constants_are_recorded_for_the_method_whose_theorem_has_them():
    modes = pd.DataFrame({"lambda_inf": [0.1, 1.0], "coef_inf": [1.0, 1.0], "lambda_h0": [0.1, 1.0],
                          "coef_h0": [1.0, 1.0]})  # fmt: skip
    lambda0, eta = 0.1, 0.05
    for name in methods.names():
        rec = compare.prediction_rates(modes, method=name, eta=eta, beta=0.9, lambda0=lambda0)
        rate_constant = methods.get(name).rate_constant
        has_alpha = rate_constant is not None and not math.isnan(rate_constant(lambda0, eta)[1])
        assert ("alpha_thm2" in rec) == ("rho_nag" in rec) == has_alpha == (name == "nag"), name
    rec = compare.prediction_rates(modes, method="nag", eta=eta, beta=0.9, lambda0=lambda0)
    assert rec["alpha_thm2"] == methods.alpha_thm2(lambda0, eta)
    assert rec["rho_nag"] == methods.rho_nag(methods.alpha_thm2(lambda0, eta))


@pytest.fixture
def half_momentum(monkeypatch) -> str:
    """A throwaway method, added to the table alone: heavy ball with half the configured β."""
    hb = methods.get("hb")
    record = Method(
        name="hbhalf", label="HB β/2", color="#2ca02c", marker="D", equation="eq. (4) at β/2 (a test)",
        buffer=lambda beta: hb.buffer(beta / 2),
        momentum=lambda lam, eta, beta: hb.momentum(lam, eta, beta / 2),
        ode_gradient_damping=None, theorem=None,
    )  # fmt: skip
    monkeypatch.setitem(methods.METHODS, record.name, record)
    return record.name


@pytest.mark.slow
def test_a_method_added_to_the_table_trains_predicts_and_plots(half_momentum, tiny_run, tmp_path):
    """Through the stage CLIs (in this process, so they see the added record): train a pack of the new method at
    β = 0.9 and HB at β = 0.45, predict both, aggregate and draw Fig. 2 and the theory overlay. The new method's loss
    and linearized predictions equal HB's at β/2 exactly; it has no ODE and no theorem (NaN columns)."""
    res = tiny_run / "results"
    runs = [tmp_path / f"{name}.parquet" for name in ("half", "hb")]
    metas = [p.with_suffix(".json") for p in runs]
    modes = tmp_path / "modes.parquet"
    assert train.main(["--data", str(res / "data/mnist5k.npz"), "--ntk-summary", str(res / "ntk/mnist5k/summary.json"),
                       "--dataset", "mnist5k", "--width", "64", "--seed", "0", "--method", half_momentum, "hb",
                       "--eta-divisor", "10", "--beta", "0.9", "0.45", "--steps", "40", "--gram-every", "10",
                       "--dtype", "float64", "--device", "cpu", "--no-progress", "--out", *map(str, runs),
                       "--meta", *map(str, metas), "--modes-out", str(modes),
                       "--spectrum", str(res / "ntk/mnist5k/spectrum.parquet"),
                       "--eigvecs", str(res / "ntk/mnist5k/eigvecs.npy")]) == 0  # fmt: skip
    half, hb = (pd.read_parquet(p) for p in runs)
    assert half["loss"].tolist() == hb["loss"].tolist() and half["loss"].iloc[-1] < half["loss"].iloc[0]

    preds = [tmp_path / f"pred_{name}.parquet" for name in ("half", "hb")]
    assert theory.main(["predict", "--modes", str(modes), "--ntk-summary", str(res / "ntk/mnist5k/summary.json"),
                        "--method", half_momentum, "hb", "--eta-divisor", "10", "10", "--beta", "0.9", "0.45",
                        "--steps", "40", "--run", *map(str, runs), "--out", *map(str, preds)]) == 0  # fmt: skip
    p_half, p_hb = (pd.read_parquet(p) for p in preds)
    for col in ("loss_lin_inf", "loss_lin_h0"):
        assert p_half[col].tolist() == p_hb[col].tolist()
    assert p_half["loss_ode_beta"].isna().all() and p_half["bound_theorem"].isna().all()
    assert p_hb["loss_ode_beta"].notna().all()

    long, summary, csv = tmp_path / "runs.parquet", tmp_path / "summary.parquet", tmp_path / "summary.csv"
    assert aggregate.main(["--runs", *map(str, runs), "--out", str(long), "--summary", str(summary),
                           "--summary-csv", str(csv), "--report-steps", "10", "40"]) == 0  # fmt: skip
    pdf, png = tmp_path / "fig2.pdf", tmp_path / "fig2.png"
    assert figures.main(["fig2", "--runs", str(long), "--dataset", "mnist5k", "--pdf", str(pdf), "--png", str(png)]) == 0
    assert png.stat().st_size > 10_000
    fig = figures.figure2(pd.read_parquet(long), "mnist5k")
    labels = {label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]}
    assert any(label.startswith("HB β/2") for label in labels), labels
    opdf, opng = tmp_path / "overlay.pdf", tmp_path / "overlay.png"
    assert theory_report.main(["overlay", "--pred", *map(str, preds), "--pdf", str(opdf), "--png", str(opng)]) == 0
    assert opng.stat().st_size > 10_000
