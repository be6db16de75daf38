"""Shared pytest setup: the package path, the repository root, and the opt-in SLURM cluster test."""

from __future__ import annotations

import os
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
