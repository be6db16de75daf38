"""The Snakemake workflow as a whole: config validation, the paper's full plan, lint/format, and the tiny preset."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(stdout: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table into {rule: count}."""
    counts: dict[str, int] = {}
    table = stdout.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_config_matches_schema_defaults():
    """Every key of config.yaml is described in the schema, with a description and a default."""
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((ROOT / "config.yaml").read_text())

    def walk(node: dict, cfg: dict, where: str) -> None:
        for key, value in cfg.items():
            assert key in node["properties"], f"{where}{key} is not in the schema"
            prop = node["properties"][key]
            assert "description" in prop and "default" in prop, f"{where}{key} lacks a description or a default"
            if prop.get("type") == "object" and "properties" in prop and isinstance(value, dict):
                walk(prop, value, f"{where}{key}.")

    walk(schema, config, "")


def test_full_paper_plan_lists_480_runs():
    proc = snakemake("-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 3 * 160
    assert counts["binarize"] == 3 and counts["ntk"] == 3


@pytest.mark.parametrize(
    "text, key",
    [("train:\n  steps: 0\n", "steps"), ("grid:\n  widht: [10]\n", "widht")],
    ids=["bad-value", "unknown-key"],
)
def test_bad_config_names_the_key(tmp_path, text, key):
    """A bad value and an unknown key both stop the workflow before any job, naming the key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = snakemake("-n", "--configfile", str(bad))
    assert proc.returncode != 0
    assert key in proc.stderr + proc.stdout


def test_lint_is_clean():
    proc = snakemake("--lint")
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out


@pytest.mark.skipif(shutil.which("snakefmt") is None, reason="snakefmt not installed")
def test_snakefmt_is_clean():
    files = ["Snakefile", *map(str, sorted((ROOT / "workflow/rules").glob("*.smk")))]
    proc = subprocess.run(["snakefmt", "--check", *files], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny preset's whole workflow, run once in a scratch working directory."""
    workdir = tmp_path_factory.mktemp("tiny")
    proc = snakemake(
        "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
        "--configfile", str(ROOT / "workflow/presets/tiny.yaml"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_tiny_preset_runs_end_to_end(tiny_run):
    runs = sorted((tiny_run / "results/runs/mnist5k").glob("*/*.parquet"))
    assert len(runs) == 2 * 2 * 1 * 1 * 2  # methods × widths × η × β × seeds of tiny.yaml
    for name in ["claims.md", "claims.json", "figures/fig1_rho_nag.png", "figures/fig2_loss_mnist5k.pdf",
                 "figures/table1.md", "figures/theory_overlay_mnist5k.png", "ntk/mnist5k/summary.json"]:  # fmt: skip
        path = tiny_run / "results" / name
        assert path.is_file() and path.stat().st_size > 0, name
    logs = list((tiny_run / "results/logs/train").rglob("*.log"))
    assert logs and all("slurm_job_id=none" in p.read_text() for p in logs)


@pytest.mark.slow
def test_single_figure_rerun_does_not_retrain(tiny_run):
    runs = sorted((tiny_run / "results/runs").rglob("*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in runs}
    figure = tiny_run / "results/figures/fig2_loss_mnist5k.png"
    figure.unlink()
    proc = snakemake("fig2", "-s", str(ROOT / "Snakefile"), "-d", str(tiny_run), "--cores", "2",
                     "--configfile", str(ROOT / "workflow/presets/tiny.yaml"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert figure.is_file() and figure.stat().st_size > 0
    assert {p: p.stat().st_mtime_ns for p in runs} == before
    assert not re.search(r"^rule train:", proc.stdout + proc.stderr, re.M)


@pytest.mark.slow
def test_report_builds(tiny_run):
    report = tiny_run / "report.html"
    proc = snakemake("-s", str(ROOT / "Snakefile"), "-d", str(tiny_run),
                     "--configfile", str(ROOT / "workflow/presets/tiny.yaml"), "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report.stat().st_size > 100_000
