"""Shared pytest setup: the package path, the repository root, and the opt-in SLURM cluster test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slurm",
        action="store_true",
        default=False,
        help="start a real one-node SLURM cluster on localhost and run the tiny preset through profiles/slurm",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slurm") or os.environ.get("MOMENTUM_NTK_SLURM") == "1":
        return
    skip = pytest.mark.skip(reason="SLURM cluster test is opt-in: pass --run-slurm (as .ci/run does)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset's whole workflow, run once per test session in a scratch working directory (shared: tests that
    change its files work on a copy)."""
    workdir = tmp_path_factory.mktemp("tiny")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
         "--configfile", str(ROOT / "workflow/presets/tiny.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir
