"""Tests of the claim judges (src/momentum_ntk/judges.py) and the claims stage (src/momentum_ntk/claims.py): verdicts
on constructed runs where the answer is known.

Run: PYTHONPATH=src python -m pytest tests/test_claims.py -q
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from momentum_ntk import claims, judges
from momentum_ntk.records import theory_row
from momentum_ntk.aggregate import runs_to_arrow, summarize
from momentum_ntk.judges import FAILS, HOLDS, INCONCLUSIVE
from momentum_ntk.entry import cli

Curve = Callable[[np.ndarray, int], np.ndarray]


def hb_curve(t: np.ndarray, seed: int) -> np.ndarray:
    return (1.0 + 0.1 * seed) * 0.95**t


def nag_curve(t: np.ndarray, seed: int) -> np.ndarray:
    return (1.0 + 0.1 * seed) * 0.92**t


def long_table(dataset: str = "toy", *, steps: int = 300, widths=(100, 400, 1600), seeds=(0, 1, 2),
               hb: Curve = hb_curve, nag: Curve = nag_curve, dist_exponent: float = -0.5, gram: float = 0.8,
               gram0: float = 1.0, diverged: frozenset = frozenset()) -> pd.DataFrame:
    """Runs of one (η, β) with the given loss curves, max distance ∝ m^dist_exponent and λmin(H(t))/λ0 falling
    linearly from ``gram0`` at step 0 to ``gram`` at the end."""
    t = np.arange(steps + 1)
    frames = []
    for method, curve in (("hb", hb), ("nag", nag)):
        for width in widths:
            for seed in seeds:
                loss = curve(t, seed)
                lam = np.where(t % 10 == 0, 0.2 * (gram0 - (gram0 - gram) * t / steps), np.nan)
                frames.append(pd.DataFrame({
                    "dataset": dataset, "method": method, "width": width, "eta_divisor": 10, "eta": 0.05,
                    "beta": 0.9, "seed": seed, "step": t, "loss": loss,
                    "max_dist": (1 - np.exp(-t / 30)) * (1 + 0.05 * seed) * float(width) ** dist_exponent,
                    "lambda_min_H": lam, "lambda_max_H": 5 * lam, "pattern_changed": 0 * lam, "lambda0_rows": 0.2,
                    "traj_err_h0": 0.1 * (1 - np.exp(-t / 30)), "traj_err_inf": 0.2 * (1 - np.exp(-t / 30)),
                    "diverged": (method, width, seed) in diverged,
                }))
    return runs_to_arrow(pd.concat(frames, ignore_index=True)).to_pandas()


def verdicts(runs: pd.DataFrame) -> dict[str, list[str]]:
    res = claims.evaluate(summarize(runs, [10, 100]), runs)
    return {cid: df["verdict"].tolist() for cid, df in res.items()}


def test_clean_case_every_claim_holds() -> None:
    v = verdicts(long_table())
    assert set(v["linear_convergence"]) == {HOLDS} and len(v["linear_convergence"]) == 6
    assert v["nag_below_hb"] == [HOLDS] * 3
    assert v["distance_width_scaling"] == [HOLDS, HOLDS]
    assert set(v["gram_stays_pd"]) == {HOLDS}


def test_distance_exponent_reports_its_uncertainty() -> None:
    """The exact power law m^-1/2 (seed factors cancel in the slope) gives a zero-width interval at −1/2; the fit step
    and widths are reported; the verdict does not depend on the interval."""
    res = claims.evaluate(summarize(runs := long_table(), [10, 100]), runs)["distance_width_scaling"]
    for row in res.to_dict(orient="records"):
        for key in ("slope_mean", "slope_lo", "slope_hi", "slope_ci_lo", "slope_ci_hi"):
            assert row[key] == pytest.approx(-0.5, abs=1e-9), key
        assert row["fit_step"] == 300 and "at step 300" in row["reason"] and "m = 100,400,1600" in row["reason"]
    noisy = long_table(dist_exponent=-0.6, seeds=(0, 1, 2, 3))
    rng = np.random.default_rng(0)
    noisy["max_dist"] *= np.exp(0.1 * rng.standard_normal(len(noisy)))
    res = claims.evaluate(summarize(noisy, [10, 100]), noisy)["distance_width_scaling"]
    for row in res.to_dict(orient="records"):
        assert row["slope_lo"] < row["slope_mean"] < row["slope_hi"]
        assert row["slope_lo"] <= row["slope_ci_lo"] < row["slope_ci_hi"] <= row["slope_hi"]


def test_crossing_curves_fail_nag_below_hb() -> None:
    def nag_fast_then_slow(t: np.ndarray, seed: int) -> np.ndarray:
        # below HB until about step 116, above it afterwards: a steady slow decay, no floor
        return (1.0 + 0.1 * seed) * np.exp(np.log(0.9) * np.minimum(t, 50) + np.log(0.99) * np.maximum(t - 50, 0))

    res = claims.evaluate(summarize(long_table(nag=nag_fast_then_slow), [10]), long_table(nag=nag_fast_then_slow))
    below = res["nag_below_hb"]
    assert below["verdict"].tolist() == [FAILS] * 3
    assert below["frac_mean_below"].between(0.3, 0.45).all()


def test_nag_slightly_above_hb_at_times_is_inconclusive() -> None:
    def nag_wobbly(t: np.ndarray, seed: int) -> np.ndarray:
        # NAG = HB·(1 − 0.5 sin): above HB on about 15 % of the iterations (sin < 0 there)
        return hb_curve(t, seed) * (1 - 0.5 * np.sin(2 * np.pi * t / 40 + 1.0) - 0.4)

    runs = long_table(nag=nag_wobbly)
    res = claims.evaluate(summarize(runs, [10]), runs)["nag_below_hb"]
    assert res["verdict"].tolist() == [INCONCLUSIVE] * 3
    assert res["frac_mean_below"].between(0.75, 0.95).all()


def test_numerical_floor_is_left_out_of_the_comparison() -> None:
    def noisy_floor(rate: float, salt: int) -> Curve:
        def curve(t: np.ndarray, seed: int) -> np.ndarray:
            noise = np.exp(np.random.default_rng([seed, salt]).normal(0.0, 0.3, t.size))
            return (1.0 + 0.1 * seed) * rate**t + 1e-9 * noise
        return curve

    # NAG reaches the floor near step 250, HB near step 400; after that the two are noise for 200 iterations
    runs = long_table(steps=600, hb=noisy_floor(0.95, 1), nag=noisy_floor(0.92, 2))
    below = claims.evaluate(summarize(runs, [10]), runs)["nag_below_hb"]
    assert below["verdict"].tolist() == [HOLDS] * 3
    assert below["floor_cutoff"].between(380, 430).all()
    assert (below["n_compared"] < 430).all()


def test_too_short_runs_are_inconclusive() -> None:
    v = verdicts(long_table(steps=30))
    assert v["nag_below_hb"] == [INCONCLUSIVE] * 3  # 30 compared iterations < min_compared_steps
    assert set(v["linear_convergence"]) == {INCONCLUSIVE}  # HB falls 0.7 - 1 decades, < min_decades


def test_interval_verdict() -> None:
    assert judges.interval_verdict(-0.6, -0.4, -0.35, below=True) == HOLDS
    assert judges.interval_verdict(-0.3, -0.1, -0.35, below=True) == FAILS
    assert judges.interval_verdict(-0.41, -0.30, -0.35, below=True) == INCONCLUSIVE  # straddles the bar
    assert judges.interval_verdict(0.1, 0.4, 0.0, below=False) == HOLDS
    assert judges.interval_verdict(float("nan"), -0.4, -0.35, below=True) == INCONCLUSIVE


def test_distance_interval_straddling_the_bar_is_inconclusive() -> None:
    """Exponents near the bar −1/2 + slope_tol = −0.35 with seed noise: the reported interval straddles the bar, so
    the verdict is inconclusive, whichever side of the bar the seed mean falls on."""
    runs = long_table(dist_exponent=-0.38, seeds=(0, 1, 2, 3))
    rng = np.random.default_rng(3)
    per_run = {k: np.exp(0.15 * rng.standard_normal()) for k in runs.groupby(["method", "width", "seed"]).groups}
    runs["max_dist"] *= [per_run[k] for k in zip(runs["method"], runs["width"], runs["seed"])]
    res = claims.evaluate(summarize(runs, [10]), runs)["distance_width_scaling"]
    for row in res.to_dict(orient="records"):
        assert row["slope_lo"] < -0.35 < row["slope_hi"], row
        assert row["verdict"] == INCONCLUSIVE and "straddles" in row["reason"]


def test_gram_premise_failure_is_told_apart_from_drift() -> None:
    drift = claims.evaluate(summarize(runs := long_table(gram=0.4), [10]), runs)["gram_stays_pd"]
    assert set(drift["verdict"]) == {FAILS} and drift["reason"].str.startswith("drift").all()
    assert (drift["h0_ratio_min"] == 1.0).all() and (drift["n_premise_failed"] == 0).all()
    assert (drift["min_step"] == 300).all() and np.allclose(drift["gram_ratio_min"], 0.4)
    premise = claims.evaluate(summarize(runs := long_table(gram=0.4, gram0=0.6), [10]), runs)["gram_stays_pd"]
    assert set(premise["verdict"]) == {FAILS}
    assert premise["reason"].str.startswith("premise fails at initialisation").all()
    assert np.allclose(premise["h0_ratio_min"], 0.6) and (premise["n_premise_failed"] == 3).all()


def test_width_gram_and_divergence_failures() -> None:
    v = verdicts(long_table(dist_exponent=0.0, gram=0.4, diverged=frozenset({("hb", 400, 1)})))
    assert v["distance_width_scaling"] == [FAILS, FAILS]
    assert set(v["gram_stays_pd"]) == {FAILS}
    lin = claims.evaluate(summarize(long_table(diverged=frozenset({("hb", 400, 1)})), [10]),
                          long_table(diverged=frozenset({("hb", 400, 1)})))["linear_convergence"]
    assert lin.set_index(["method", "width"]).loc[("hb", 400), "verdict"] == FAILS
    assert (lin["verdict"] == HOLDS).sum() == 5
    assert verdicts(long_table(widths=(100, 400)))["distance_width_scaling"] == [INCONCLUSIVE] * 2


def test_loss_plateau_is_inconclusive_not_linear() -> None:
    def plateau(t: np.ndarray, seed: int) -> np.ndarray:
        return (1.0 + 0.1 * seed) * (0.9**t + 1e-3)

    lin = claims.evaluate(summarize(long_table(nag=plateau), [10]), long_table(nag=plateau))["linear_convergence"]
    nag = lin[lin["method"] == "nag"]
    assert nag["verdict"].tolist() == [INCONCLUSIVE] * 3
    assert nag["reason"].str.contains("levels off").all()
    # HB keeps falling below NAG's plateau: NAG is not below HB, so the plateau must not be cut off the comparison
    below = claims.evaluate(summarize(long_table(nag=plateau), [10]), long_table(nag=plateau))["nag_below_hb"]
    assert below["verdict"].tolist() == [FAILS] * 3


def test_oscillating_momentum_loss_still_converges_linearly() -> None:
    def hb_swinging(t: np.ndarray, seed: int) -> np.ndarray:
        # an underdamped HB mode: the loss swings by ~2.5 decades around a 0.95^t decay
        return (1.0 + 0.1 * seed) * 0.95**t * (1 + 0.9 * np.cos(2 * np.pi * t / 25 + seed)) ** 2

    runs = long_table(hb=hb_swinging)
    lin = claims.evaluate(summarize(runs, [10]), runs)["linear_convergence"]
    hb = lin[lin["method"] == "hb"]
    assert hb["verdict"].tolist() == [HOLDS] * 3
    assert np.allclose(hb["rho"], 0.95, rtol=0.005) and (hb["osc_decades"] > 2).all()


def test_loss_that_does_not_decay_fails_linear_convergence() -> None:
    def creeping_up(t: np.ndarray, seed: int) -> np.ndarray:
        return (1.0 + 0.1 * seed) * (1.0 + 1e-3 * t)  # rises slowly, never flagged as diverged

    def stalling(t: np.ndarray, seed: int) -> np.ndarray:
        return (1.0 + 0.1 * seed) * (0.9**t + 0.5)  # loses a factor 3, then stops at ℓ(0)/3

    runs = long_table(hb=creeping_up, nag=stalling)
    lin = claims.evaluate(summarize(runs, [10]), runs)["linear_convergence"].set_index("method")
    assert lin["verdict"].tolist() == [FAILS] * 6
    assert lin.loc["hb", "reason"].str.contains("does not decay").all()
    assert lin.loc["nag", "reason"].str.contains("stalls").all()


def test_cli_writes_markdown_and_json_for_two_datasets(tmp_path: Path) -> None:
    args = []
    for ds, nag in (("a", nag_curve), ("b", lambda t, s: hb_curve(t, s) * np.where(t < 150, 0.5, 2.0))):
        runs = long_table(ds, nag=nag)
        rp, sp = tmp_path / f"{ds}_runs.parquet", tmp_path / f"{ds}_summary.parquet"
        pq.write_table(runs_to_arrow(runs), rp)
        pq.write_table(pa.Table.from_pandas(summarize(runs, [10]), preserve_index=False), sp)
        args.append((rp, sp))
    ntk = tmp_path / "a_ntk.json"
    ntk.write_text(json.dumps({"dataset": "a", "lambda0": 0.1, "eta": {"10": 0.05}}))
    md, js = tmp_path / "claims.md", tmp_path / "claims.json"
    argv = ["--summary", *(str(s) for _, s in args), "--runs", *(str(r) for r, _ in args), "--ntk-summary", str(ntk),
            "--out-md", str(md), "--out-json", str(js)]
    assert cli(claims.main, argv) == 0
    report = json.loads(js.read_text())
    by_id = {c["id"]: c for c in report["claims"]}
    assert by_id["nag_below_hb"]["by_dataset"]["a"]["verdict"] == HOLDS
    assert by_id["nag_below_hb"]["by_dataset"]["b"] == {"verdict": FAILS, "counts": {HOLDS: 0, FAILS: 3,
                                                                                      INCONCLUSIVE: 0}}
    lin_a = [s for s in by_id["linear_convergence"]["settings"] if s["dataset"] == "a"]
    assert all(s["theorem_exponent"] > 0 for s in lin_a)
    assert report["thresholds"]["frac_hold"] == judges.THRESHOLDS["frac_hold"]
    text = md.read_text()
    assert "| nag_below_hb" in text and "**fails** (0/3/0)" in text and "premise_ratio" in text


def test_missing_dataset_in_runs_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = long_table("a", steps=40)
    rp, sp = tmp_path / "runs.parquet", tmp_path / "summary.parquet"
    pq.write_table(runs_to_arrow(runs), rp)
    pq.write_table(pa.Table.from_pandas(summarize(runs.assign(dataset="z"), [10]), preserve_index=False), sp)
    argv = ["--summary", str(sp), "--runs", str(rp), "--out-md", str(tmp_path / "c.md"), "--out-json",
            str(tmp_path / "c.json")]
    assert cli(claims.main, argv) == 2
    assert "'z'" in capsys.readouterr().err
    bad = tmp_path / "bad_summary.parquet"
    pq.write_table(pa.table({"dataset": ["a"]}), bad)
    assert cli(claims.main, ["--summary", str(bad), *argv[2:]]) == 2
    assert str(bad) in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# Claims 5-6 from theory records (theory predict --run)


def theory_record(method: str = "nag", width: int = 100, seed: int = 0, *, dataset: str = "toy", steps: int = 300,
                  frac: float = 1.0, first: int | None = None, traj: float = 0.05, horizon: int = 150,
                  rate_theorem: float = 0.03) -> dict:
    """The fields of a `theory predict --run` record that claims 5-6 read. The bound's prefactor is 600·ℓ(0) and its
    exponent ``rate_theorem`` per step (long_table's losses decay at −ln 0.95 = 0.051 (HB) and −ln 0.92 = 0.083
    (NAG) per step); the relative loss error is 3× the trajectory error ``traj``."""
    return {
        "dataset": dataset, "method": method, "width": width, "eta_divisor": 10, "beta": 0.9, "seed": seed,
        "eta": 0.05, "lambda0": 0.2, "steps": steps,
        "bound_check": {"steps_checked": steps + 1, "fraction_holds": frac, "first_violation_step": first},
        "bound_margin": {"max_ratio": 0.5 if first is None else 3.0, "step_of_max": 0,
                         "measured_ratio_at_first_violation": None if first is None else 0.01},
        "horizon": {"step": horizon, "fraction": 0.5, "floor_ratio": 1e-4},
        "max_relerr_lin_h0_horizon": 3 * traj, "max_relerr_lin_inf_horizon": 6 * traj,
        "max_traj_err_lin_h0_horizon": traj, "max_traj_err_lin_inf_horizon": 2 * traj,
        "traj_err_lin_h0_at": {"100": traj / 2, "300": None},
        "bound_prefactor": 600.0 * (1.0 + 0.1 * seed), "rate_theorem": rate_theorem, "loss0": 1.0 + 0.1 * seed,
    }


def theory_verdicts(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    theory = pd.DataFrame([theory_row(r) for r in records])
    return judges.claim_bound(theory, judges.run_fits(long_table())), judges.claim_linearization(theory)


def test_theorem_bound_holds_fails_inconclusive() -> None:
    bound, _ = theory_verdicts([theory_record(seed=s) for s in (0, 1)])
    assert bound["verdict"].tolist() == [HOLDS] and bound["max_measured_over_bound"].iloc[0] == 0.5
    bound, _ = theory_verdicts([theory_record(seed=0), theory_record(seed=1, frac=0.8, first=12)])
    assert bound["verdict"].tolist() == [FAILS]
    row = bound.iloc[0]
    assert row["n_seeds_violated"] == 1 and row["first_violation_step"] == 12
    assert "20.0% of the steps" in row["reason"] and "first at step 12" in row["reason"]
    assert row["prefactor_over_loss0"] == pytest.approx(600.0)
    bound, _ = theory_verdicts([theory_record(steps=5)])
    assert bound["verdict"].tolist() == [INCONCLUSIVE]
    # the theorem's β for α = λ0/2: (1 − √(λ0η/2))/(1 + √(λ0η/2)) with λ0η = 0.01
    assert row["beta_theorem"] == pytest.approx((1 - 0.005**0.5) / (1 + 0.005**0.5))  # α = λ0/2, λ0η/2 = 0.005
    gd, _ = theory_verdicts([theory_record(method="gd")])
    assert gd.empty  # no theorem for GD


def test_rate_slower_than_the_theorem_fails_before_any_crossing() -> None:
    """Below the bound at every step of the run, but decaying more slowly than the theorem's exponent: the bound will
    be crossed later. fails, with the fitted envelope's crossing step, extrapolated past the run's 300 steps."""
    bound, _ = theory_verdicts([theory_record(seed=s, rate_theorem=0.1) for s in (0, 1)])
    row = bound.iloc[0]
    assert row["verdict"] == FAILS and row["n_seeds_violated"] == 0 and row["n_seeds_slower"] == 2
    assert row["rate_ratio_min"] == pytest.approx(-np.log(0.92) / 0.1, rel=1e-6)
    # the envelope log ℓ = log(1 + 0.1 s) + k log 0.92 meets log(600 (1 + 0.1 s)) − 0.1 k at k = log 600 / (0.1 + log 0.92)
    assert row["crossing_step"] == pytest.approx(np.log(600) / (0.1 + np.log(0.92)), rel=1e-6)
    assert row["crossing_step"] > 300 and "crosses the bound at step ≈ 385" in row["reason"]
    assert "600·ℓ(0)" in row["reason"]
    bound, _ = theory_verdicts([theory_record(seed=s, rate_theorem=0.05) for s in (0, 1)])
    assert bound["verdict"].tolist() == [HOLDS] and bound["rate_ratio_min"].iloc[0] > 1
    assert "600·ℓ(0)" in bound["reason"].iloc[0]


def test_linearization_holds_fails_inconclusive() -> None:
    _, lin = theory_verdicts([theory_record(seed=s, traj=0.04 + 0.01 * s) for s in (0, 1)])
    assert lin["verdict"].tolist() == [HOLDS] and lin["traj_h0_max"].iloc[0] == pytest.approx(0.05)
    assert lin["relerr_h0_max"].iloc[0] == pytest.approx(0.15)  # descriptive only: above 10 %, still holds
    assert lin["traj_h0_k100_max"].iloc[0] == pytest.approx(0.025) and np.isnan(lin["traj_h0_k300_max"].iloc[0])
    _, lin = theory_verdicts([theory_record(seed=s, traj=0.3 + 0.1 * s) for s in (0, 1)])
    assert lin["verdict"].tolist() == [FAILS] and "30.0% even in the best seed" in lin["reason"].iloc[0]
    _, lin = theory_verdicts([theory_record(seed=0, traj=0.05), theory_record(seed=1, traj=0.3)])
    assert lin["verdict"].tolist() == [INCONCLUSIVE] and "1/2 seeds" in lin["reason"].iloc[0]
    _, lin = theory_verdicts([theory_record(horizon=3, traj=0.01)])
    assert lin["verdict"].tolist() == [INCONCLUSIVE]
    # one seed with too short a horizon is left out, the other decides
    _, lin = theory_verdicts([theory_record(seed=0, horizon=3, traj=0.9), theory_record(seed=1, traj=0.02)])
    assert lin["verdict"].tolist() == [HOLDS] and "1 seed(s) left out" in lin["reason"].iloc[0]


def _write_inputs(tmp_path: Path, records: list[dict]) -> list[str]:
    runs = long_table("toy", steps=40)
    rp, sp = tmp_path / "runs.parquet", tmp_path / "summary.parquet"
    pq.write_table(runs_to_arrow(runs), rp)
    pq.write_table(pa.Table.from_pandas(summarize(runs, [10]), preserve_index=False), sp)
    paths = []
    for i, rec in enumerate(records):
        path = tmp_path / f"rec{i}.json"
        path.write_text(json.dumps(rec))
        paths.append(str(path))
    return ["--summary", str(sp), "--runs", str(rp), "--out-md", str(tmp_path / "c.md"),
            "--out-json", str(tmp_path / "c.json"), "--theory", *paths]


def test_cli_with_theory_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [theory_record(m, w, s, frac=0.9 if (m, w) == ("hb", 400) else 1.0,
                             first=7 if (m, w) == ("hb", 400) else None, traj=0.5 / w**0.5)
               for m in ("hb", "nag") for w in (100, 400, 1600) for s in (0, 1)]
    argv = _write_inputs(tmp_path, records)
    assert cli(claims.main, argv) == 0
    by_id = {c["id"]: c for c in json.loads((tmp_path / "c.json").read_text())["claims"]}
    assert by_id["theorem_bound_holds"]["by_dataset"]["toy"] == {"verdict": FAILS, "counts": {HOLDS: 5, FAILS: 1,
                                                                                               INCONCLUSIVE: 0}}
    lin = by_id["linearization_accurate"]["by_dataset"]["toy"]  # 0.5/√m: 5 % at m = 100, 2.5 % at 400, 1.25 %
    assert lin == {"verdict": HOLDS, "counts": {HOLDS: 6, FAILS: 0, INCONCLUSIVE: 0}}
    assert json.loads((tmp_path / "c.json").read_text())["thresholds"]["traj_err_max"] == 0.1
    text = (tmp_path / "c.md").read_text()
    assert "## theorem_bound_holds" in text and "**fails** (5/1/0)" in text and "beta_theorem" in text
    # without --theory the two claims are absent
    assert cli(claims.main, argv[: argv.index("--theory")]) == 0
    assert "theorem_bound_holds" not in (tmp_path / "c.md").read_text()


def test_bad_theory_record_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_run = theory_record()
    del no_run["horizon"]
    for bad in (no_run, theory_record(dataset="elsewhere")):
        argv = _write_inputs(tmp_path, [theory_record(), bad])
        assert cli(claims.main, argv) == 2
        assert argv[-1] in capsys.readouterr().err
    argv = _write_inputs(tmp_path, [theory_record()])
    Path(argv[-1]).write_text("{not json")
    assert cli(claims.main, argv) == 2
    assert argv[-1] in capsys.readouterr().err
    Path(argv[-1]).write_text(json.dumps(theory_record()))
    assert cli(claims.main, [*argv, str(tmp_path / "absent.json")]) == 2
    assert "absent.json" in capsys.readouterr().err


def test_registry_is_the_one_definition_of_each_claim():
    """Every claim is one record: unique id, its own thresholds (each used by its judging function and by no other
    claim), table columns, and a 'how' text that the module docstring carries."""
    import inspect

    ids = [c.id for c in judges.REGISTRY]
    assert len(ids) == len(set(ids)) == 6
    names = [k for c in judges.REGISTRY for k in c.thresholds]
    assert len(names) == len(set(names)) and list(judges.THRESHOLDS) == names
    for c in judges.REGISTRY:
        called = [getattr(judges, n) for n in c.judge.__code__.co_names if n.startswith("claim_")]
        assert len(called) == 1, c.id
        body = inspect.getsource(called[0])
        for name in c.thresholds:
            assert f'th["{name}"]' in body, (c.id, name)
        assert {"dataset", "verdict", "reason"} <= set(c.columns)
        assert f"``{c.id}``" in judges.__doc__ and c.how.split(".")[0] in " ".join(judges.__doc__.split())
        assert f"``{c.id}``" in claims.__doc__  # claims.md points readers to the stage's docstring


@pytest.mark.slow
def test_claims_md_and_json_come_from_the_registry(tiny_run):
    md = (tiny_run / "results/claims.md").read_text()
    report = json.loads((tiny_run / "results/claims.json").read_text())
    assert [c["id"] for c in report["claims"]] == [c.id for c in judges.REGISTRY]
    for c in judges.REGISTRY:
        assert f"## {c.id}: {c.statement} ({c.paper})" in md and c.how in md
        rec = next(r for r in report["claims"] if r["id"] == c.id)
        assert (rec["statement"], rec["paper"]) == (c.statement, c.paper)
    assert report["thresholds"] == judges.THRESHOLDS
