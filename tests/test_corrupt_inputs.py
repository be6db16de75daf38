"""Every stage CLI fails cleanly on a corrupt, truncated or missing input.

The tiny preset runs once per session (``tiny_run`` in conftest.py); each case copies the inputs of one stage into its
own folder, truncates one of them and runs ``python -m momentum_ntk.<stage>`` with the arguments its rule uses. Expected: exit status 2 (a UserError), the file's name and the fix (``snakemake --force <file>``) on
stderr, no traceback, no output written. Last, ``snakemake --force <run file>`` on a copy of the results rebuilds a
truncated run file (a plain ``snakemake <run file>`` has nothing to do: the file exists and is newer than its inputs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "workflow" / "presets" / "tiny.yaml"

MANIFEST = "resources/raw/mnist5k/manifest.json"
DATA = "results/data/mnist5k.npz"
SPECTRUM = "results/ntk/mnist5k/spectrum.parquet"
NTK_SUMMARY = "results/ntk/mnist5k/summary.json"
EIGVECS = "results/ntk/mnist5k/eigvecs.npy"
RUN = "results/runs/mnist5k/{method}/m64_c10_b0.9_s0.parquet"
MODES = "results/theory/mnist5k/modes_m64_s0.parquet"
PRED = "results/theory/mnist5k/{method}/m64_c10_b0.9_s0.parquet"
LONG = "results/aggregate/mnist5k/runs.parquet"
SUMMARY = "results/aggregate/mnist5k/summary.parquet"
PACK_RUNS = [RUN.format(method=m) for m in ("hb", "nag")]
PACK_PREDS = [PRED.format(method=m) for m in ("hb", "nag")]


def snakemake(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Snakemake on the tiny preset in ``workdir`` (targets and flags first: --configfile takes several values)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
         "--configfile", str(TINY)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture
def tiny(tiny_run) -> Path:
    """The working directory of the session's tiny-preset run (tests/conftest.py); tests copy from it, never change
    it."""
    return tiny_run


def _rel(paths: list[Path], workdir: Path) -> list[str]:
    return [str(p.relative_to(workdir)) for p in sorted(paths)]


def _all_runs(w: Path) -> list[str]:
    return _rel(list((w / "results/runs/mnist5k").glob("*/*.parquet")), w)


def _all_preds(w: Path) -> list[str]:
    return _rel(list((w / "results/theory/mnist5k").glob("*/*.parquet")), w)


def _all_records(w: Path) -> list[str]:
    return _rel(list((w / "results/theory/mnist5k").glob("*/*.json")), w)


# Each stage's command line as its rule writes it (workflow/rules/*.smk, tiny preset values); outputs go to out/.
def binarize_argv(w: Path) -> list[str]:
    return ["momentum_ntk.binarize", "--dataset", "mnist5k", "--manifest", MANIFEST, "--classes", "0", "1",
            "--max-per-class", "40", "--subsample-seed", "0", "--duplicates", "drop", "--parallel-tol", "1e-09",
            "--out", "out/data.npz", "--record", "out/data.json"]  # fmt: skip


def ntk_argv(w: Path) -> list[str]:
    return ["momentum_ntk.ntk", "--data", DATA, "--dataset", "mnist5k", "--eta-divisors", "10", "--widths", "64", "256",
            "--gap-max-n", "80", "--gap-seed", "0", "--eigvec-dtype", "float32", "--gram-max-n", "2000",
            "--gram-seed", "0", "--device", "cpu", "--gpus-held", "0", "--threads", "1",
            "--spectrum", "out/spectrum.parquet", "--summary", "out/summary.json", "--eigvecs", "out/eigvecs.npy",
            "--gap", "out/finite_width.parquet", "--plot", "out/spectrum.png"]  # fmt: skip


def train_argv(w: Path) -> list[str]:
    return ["momentum_ntk.train", "--data", DATA, "--ntk-summary", NTK_SUMMARY, "--dataset", "mnist5k",
            "--width", "64", "--seed", "0", "--method", "hb", "nag", "--eta-divisor", "10", "10", "--beta", "0.9",
            "0.9", "--steps", "40", "--gram-every", "10", "--gram-max-n", "2000", "--gram-seed", "0",
            "--dtype", "float64", "--device", "cpu", "--gpus-held", "0", "--threads", "1",
            "--divergence-factor", "1000000.0", "--out", "out/hb.parquet", "out/nag.parquet",
            "--meta", "out/hb.json", "out/nag.json"]  # fmt: skip


def modes_argv(w: Path) -> list[str]:
    return ["momentum_ntk.theory", "modes", "--data", DATA, "--spectrum", SPECTRUM, "--eigvecs", EIGVECS,
            "--width", "64", "--seed", "0", "--device", "cpu", "--gpus-held", "0", "--threads", "1",
            "--out", "out/modes.parquet"]  # fmt: skip


def predict_argv(w: Path) -> list[str]:
    return ["momentum_ntk.theory", "predict", "--modes", MODES, "--ntk-summary", NTK_SUMMARY,
            "--method", "hb", "nag", "--eta-divisor", "10", "10", "--beta", "0.9", "0.9", "--steps", "40",
            "--run", *PACK_RUNS, "--horizon-fraction", "0.5", "--out", "out/hb.parquet", "out/nag.parquet"]  # fmt: skip


def aggregate_argv(w: Path) -> list[str]:
    return ["momentum_ntk.aggregate", "--runs", *_all_runs(w), "--out", "out/runs.parquet",
            "--summary", "out/summary.parquet", "--summary-csv", "out/summary.csv",
            "--report-steps", "10", "20", "40"]  # fmt: skip


def concat_argv(w: Path) -> list[str]:
    return ["momentum_ntk.aggregate", "--concat", LONG, "--out", "out/all_runs.parquet"]


def fig2_argv(w: Path) -> list[str]:
    return ["momentum_ntk.figures", "fig2", "--runs", LONG, "--dataset", "mnist5k",
            "--pdf", "out/fig2.pdf", "--png", "out/fig2.png"]  # fmt: skip


def table1_argv(w: Path) -> list[str]:
    return ["momentum_ntk.figures", "table1", "--summary", SUMMARY, "--ntk-summary", NTK_SUMMARY,
            "--out-md", "out/table1.md", "--out-csv", "out/table1.csv"]  # fmt: skip


def rates_argv(w: Path) -> list[str]:
    return ["momentum_ntk.theory_report", "table", "--pred", *_all_preds(w), "--horizon-fraction", "0.5",
            "--out-md", "out/rates.md", "--out-csv", "out/rates.csv"]  # fmt: skip


def claims_argv(w: Path) -> list[str]:
    return ["momentum_ntk.claims", "--summary", SUMMARY, "--runs", LONG, "--ntk-summary", NTK_SUMMARY,
            "--theory", *_all_records(w), "--theory-pred", *_all_preds(w), "--horizon-fraction", "0.5",
            "--out-md", "out/claims.md", "--out-json", "out/claims.json"]  # fmt: skip


def sidecar(path: str) -> str:
    return str(Path(path).with_suffix(".json"))


# (stage command line, the input to corrupt, how): one case per distinct input kind of each stage.
CASES = {
    "binarize-manifest": (binarize_argv, MANIFEST, "half"),
    "ntk-data-npz": (ntk_argv, DATA, "half"),
    "train-data-npz": (train_argv, DATA, "half"),
    "train-ntk-summary-empty": (train_argv, NTK_SUMMARY, "empty"),
    "modes-data-npz": (modes_argv, DATA, "half"),
    "modes-spectrum": (modes_argv, SPECTRUM, "half"),
    "modes-eigvecs-npy": (modes_argv, EIGVECS, "half"),
    "predict-modes": (predict_argv, MODES, "half"),
    "predict-ntk-summary": (predict_argv, NTK_SUMMARY, "half"),
    "predict-run": (predict_argv, PACK_RUNS[1], "half"),
    "predict-run-sidecar": (predict_argv, sidecar(PACK_RUNS[0]), "half"),
    "aggregate-run": (aggregate_argv, PACK_RUNS[0], "half"),
    "aggregate-run-sidecar": (aggregate_argv, sidecar(PACK_RUNS[1]), "half"),
    "aggregate-concat": (concat_argv, LONG, "half"),
    "fig2-runs-empty": (fig2_argv, LONG, "empty"),
    "table1-summary": (table1_argv, SUMMARY, "half"),
    "table1-ntk-summary": (table1_argv, NTK_SUMMARY, "half"),
    "rates-pred": (rates_argv, PACK_PREDS[0], "half"),
    "rates-record": (rates_argv, sidecar(PACK_PREDS[1]), "half"),
    "claims-summary": (claims_argv, SUMMARY, "half"),
    "claims-theory-record": (claims_argv, sidecar(PACK_PREDS[0]), "half"),
    "claims-theory-pred": (claims_argv, PACK_PREDS[1], "half"),
}


def _stage_case(tiny: Path, case: Path, argv: list[str]) -> None:
    """Copy every input file named in ``argv`` (and the sidecar .json of each Parquet) from ``tiny`` into ``case``."""
    for arg in argv:
        for rel in (arg, sidecar(arg) if arg.endswith(".parquet") else None):
            if rel and (tiny / rel).is_file():
                (case / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tiny / rel, case / rel)


def _run_stage(case: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", *argv], cwd=case, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _assert_clean_failure(proc: subprocess.CompletedProcess[str], name: str, fix: str, case: Path) -> None:
    err = proc.stderr
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1, err
    assert name in message[0] and fix in err, err
    out = case / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], "a failing stage wrote output"


@pytest.mark.parametrize("name", list(CASES))
def test_stage_refuses_a_truncated_input(tiny, tmp_path, name):
    build, target, how = CASES[name]
    argv = build(tiny)
    _stage_case(tiny, tmp_path, argv)
    path = tmp_path / target
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "half" else b"")
    proc = _run_stage(tmp_path, argv)
    _assert_clean_failure(proc, target, f"snakemake --force {target}", tmp_path)


def test_stage_refuses_a_missing_input(tiny, tmp_path):
    argv = predict_argv(tiny)
    _stage_case(tiny, tmp_path, argv)
    (tmp_path / PACK_RUNS[1]).unlink()
    proc = _run_stage(tmp_path, argv)
    _assert_clean_failure(proc, PACK_RUNS[1], f"snakemake --force {PACK_RUNS[1]}", tmp_path)


def test_binarize_refuses_a_truncated_raw_file(tiny, tmp_path):
    """A raw file truncated after the fetch no longer has the manifest's SHA-256: binarize names it and says how to
    fetch again (here the manifest points at a copy, never at the installed package's file)."""
    manifest = json.loads((tiny / MANIFEST).read_text())
    raw = Path(manifest["files"]["csv"]["path"])
    copy = tmp_path / "raw" / raw.name
    copy.parent.mkdir()
    data = raw.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["files"]["csv"]["sha256"]
    copy.write_bytes(data[: len(data) // 2])
    manifest["files"]["csv"]["path"] = str(copy)
    (tmp_path / MANIFEST).parent.mkdir(parents=True)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    proc = _run_stage(tmp_path, binarize_argv(tiny))
    _assert_clean_failure(proc, str(copy), f"snakemake --force {MANIFEST}", tmp_path)


@pytest.mark.slow
def test_snakemake_force_rebuilds_a_truncated_run_file(tiny, tmp_path):
    """The fix the messages give works: `snakemake --force <run file>` retrains the run's pack; without --force
    Snakemake sees nothing to do."""
    import pyarrow.parquet as pq

    work = tmp_path / "work"
    shutil.copytree(tiny, work, symlinks=True)
    target = PACK_RUNS[0]
    before = pq.read_table(work / target)
    data = (work / target).read_bytes()
    (work / target).write_bytes(data[: len(data) // 2])
    proc = snakemake("-n", target, workdir=work)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    proc = snakemake("--force", target, workdir=work)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert pq.read_table(work / target).equals(before)
