"""Uncertainty of width exponents: the seed bootstrap against a normal-theory interval and against a brute-force
refit of every resample, the drop-one-width range, and the exponent of noiseless power laws.

    PYTHONPATH=src python -m pytest tests/test_uncertainty.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from momentum_ntk import uncertainty
from momentum_ntk.compare import _centred, fit_width_slope, width_slope_uncertainty


def test_bootstrap_of_a_mean_matches_normal_theory():
    """For 40 seeds of N(0, 1) values, the 95 % bootstrap interval of the mean is close to x̄ ± 1.96·s/√n."""
    x = np.random.default_rng(3).standard_normal(40)
    lo, hi = uncertainty.seed_bootstrap(x[:, None], uncertainty.mean_of_draws, n_boot=4000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert lo < x.mean() < hi
    assert lo == pytest.approx(x.mean() - half, abs=0.25 * half) and hi == pytest.approx(x.mean() + half, abs=0.25 * half)
    assert (lo, hi) == uncertainty.seed_bootstrap(x[:, None], uncertainty.mean_of_draws, n_boot=4000)  # seeded
    assert all(math.isnan(v) for v in uncertainty.seed_bootstrap(x[:1, None], uncertainty.mean_of_draws))


def power_law_points(exponent: float, noise: float, seeds: int = 5, widths=(128, 256, 512, 1024)) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = [{"seed": s, "width": m, "max_dist": 3.0 * (1 + s) * m**exponent * math.exp(noise * rng.standard_normal())}
            for s in range(seeds) for m in widths]
    return pd.DataFrame(rows)


def test_noiseless_power_law_has_a_zero_width_interval():
    out = uncertainty.exponent_summary(power_law_points(-0.5, 0.0), value="max_dist")
    for key in ("mean", "ci_lo", "ci_hi", "spec_lo", "spec_hi", "lo", "hi"):
        assert out[key] == pytest.approx(-0.5, abs=1e-12), key
    assert out["widths"] == [128, 256, 512, 1024] and out["n_seeds"] == 5


def test_noisy_power_law_interval_covers_the_truth_and_unites_both_sources():
    out = uncertainty.exponent_summary(power_law_points(-0.5, 0.3, seeds=8), value="max_dist")
    assert out["lo"] < -0.5 < out["hi"]
    assert out["lo"] == min(out["ci_lo"], out["spec_lo"]) and out["hi"] == max(out["ci_hi"], out["spec_hi"])
    # the drop-one range is the range of 5 refits (all widths, and each of the 4 three-width subsets), done by hand
    pts = power_law_points(-0.5, 0.3, seeds=8)
    fits = []
    for keep in [(128, 256, 512, 1024), (256, 512, 1024), (128, 512, 1024), (128, 256, 1024), (128, 256, 512)]:
        sub = pts[pts["width"].isin(keep)]
        fits.append(np.mean([np.polyfit(np.log(g["width"]), np.log(g["max_dist"]), 1)[0] for _, g in sub.groupby("seed")]))
    assert (out["spec_lo"], out["spec_hi"]) == pytest.approx((min(fits), max(fits)), abs=1e-12)


def errors_table(seeds: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    rows = []
    for method in ("hb", "nag"):
        for s in range(seeds):
            for m in (250, 500, 1000, 2000):
                e = (2.0 if method == "hb" else 0.5) * m**-0.7 * math.exp(0.2 * rng.standard_normal())
                rows.append({"method": method, "eta_divisor": 10, "beta": 0.99, "seed": s, "width": m,
                             "max_traj_err_lin_h0": e})
    return pd.DataFrame(rows)


def test_linearization_slope_bootstrap_equals_refitting_each_resample():
    """The per-seed sufficient statistics give, on a balanced design, the same slope as refitting the fixed-effects
    model (:func:`fit_width_slope`) on each resampled table (seeds relabelled per draw)."""
    err = errors_table()
    df = _centred(err, "max_traj_err_lin_h0", ["method", "eta_divisor", "beta"])
    sums = df.assign(xy=df["x"] * df["y"], xx=df["x"] ** 2).groupby("seed")[["xy", "xx"]].sum().to_numpy()
    rng = np.random.Generator(np.random.PCG64(0))
    draws = rng.integers(0, 4, size=(30, 4))
    fast = sums[draws][..., 0].sum(1) / sums[draws][..., 1].sum(1)
    for row, value in zip(draws, fast):
        table = pd.concat([err[err["seed"] == s].assign(seed=j) for j, s in enumerate(row)], ignore_index=True)
        assert fit_width_slope(table)["slope"] == pytest.approx(value, rel=1e-12)
    assert fit_width_slope(err)["slope"] == pytest.approx(sums[:, 0].sum() / sums[:, 1].sum(), rel=1e-12)


def test_width_slope_uncertainty_on_synthetic_curves():
    """Runs whose trajectory error grows as c·m^-0.7·k/100 up to T give the slope −0.7, with an interval that
    contains it."""
    rows = []
    for s in range(4):
        c = 5.0 * (1 + 0.1 * s)
        for m in (250, 500, 1000, 2000):
            k = np.arange(101)
            measured = np.exp(-0.05 * k)
            lin = measured * (1 + c * m**-0.7)
            rows.append(pd.DataFrame({"method": "nag", "width": m, "eta_divisor": 10, "beta": 0.99, "seed": s,
                                      "step": k, "loss_measured": measured, "loss_lin_h0": lin, "loss_lin_inf": lin,
                                      "loss_ode_beta": lin, "loss_ode_paper": lin, "bound_theorem": lin,
                                      "traj_err_h0": c * m**-0.7 * k / 100, "traj_err_inf": c * m**-0.7 * k / 50}))
    out = width_slope_uncertainty(pd.concat(rows, ignore_index=True), fraction=0.5)
    assert out["slope"] == pytest.approx(-0.7, abs=1e-9)
    assert out["lo"] <= -0.7 <= out["hi"] and out["hi"] - out["lo"] < 1e-6
    assert out["widths"] == [250, 500, 1000, 2000] and out["horizons"] == [50, 50] and out["n_seeds"] == 4
