"""Tests of the aggregate stage (src/momentum_ntk/aggregate.py) on small run files written here.

Run: PYTHONPATH=src python -m pytest tests/test_aggregate.py -q
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

from momentum_ntk import aggregate
from momentum_ntk.rates import fit_linear_rate, width_exponents
from momentum_ntk.tables import RUN_SCHEMA, SORT_KEYS
from momentum_ntk.entry import cli


def write_run(root: Path, *, dataset: str = "toy", method: str = "hb", width: int = 100, eta_divisor: int = 10,
              beta: float = 0.9, seed: int = 0, loss: np.ndarray, max_dist: np.ndarray | None = None,
              lambda_min: np.ndarray | None = None, lambda0_rows: float = 0.2, diverged: bool = False,
              drop: str | None = None) -> Path:
    """One run Parquet + sidecar in the train stage's layout; ``drop`` leaves a column out."""
    steps = np.arange(len(loss), dtype=np.int64)
    df = pd.DataFrame({
        "step": steps,
        "loss": np.asarray(loss, dtype=float),
        "max_dist": np.asarray(max_dist if max_dist is not None else np.sqrt(steps) / width, dtype=float),
        "lambda_min_H": np.asarray(lambda_min if lambda_min is not None else np.full(len(loss), np.nan), dtype=float),
        "lambda_max_H": np.full(len(loss), np.nan),
        "pattern_changed": np.full(len(loss), np.nan),
        "traj_err_h0": np.linspace(0.0, 0.1, len(loss)),
        "traj_err_inf": np.linspace(0.0, 0.2, len(loss)),
    })
    if drop:
        df = df.drop(columns=drop)
    path = root / dataset / method / f"m{width}_c{eta_divisor}_b{beta:g}_s{seed}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    meta = {"dataset": dataset, "method": method, "width": width, "eta_divisor": eta_divisor,
            "eta": 1.0 / (eta_divisor * 2.0), "beta": beta, "seed": seed, "steps": len(loss) - 1,
            "steps_done": len(loss) - 1, "diverged": diverged, "diverged_step": None, "lambda0_rows": lambda0_rows}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_long_table_schema_dtypes_and_order(tmp_path: Path) -> None:
    paths = []
    # written in reverse order so that sorting has work to do
    for method in ("nag", "hb"):
        for width in (400, 100):
            for seed in (1, 0):
                loss = (seed + 1.0) * 0.9 ** np.arange(6)
                paths.append(write_run(tmp_path, method=method, width=width, seed=seed, loss=loss,
                                       diverged=(method == "nag" and seed == 1)))
    out = tmp_path / "agg" / "runs.parquet"
    assert cli(aggregate.main, ["--runs", *map(str, paths), "--out", str(out)]) == 0
    schema = pq.read_schema(out)
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in RUN_SCHEMA]
    df = pd.read_parquet(out)
    assert not any(dt == object for dt in df.dtypes), df.dtypes
    assert len(df) == 8 * 6
    assert df.equals(df.sort_values(SORT_KEYS).reset_index(drop=True))
    first = df.iloc[0]
    assert (first["method"], first["width"], first["seed"], first["step"]) == ("hb", 100, 0, 0)
    assert df["eta"].unique().tolist() == [1.0 / 20.0]
    assert df["lambda0_rows"].unique().tolist() == [0.2]
    div = df.groupby(["method", "seed"])["diverged"].all()
    assert div[("nag", 1)] and not div[("nag", 0)] and not div[("hb", 1)]


def test_summary_numbers_match_hand_computation(tmp_path: Path) -> None:
    t = np.arange(41)
    paths = []
    for seed, l0 in ((0, 1.0), (1, 2.0)):
        lam = np.full(41, np.nan)
        lam[::10] = [0.2, 0.18, 0.16 - 0.02 * seed, 0.15, 0.15]  # λ0_rows = 0.2: ratios down to 0.7
        paths.append(write_run(tmp_path, method="hb", seed=seed, loss=l0 * 0.5**t, lambda_min=lam,
                               max_dist=np.minimum(t, 20) * (seed + 1) * 0.01))
        paths.append(write_run(tmp_path, method="nag", seed=seed, loss=l0 * 0.25**t, lambda_min=lam,
                               max_dist=np.minimum(t, 20) * (seed + 1) * 0.01))
    out, summ, csv = tmp_path / "runs.parquet", tmp_path / "summary.parquet", tmp_path / "summary.csv"
    rc = cli(aggregate.main, ["--runs", *map(str, paths), "--out", str(out), "--summary", str(summ),
                              "--summary-csv", str(csv), "--report-steps", "2", "4", "99", "--decades", "3"])
    assert rc == 0
    s = pd.read_parquet(summ).set_index("method")
    assert pd.read_csv(csv).shape == pd.read_parquet(summ).shape
    hb, nag = s.loc["hb"], s.loc["nag"]
    assert hb["n_seeds"] == 2 and hb["n_diverged"] == 0
    # loss at step 2: seeds 0.25 and 0.5
    assert hb["loss_mean_t2"] == pytest.approx(0.375)
    assert hb["loss_std_t2"] == pytest.approx(math.sqrt(((0.25 - 0.375) ** 2 + (0.5 - 0.375) ** 2) / 1))
    assert math.isnan(hb["loss_mean_t99"])  # the runs end at step 40
    # 0.5^t <= 10^-k first at t = 4, 7, 10; 0.25^t at t = 2, 4, 5
    assert [hb[f"steps_to_1e-{k}"] for k in (1, 2, 3)] == [4.0, 7.0, 10.0]
    assert [nag[f"steps_to_1e-{k}"] for k in (1, 2, 3)] == [2.0, 4.0, 5.0]
    assert nag["n_reached_1e-3"] == 2
    assert hb["rate_rho"] == pytest.approx(0.5, rel=1e-9) and nag["rate_rho"] == pytest.approx(0.25, rel=1e-9)
    assert hb["rate_slope_std"] == pytest.approx(0.0, abs=1e-9)
    # seed-paired NAG/HB ratio (0.25/0.5)^t: 1/4 at t=2, 1/16 at t=4; HB rows carry none
    assert nag["nag_hb_ratio_gmean_t2"] == pytest.approx(0.25)
    assert nag["nag_hb_ratio_min_t4"] == pytest.approx(1 / 16) and nag["nag_hb_ratio_max_t4"] == pytest.approx(1 / 16)
    assert nag["n_pairs"] == 2 and math.isnan(hb["nag_hb_ratio_gmean_t2"])
    # max distance: final 0.2 and 0.4 (capped at t = 20)
    assert hb["max_dist_final_mean"] == pytest.approx(0.3) and hb["max_dist_max_max"] == pytest.approx(0.4)
    # Gram: min ratio 0.14/0.2 (seed 1) and mean of per-seed minima (0.75 + 0.7)/2
    assert hb["gram_ratio_min"] == pytest.approx(0.7) and hb["gram_ratio_min_mean"] == pytest.approx(0.725)


def test_rate_fit_recovers_exact_exponential() -> None:
    t = np.arange(0, 501)
    fit = fit_linear_rate(t, 7.0 * 0.987**t)
    assert fit.rho == pytest.approx(0.987, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.start_step == math.ceil(math.log(0.1) / math.log(0.987))  # first step with ℓ ≤ ℓ(0)/10
    assert fit.end_step == 500 and math.isnan(fit.floor_step) and fit.within_tol
    assert fit.decades == pytest.approx((500 - fit.start_step) * -math.log10(0.987))


def test_rate_fit_window_excludes_noise_floor() -> None:
    t = np.arange(0, 1001)
    rng = np.random.default_rng(3)
    rate, floor = 0.04, 1e-10
    loss = 3.0 * np.exp(-rate * t) + floor * np.exp(rng.normal(0.0, 0.4, t.size))
    fit = fit_linear_rate(t, loss)
    crossover = math.log(3.0 / floor) / rate  # where the exponential meets the floor
    assert fit.end_step < crossover - 20
    assert abs(fit.floor_step - crossover) < 60
    assert fit.rho == pytest.approx(math.exp(-rate), rel=2e-4)
    assert fit.floor_ratio == pytest.approx(floor / 3.0, rel=0.3)
    # a fit over the whole run is visibly wrong, so the floor matters
    assert abs(np.polyfit(t, np.log(loss), 1)[0] + rate) > 0.01


@pytest.mark.parametrize(("rho", "period", "phase"), [(0.98, 25, 0.0), (0.99, 9, 1.3), (0.95, 40, 2.5)])
def test_rate_fit_sees_through_damped_oscillation(rho: float, period: float, phase: float) -> None:
    # an underdamped HB mode: the residual is C·ρ^(t/2)·cos(ωt + φ)-like, the loss C·ρ^t·(1 + 0.9 cos(ωt + φ))²
    t = np.arange(0, int(12 / -math.log(rho)) + 1)  # about 5 decades of decay of the envelope
    loss = 7.0 * rho**t * (1 + 0.9 * np.cos(2 * np.pi * t / period + phase)) ** 2
    fit = fit_linear_rate(t, loss)
    assert fit.rho == pytest.approx(rho, rel=0.01)
    assert fit.slope == pytest.approx(math.log(rho), rel=0.03)  # the exponent itself, within 3 %
    assert math.isnan(fit.floor_step) and fit.end_step == t[-1]  # the swings are no floor
    assert fit.r2 > 0.95 and fit.decades > 4
    assert fit.osc_decades > 1  # the loss swings by more than a decade above its running minimum
    assert fit.raw_r2 < 0.9 and fit.raw_r2 < fit.r2 - 0.05  # a line through log ℓ itself fits much worse


def test_two_timescale_decay_gives_a_rate_between_them() -> None:
    # like a quick-preset HB run: a fast oscillating mode (ρ1 = 0.97 per step, period 30) that swings far above a
    # slow smooth mode (ρ2 = 0.995) and dies out under it after ~100 steps; 300 steps, the loss falls ~70x in all
    t = np.arange(0, 301)
    rho1, rho2 = 0.97, 0.995
    loss = 560.0 * rho1**t * (1 + 0.85 * np.cos(2 * np.pi * t / 30)) ** 2 / 3.4 + 40.0 * rho2**t
    fit = fit_linear_rate(t, loss)
    assert rho1 < fit.rho < rho2 < 1
    # the running minimum follows the slow mode through the troughs of the fast one: the rate that lasts
    assert fit.slope == pytest.approx(math.log(rho2), rel=0.15)
    assert math.isnan(fit.floor_step) and fit.end_step == 300  # a slower second time scale is no floor
    assert fit.start_step == np.nonzero(loss <= loss[0] / 10)[0][0]
    assert 0.95 < fit.r2 < 1.0
    # the same run without the oscillation: a smooth fast-then-slow decay gives a rate between the two as well
    smooth = 560.0 * rho1**t + 40.0 * rho2**t
    fit = fit_linear_rate(t, smooth)
    assert rho1 < fit.rho < rho2 and math.isnan(fit.floor_step) and fit.end_step == 300


def test_oscillation_over_a_slowly_bending_tail_is_no_floor() -> None:
    # the quick-preset failure: HB swings (period 15) over a tail from a continuum of slow modes, ~ 80/(1 + t/25).
    # The former residual-tolerance window saw a "floor" in the tail and fitted 5 steps of one swing: ρ ≈ 1.37.
    t = np.arange(0, 301)
    loss = 560.0 * 0.96**t * (1 + 0.9 * np.cos(2 * np.pi * t / 15)) ** 2 / 3.61 + 80.0 / (1 + t / 25)
    fit = fit_linear_rate(t, loss)
    assert math.isnan(fit.floor_step) and fit.end_step == 300 and fit.rho < 1
    # the average rate of the envelope over the window: between the local rates 1/(25 + t) at its two ends, and
    # close to the overall drop (chord) of the running minimum
    env = np.minimum.accumulate(np.log(loss))
    s = int(fit.start_step)
    assert 1 / 325 < -fit.slope < 1 / (25 + s)
    assert fit.slope == pytest.approx((env[300] - env[s]) / (300 - s), rel=0.15)
    assert 0.85 < fit.r2 < 0.95  # bends: a fair line, not a good one (claims: inconclusive, not 'holds')


def test_flat_or_rising_loss_does_not_decay() -> None:
    t = np.arange(0, 300)
    rising = 1.0 + 1e-3 * t  # grows without diverging: the running minimum never moves
    fit = fit_linear_rate(t, rising)
    assert fit.rho == 1.0 and fit.decades == 0.0 and not fit.reached_start
    stalled = 0.9**t + 0.5  # falls by a factor 3, then stops
    fit = fit_linear_rate(t, stalled)
    assert fit.floor_ratio == pytest.approx(0.5 / 1.5, rel=0.01) and fit.rho < 1


def test_slow_steady_second_phase_is_no_floor() -> None:
    t = np.arange(0, 601)
    loss = np.exp(-0.1 * np.minimum(t, 100) - 0.01 * np.maximum(t - 100, 0))  # 10x slower after step 100
    fit = fit_linear_rate(t, loss)
    assert math.isnan(fit.floor_step) and fit.end_step == 600
    assert -0.1 < fit.slope < -0.01


def test_rate_fit_stops_at_divergence_and_short_runs() -> None:
    t = np.arange(0, 200)
    loss = 0.9**t
    loss[150:] = np.inf
    fit = fit_linear_rate(t, loss)
    assert fit.end_step <= 149 and fit.rho == pytest.approx(0.9, rel=1e-10)
    assert math.isnan(fit_linear_rate(t[:3], loss[:3]).rho)


def test_width_exponent_of_inverse_sqrt_distance(tmp_path: Path) -> None:
    paths = [write_run(tmp_path, width=w, seed=s, loss=0.9 ** np.arange(5), max_dist=np.full(5, (s + 1) / math.sqrt(w)))
             for w in (100, 400, 1600) for s in (0, 1)]
    runs = aggregate.build_runs_table(paths)
    ex = width_exponents(runs)
    assert ex["slope"].to_numpy() == pytest.approx([-0.5, -0.5])
    assert ex["n_widths"].tolist() == [3, 3]


def test_concat_two_datasets_and_reject_duplicate(tmp_path: Path) -> None:
    outs = []
    for ds in ("b", "a"):
        p = write_run(tmp_path, dataset=ds, loss=0.9 ** np.arange(4))
        out = tmp_path / f"{ds}.parquet"
        assert cli(aggregate.main, ["--runs", str(p), "--out", str(out)]) == 0
        outs.append(str(out))
    all_runs = tmp_path / "all_runs.parquet"
    assert cli(aggregate.main, ["--concat", *outs, "--out", str(all_runs)]) == 0
    df = pd.read_parquet(all_runs)
    assert df["dataset"].tolist() == ["a"] * 4 + ["b"] * 4
    assert pq.read_schema(all_runs).equals(RUN_SCHEMA)
    assert cli(aggregate.main, ["--concat", outs[0], outs[0], "--out", str(all_runs)]) == 2


def test_missing_sidecar_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_run(tmp_path, seed=0, loss=0.9 ** np.arange(4))
    bad = write_run(tmp_path, seed=1, loss=0.9 ** np.arange(4))
    bad.with_suffix(".json").unlink()
    out = tmp_path / "runs.parquet"
    assert cli(aggregate.main, ["--runs", str(good), str(bad), "--out", str(out)]) == 2
    assert str(bad.with_suffix(".json")) in capsys.readouterr().err
    assert not out.exists()


def test_wrong_column_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_run(tmp_path, loss=0.9 ** np.arange(4), drop="max_dist")
    assert cli(aggregate.main, ["--runs", str(bad), "--out", str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "max_dist" in err


def test_sidecar_missing_key_and_bad_long_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_run(tmp_path, loss=0.9 ** np.arange(4))
    meta = json.loads(p.with_suffix(".json").read_text())
    del meta["beta"]
    p.with_suffix(".json").write_text(json.dumps(meta))
    assert cli(aggregate.main, ["--runs", str(p), "--out", str(tmp_path / "r.parquet")]) == 2
    assert "beta" in capsys.readouterr().err
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"dataset": ["x"], "step": [0]}), wrong)
    assert cli(aggregate.main, ["--concat", str(wrong), "--out", str(tmp_path / "all.parquet")]) == 2
    assert str(wrong) in capsys.readouterr().err
