"""The workflow on a real one-node SLURM cluster, through the shipped profile (profiles/slurm).

Opt-in (marker `slurm`): `pytest --run-slurm` or MOMENTUM_NTK_SLURM=1. Needs root on Debian 12; installs the
SLURM/munge/MariaDB packages when missing. tests/slurm/cluster.sh starts slurmctld, slurmd, slurmdbd, MariaDB and
munge in a temporary folder (private configs, key, ports) and stops them by PID afterwards.

The test runs the tiny preset with `--profile profiles/slurm` (GPU request mapped to 0: the node has none) and checks
- the run succeeds, every non-local job went through sbatch, every local rule (download, aggregation, figures,
  claims) ran on the submitting host;
- each SLURM job's own log (kept by the profile) names the rule log, and that rule log carries the same
  SLURM_JOB_ID (every stage prints `slurm_job_id=...` first); local jobs' logs say `slurm_job_id=none`;
- `sacct` reports every submitted job COMPLETED;
- the run Parquet files are byte-identical to a local run's (`--cores 2`).
Set MOMENTUM_NTK_SLURM_KEEP=1 to keep the cluster's folder (configs, daemon logs) for inspection.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
SNAKEFILE = ROOT / "Snakefile"
TINY = ROOT / "workflow" / "presets" / "tiny.yaml"
PROFILE = ROOT / "profiles" / "slurm"


# Rules that must never be submitted: downloads (compute nodes are often offline) and the cheap aggregation,
# plotting and report rules (SLURM's queueing would cost more than they do).
LOCAL_RULE = re.compile(r"^(fetch|aggregate\w*|figure\w*|fig\d\w*|table\w*|claims|all\w*)$")
WORKFLOW_TIMEOUT_S = 600


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster; yields the environment (SLURM_CONF, PATH) for its client commands."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root on Linux (Debian 12)")
    if not (shutil.which("slurmctld") or shutil.which("slurmctld", path="/usr/sbin") or shutil.which("apt-get")):
        pytest.skip("no SLURM installed and no apt-get to install it")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("snakemake-executor-plugin-slurm is not installed: pip install snakemake-executor-plugin-slurm")
    folder = tmp_path_factory.mktemp("slurm-cluster")
    t0 = time.monotonic()
    start = subprocess.run(
        ["timeout", "-k", "10", "900", "bash", str(CLUSTER_SH), "start", str(folder)],
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(folder)], capture_output=True, timeout=180)
        pytest.fail(f"tests/slurm/cluster.sh start failed (rc {start.returncode}):\n{_tail(start.stderr)}")
    print(f"cluster up in {time.monotonic() - t0:.1f} s")
    dump = subprocess.run(
        ["bash", "-c", f"source '{folder}/env.sh' && env -0"], capture_output=True, text=True, check=True
    ).stdout
    env = dict(item.split("=", 1) for item in dump.split("\0") if "=" in item)
    env.pop("SLURM_JOB_ID", None)
    try:
        yield env
    finally:
        keep = os.environ.get("MOMENTUM_NTK_SLURM_KEEP") == "1"
        stop = subprocess.run(
            ["bash", str(CLUSTER_SH), "stop", str(folder)] + ([] if keep else ["--purge"]),
            capture_output=True,
            text=True,
            timeout=180,
        )
        print(stop.stderr)


def _snakemake(*args: str) -> list[str]:
    return [
        "timeout",
        "-k",
        "10",
        str(WORKFLOW_TIMEOUT_S),
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        *args,
    ]


def _job_blocks(output: str) -> list[tuple[bool, str, str | None]]:
    """(local?, rule, rule log path or None) for every job the main Snakemake process announced."""
    blocks = []
    for m in re.finditer(r"^(localrule|rule) (\w+):\n((?:    .*\n)*)", output, re.M):
        log = re.search(r"^    log: (\S+)", m.group(3), re.M)
        blocks.append((m.group(1) == "localrule", m.group(2), log.group(1) if log else None))
    return blocks


def _sacct_states(env: dict[str, str], run_id: str, want: int, wait_s: float = 60) -> dict[str, str]:
    """{jobid: state} of this run's jobs (job name = the plugin's run ID), once all `want` are in a final state."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-nP", "-S", "now-2hours", "--name", run_id, "-o", "JobID,State"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        ).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
        final = all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY") for s in states.values())
        if (len(states) >= want and final) or time.monotonic() > deadline:
            return states
        time.sleep(1)


# Opt-in (marker `slurm`, see conftest.py); the static profile checks at the end of this file always run.
@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_preset_through_slurm_profile(cluster, tmp_path):
    for needed in (SNAKEFILE, TINY, PROFILE / "config.yaml"):
        if not needed.exists():
            pytest.skip(f"{needed.relative_to(ROOT)} not written yet")

    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    local_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}

    # The local reference (the training runs only) overlaps with the SLURM run: the latter mostly waits on sbatch and
    # status polls, so the two together take little longer than the SLURM run alone.
    t0 = time.monotonic()
    local = subprocess.Popen(
        _snakemake("--configfile", str(TINY), "--cores", "2", "all_runs"),
        cwd=local_dir,
        env=local_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run = subprocess.run(
            _snakemake(
                "--profile",
                str(PROFILE),
                "--configfile",
                str(TINY),
                # The test node has no GPU; a gpu=1 job could never start there.
                "--set-resources",
                "train:gpu=0",
                # Poll after 2 s instead of the profile's 20 (the plugin then backs off in 10 s steps).
                "--slurm-init-seconds-before-status-checks",
                "2",
                "--local-cores",
                "2",
            ),
            cwd=slurm_dir,
            env=cluster,
            capture_output=True,
            text=True,
        )
        t_slurm = time.monotonic() - t0
        local_out, _ = local.communicate(timeout=WORKFLOW_TIMEOUT_S + 30)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    t_both = time.monotonic() - t0
    print(f"SLURM run {t_slurm:.1f} s, with the local reference {t_both:.1f} s")
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"SLURM run failed (rc {run.returncode}):\n{_tail(output, 120)}"
    assert local.returncode == 0, f"local reference run failed:\n{_tail(local_out)}"

    # --- which jobs went where --------------------------------------------------------------------------------------
    blocks = _job_blocks(output)
    remote = Counter(rule for is_local, rule, _ in blocks if not is_local)
    local_rules = Counter(rule for is_local, rule, _ in blocks if is_local)
    assert {"train", "ntk"} <= set(remote), f"expected train and ntk jobs on SLURM, got {dict(remote)}"
    wrongly_remote = sorted(r for r in remote if LOCAL_RULE.match(r))
    assert not wrongly_remote, f"rules submitted to SLURM that should be localrules: {wrongly_remote}"
    assert "fetch" in local_rules, f"fetch did not run locally: local {dict(local_rules)}"

    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", output)
    assert len(submitted) == sum(remote.values()), f"{len(submitted)} sbatch submissions for {dict(remote)}"
    by_rule = Counter(re.search(r"/rule_(\w+)/", log).group(1) for _, log in submitted)
    assert by_rule == remote, f"SLURM logs per rule {dict(by_rule)} != remote jobs {dict(remote)}"

    # --- every SLURM job ran its rule under its own job id ----------------------------------------------------------
    for jobid, slurm_log in submitted:
        text = Path(slurm_log).read_text()
        rule_log = re.search(r"^    log: (\S+)", text, re.M)
        assert rule_log, f"SLURM log {slurm_log} names no rule log"
        banner = (slurm_dir / rule_log.group(1)).read_text()
        assert (
            f"slurm_job_id={jobid}" in banner
        ), f"{rule_log.group(1)} (SLURM job {jobid}) does not record slurm_job_id={jobid}:\n{banner[:500]}"
    for is_local, rule, log in blocks:
        if is_local and log and (slurm_dir / log).exists():
            text = (slurm_dir / log).read_text()
            if "slurm_job_id=" in text:
                assert "slurm_job_id=none" in text, f"local rule {rule} ran inside a SLURM job? {log}: {text[:300]}"

    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    states = _sacct_states(cluster, run_id, len(submitted))
    assert set(states) == {jobid for jobid, _ in submitted}, f"sacct lists {sorted(states)} for run {run_id}"
    assert set(states.values()) == {"COMPLETED"}, f"sacct states: {states}"

    # --- same results as the local run ------------------------------------------------------------------------------
    def run_files(base: Path) -> list[str]:
        return sorted(str(p.relative_to(base)) for p in (base / "results" / "runs").rglob("*.parquet"))

    files = run_files(slurm_dir)
    assert files and files == run_files(local_dir), "the SLURM and local runs produced different run files"
    differ = [f for f in files if (slurm_dir / f).read_bytes() != (local_dir / f).read_bytes()]
    assert not differ, f"run Parquet files differ between SLURM and local execution: {differ}"

    # Nothing of this run is left in the queue.
    queue = subprocess.run(
        ["squeue", "-h", "--name", run_id, "-t", "pending,running", "-o", "%i"],
        capture_output=True,
        text=True,
        env=cluster,
        timeout=60,
    ).stdout.split()
    assert not queue, f"jobs still queued or running: {queue}"


# --- static checks of the profile and the localrules (no cluster needed) ---------------------------------------------


def test_profile_keys_are_snakemake_flags():
    """Every key of profiles/slurm/config.yaml is a Snakemake 9 flag (plugin flags need the plugin installed)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    from snakemake.cli import get_argument_parser

    flags = {opt for action in get_argument_parser()._actions for opt in action.option_strings}
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401

        have_plugin = True
    except ImportError:
        have_plugin = False
    unknown = [k for k in profile if f"--{k}" not in flags and (have_plugin or not k.startswith("slurm-"))]
    assert not unknown, f"profiles/slurm/config.yaml: not Snakemake flags: {unknown}"
    resources = profile["default-resources"]
    assert isinstance(resources.get("mem_mb"), int) and isinstance(resources.get("runtime"), int)
    train = profile["set-resources"]["train"]
    assert train.get("gpu") == 1 and "gres" not in train, "train asks for its GPU as gpu: 1 (never gres with gpu)"


def _localrules() -> set[str]:
    names: set[str] = set()
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")) + [SNAKEFILE]:
        if smk.exists():
            for block in re.findall(r"^localrules:\s*((?:[\s,]*\w+)+)", smk.read_text(), re.M):
                names |= set(re.findall(r"\w+", block))
    return names


def _rules_with_action() -> set[str]:
    names = set()
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")) + [SNAKEFILE]:
        if not smk.exists():
            continue
        for m in re.finditer(r"^rule (\w+):\n((?:(?:[ \t].*)?\n)*)", smk.read_text(), re.M):
            if re.search(r"^[ \t]+(shell|script|run|notebook|wrapper):", m.group(2), re.M):
                names.add(m.group(1))
    return names


def test_download_aggregation_and_plot_rules_are_local():
    """On a cluster, downloads (compute nodes may be offline) and the cheap analysis rules run on the login node."""
    rules = _rules_with_action()
    if not rules:
        pytest.skip("no workflow rules yet")
    should_be_local = {r for r in rules if LOCAL_RULE.match(r)}
    missing = sorted(should_be_local - _localrules())
    assert not missing, f"declare these in a `localrules:` directive: {missing}"
    assert not ({"train", "ntk"} & _localrules()), "train and ntk must run as SLURM jobs"
