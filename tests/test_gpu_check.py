"""benchmarks/gpu_check.py, the prepared GPU check: its CPU dry run end to end, and its time limits."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.mark.parametrize("own_session", [False, True])
def test_run_bounded_kills_what_the_command_started(tmp_path, own_session):
    """A command past its limit is killed with its grandchildren (also one in a session of its own), which would
    otherwise outlive it and keep the device busy."""
    gc = load_gpu_check()
    pidfile = tmp_path / "grandchild.pid"
    start = (
        "import subprocess, sys; "
        f"p = subprocess.Popen(['sleep', '60'], start_new_session={own_session}); "
        "open(sys.argv[1], 'w').write(str(p.pid)); p.wait()"
    )
    rc, wall = gc.run_bounded([sys.executable, "-c", start, str(pidfile)], 2.0, tmp_path / "log")
    assert rc is None and wall < 15
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not gone_or_zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone_or_zombie(pid), f"grandchild {pid} survived the time limit"


def test_exhausted_budget_is_recorded_and_fails_the_dry_run(tmp_path):
    """With no time left every part is a timeout, the JSON is still written, and a dry run exits 1."""
    out = tmp_path / "gc.json"
    proc = run_script("--dry-run", "--budget-s", "0", "--out", str(out), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True and "env_error" in doc
    gc = load_gpu_check()
    assert set(doc["parts"]) == set(gc.MEASURED)
    for name, part in doc["parts"].items():
        assert part["status"] == ("skipped" if name == "tiny_preset" else "timeout"), (name, part)


@pytest.mark.slow
def test_dry_run_measures_every_part(tmp_path):
    out = tmp_path / "gc.json"
    proc = run_script("--dry-run", "--budget-s", "150", "--out", str(out), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True and doc["device"] == "cpu" and doc["torch"]
    parts = doc["parts"]
    for name, part in parts.items():
        assert part["status"] == ("skipped" if name == "tiny_preset" else "ok"), (name, part)
    assert len(proc.stdout.strip().splitlines()) == len(parts) + 3  # header, env, one line per part, footer

    acc = parts["accuracy"]["variants"]
    assert acc["float64"]["loss_rel_diff"] < 1e-10
    assert 0 < acc["float32"]["loss_rel_diff"] < 1e-3  # float32 really differs: the comparison is not vacuous
    assert acc["float32"]["max_dist_rel_diff"] < 1e-3 and acc["float32"]["steps_done_equal"]
    assert parts["accuracy"]["final_loss"]["nag"] < parts["accuracy"]["initial_loss"]

    assert parts["pack_identity"]["identical"] is True
    assert len(parts["pack_identity"]["runs"]) == 4

    widths = parts["step_roofline"]["widths"]
    assert [w["m"] for w in widths] == [32, 64]
    for w in widths:
        for key in ("fraction", "step_ms", "roofline_ms", "step_tflops"):
            assert w[key] is not None and math.isfinite(w[key]) and w[key] > 0, (key, w)

    packs = parts["pack_speedup"]["packs"]
    assert [p["k"] for p in packs] == [1, 4, 8] and packs[0]["speedup"] == 1.0
    assert all(p["speedup"] is not None and p["speedup"] > 0 for p in packs)

    eig = parts["ntk_eigh"]
    assert eig["gram_s"] > 0 and eig["eigh_s"] > 0 and eig["peak_rss_mb"] > 0
    assert eig["trace_rel_err"] < 1e-10 and eig["eigpair_residual"] < 1e-8

    row = parts["rowspace"]
    assert row["accuracy"]["float64"]["loss_rel_diff"] < 1e-10 and row["accuracy"]["float64"]["engine"] == "rowspace"
    assert 0 < row["accuracy"]["float32"]["loss_rel_diff"] < 1e-3 and row["accuracy"]["float32"]["steps_done_equal"]
    assert row["pack_identical"] is True
    assert [(r["n"], r["m"]) for r in row["steps"]] == [(32, 64), (32, 256)]
    for r in row["steps"]:
        for key in ("direct_ms", "rowspace_ms", "row_gemm_ms", "row_fraction", "speedup"):
            assert r[key] is not None and math.isfinite(r[key]) and r[key] > 0, (key, r)

    job = parts["job_fixed_cost"]
    assert job["train_job_s"] > 0 and job["import_torch_s"] > 0 and job["cuda_context_s"] is None
