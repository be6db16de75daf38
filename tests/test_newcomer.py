"""The README as a newcomer types it: the "Rerun one thing" commands as written, one config per results/ folder,
config values rejected before any job, code changes that rerun the cheap stages only, recovery after a killed run.

Each test works on a copy of the repository's workflow (Snakefile, workflow/, src/, profiles/) holding a copy of the
tiny preset's outputs, so commands run from the copy's root exactly as a user runs them from a clone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = "workflow/presets/tiny.yaml"


def clone_with_results(tiny_run: Path, dst: Path) -> Path:
    """The workflow's files plus the tiny preset's outputs (results/, resources/), mtimes kept, and the tracked
    results/README.md. Snakemake's records (.snakemake/) stay behind: they name the original clone's source paths,
    and a moved clone reruns its cheap jobs once for that alone. The stamp results/.config.json is the one
    `snakemake --configfile workflow/presets/tiny.yaml` typed in the copy's root writes (the session's run used -s
    and -d, which its own stamp records, and the fixes printed from it would carry)."""
    dst.mkdir(parents=True)
    for name in ["Snakefile", "config.yaml", "pyproject.toml"]:
        shutil.copy2(ROOT / name, dst / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ["workflow", "src", "profiles", "envs"]:
        shutil.copytree(ROOT / name, dst / name, ignore=skip)
    for item in tiny_run.iterdir():
        if item.name == ".snakemake":
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)
    shutil.copy2(ROOT / "results/README.md", dst / "results/README.md")
    stamp = {"name": "tiny", "configfiles": [TINY, "config.yaml"]}
    (dst / "results/.config.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return dst


def snakemake(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def readme_block(heading: str) -> list[str]:
    """The commands of the first ```bash block after ``heading`` in README.md, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(heading):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and ".snakemake" not in p.parts}


@pytest.mark.slow
def test_readme_rerun_commands_work_as_written(tiny_run, tmp_path):
    """Every command of README's "Rerun one thing", run from the clone's root as written (the quick preset swapped
    for the tiny one), succeeds on the tiny preset's outputs and retrains nothing."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    commands = readme_block("### Rerun one thing")
    assert len(commands) >= 6 and all(c.startswith("snakemake ") for c in commands)
    assert any("--report" in c for c in commands) and any(re.match(r"snakemake fig2\b", c) for c in commands)
    runs_before = mtimes(repo / "results/runs")
    for command in commands:
        args = shlex.split(command.replace("workflow/presets/quick.yaml", TINY))[1:]
        proc = snakemake(args, cwd=repo)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        assert not re.search(r"^(local)?rule train:", proc.stdout + proc.stderr, re.M), command
    assert (repo / "report.html").stat().st_size > 100_000
    assert mtimes(repo / "results/runs") == runs_before


@pytest.mark.slow
def test_another_config_never_touches_results(tiny_run, tmp_path):
    """After the tiny preset, a command with config.yaml (another `name`) warns at plan time and stops before any
    job, naming the preset that made results/ and the fix; nothing in results/ changes."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    assert json.loads((repo / "results/.config.json").read_text())["name"] == "tiny"
    before = mtimes(repo / "results")
    dry = snakemake(["-n", "results/ntk/mnist5k/summary.json"], cwd=repo)
    assert "holds the outputs of config 'tiny'" in dry.stderr and f"--configfile {TINY}" in dry.stderr
    proc = snakemake(["fig2"], cwd=repo, timeout=300)  # config.yaml's fig2: mnist, fmnist, cifar10, all to build
    assert proc.returncode != 0
    assert "`python -m momentum_ntk.shelve`" in proc.stderr and f"--configfile {TINY}" in proc.stderr
    assert not re.search(r"^(local)?rule \w+:", proc.stdout + proc.stderr, re.M)
    assert mtimes(repo / "results") == before
    # The fix it names works: the same target with the preset that made results/.
    ok = snakemake(["results/ntk/mnist5k/summary.json", "--configfile", TINY], cwd=repo)
    assert ok.returncode == 0, ok.stderr[-3000:]


@pytest.mark.slow
def test_code_change_reruns_cheap_stages_only(tiny_run, tmp_path):
    """Editing figures.py plans the figure and table jobs again, not the claims (whose code does not import it: stages
    import only the library); editing judges.py plans the claims alone; data, NTK, training and theory modes never."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    quiet = snakemake(["-n", "--configfile", TINY], cwd=repo)
    assert quiet.returncode == 0 and "Nothing to be done" in quiet.stdout + quiet.stderr, quiet.stdout[-2000:]

    def planned_after_editing(module: str) -> set[str]:
        os.utime(repo / f"src/momentum_ntk/{module}.py")
        proc = snakemake(["-n", "--quiet", "rules", "--configfile", TINY], cwd=repo)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return set(re.findall(r"^(\w+)\s+\d+$", proc.stdout, re.M))

    planned = planned_after_editing("figures")
    assert {"figure", "fig1", "table1"} <= planned and "claims" not in planned
    assert not planned & {"fetch", "binarize", "ntk", "train", "theory_modes", "theory_predict", "aggregate"}
    touch = snakemake(["--touch", "--configfile", TINY], cwd=repo)  # those outputs up to date again, nothing run
    assert touch.returncode == 0, touch.stderr[-3000:]
    planned = planned_after_editing("judges")
    assert "claims" in planned and not planned & {"figure", "fig1", "table1", "train", "theory_predict", "aggregate"}


@pytest.mark.parametrize(
    "grid, names",
    [
        ("{betas: [0.9, 0.90000000001]}", {"b0.9_", "b0.90000000001_"}),  # `{β:g}` made these one file name
        ("{betas: [0.1234567]}", {"b0.1234567_"}),  # `{β:g}` trained β = 0.123457
        ("{betas: [0.00001]}", {"b0.00001_"}),  # `{β:g}` wrote 1e-05, which no rule matched
    ],
)
def test_beta_file_names_are_lossless(tmp_path, grid, names):
    """Every configured β gets its own file name, and the job trains exactly that β."""
    extra = tmp_path / "betas.yaml"
    extra.write_text(f"grid: {grid}\n")
    proc = snakemake(["-n", "-p", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile",
                      str(ROOT / TINY), str(extra)], cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert {n for n in names if f"_{n}s0.parquet" in out} == names
    for n in names:
        assert re.search(rf"--beta [^\n]*\b{re.escape(n[1:-1])}\b", out)


@pytest.mark.slow
def test_killed_run_recovers_with_the_readme_line(tiny_run, tmp_path):
    """SIGKILL of Snakemake in the middle of a job leaves a lock; the README's one line (unlock, then run) finishes
    the work without asking for --rerun-incomplete."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    (repo / "results/claims.md").unlink()
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--configfile", TINY], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not list((repo / ".snakemake/incomplete").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((repo / ".snakemake/locks").glob("*")), "the killed run left no lock"
    line = next(r for r in ROOT.joinpath("README.md").read_text().splitlines() if "snakemake --unlock" in r)
    command = re.search(r"`(snakemake --unlock[^`]*)`", line).group(1).replace("workflow/presets/quick.yaml", TINY)
    command = command.replace("snakemake ", f"{shlex.quote(sys.executable)} -m snakemake ")
    done = subprocess.run(command, shell=True, cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (repo / "results/claims.md").is_file()


def test_ci_runs_the_readme_commands_in_a_virtual_environment():
    """The README's first screen: the run command and the test command both create and use .venv (Debian's system
    Python refuses pip outside one), and .ci/run runs exactly the test command."""
    text = (ROOT / "README.md").read_text()
    first = [b.split("```", 1)[0].strip() for b in text[: text.index("\n## ")].split("```bash\n")[1:]]
    assert len(first) == 2
    run, test = first
    for command in (run, test):
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")
    assert "workflow/presets/quick.yaml" in run and "pytest" in test
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert test in ci


def test_the_report_command_has_its_dependencies():
    """`snakemake --report` (README) stops with 'Python package pygments must be installed' unless the package's own
    dependencies bring it: a plain `pip install -e .` must be enough."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"pygments\b", d) for d in deps)
