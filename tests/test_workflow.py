"""The Snakemake workflow as a whole: config validation, the paper's full plan, lint/format, and the tiny preset."""

from __future__ import annotations

import json
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


def test_full_paper_plan_packs_480_runs_into_60_jobs():
    """Packs: one train and one theory-prediction job per (dataset, width, seed) = 3 × 4 × 5; per run: 3 × 160."""
    proc = snakemake("-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 3 * 4 * 5 and counts["theory_predict"] == 3 * 4 * 5
    assert counts["binarize"] == 3 and counts["ntk"] == 3
    assert "theory_modes" not in counts  # a pack's train job writes its theory modes file
    # the plan still asks for every run file: all_runs depends on 480 of them (checked through the packs' outputs)
    proc = snakemake("-n", "--quiet", "rules", "--config", "train={granularity: run}")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 3 * 160 and counts["theory_predict"] == 3 * 160
    assert counts["theory_modes"] == 3 * 4 * 5


def test_paper_plan_on_a_cpu_host_warns_with_the_cost_and_the_fix():
    """Planned without a GPU, the paper grid warns that it would take CPU-hours, and says how to use GPUs."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "src"))
    from momentum_ntk import plan

    if plan.gpu_present():
        pytest.skip("this host has an NVIDIA driver")
    proc = snakemake("-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    hours = re.search(r"about (\d+) CPU-hours", out)
    assert hours and "--resources gpu=" in out and "train.device: cpu" in out
    # independent price: Σ over datasets and widths of runs × steps × 4·n·d·m FLOP at 120 GFLOP/s
    shapes = {"mnist": (12665, 784), "fmnist": (12000, 784), "cifar10": (10000, 3072)}
    flop = sum(160 / 4 * 1000 * 4 * n * d * np.sum(config["grid"]["widths"]) for n, d in shapes.values())
    assert int(hours.group(1)) == round(flop / 120e9 / 3600)
    proc = snakemake("-n", "--quiet", "rules", "--configfile", str(ROOT / "workflow/presets/tiny.yaml"))
    assert "CPU-hours" not in proc.stdout + proc.stderr  # a small grid is no surprise


@pytest.mark.parametrize(
    "text, key",
    [("train:\n  steps: 0\n", "steps"), ("grid:\n  widht: [10]\n", "widht"),
     ("grid:\n  widths: [64.0, 128]\n", "grid.widths[0]: 64.0"), ("name: a/b\n", "name"),
     ("train:\n  engine: foo\n", "engine")],
    ids=["bad-value", "unknown-key", "float-width", "bad-name", "bad-engine"],
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


@pytest.mark.slow
def test_tiny_preset_runs_end_to_end(tiny_run):
    runs = sorted((tiny_run / "results/runs/mnist5k").glob("*/*.parquet"))
    assert len(runs) == 2 * 2 * 1 * 1 * 2  # methods × widths × η × β × seeds of tiny.yaml
    for name in ["claims.md", "claims.json", "figures/fig1_rho_nag.png", "figures/fig2_loss_mnist5k.pdf",
                 "figures/table1.md", "figures/theory_overlay_mnist5k.png", "ntk/mnist5k/summary.json"]:  # fmt: skip
        path = tiny_run / "results" / name
        assert path.is_file() and path.stat().st_size > 0, name
    slopes = json.loads((tiny_run / "results/claims.json").read_text())["linearization_width_slopes"]["mnist5k"]
    assert slopes["lin_h0"]["widths"] == [64, 256] and slopes["lin_h0"]["n_seeds"] == 2
    assert slopes["lin_h0"]["lo"] <= slopes["lin_h0"]["slope"] <= slopes["lin_h0"]["hi"]
    assert "Width slope b of the trajectory error e(k)" in (tiny_run / "results/claims.md").read_text()
    logs = list((tiny_run / "results/logs/train").rglob("*.log"))
    assert logs and all("slurm_job_id=none" in p.read_text() for p in logs)


@pytest.mark.slow
def test_one_run_per_job_gives_the_same_bytes_as_packs(tiny_run, tmp_path):
    """train.granularity: run (one job per run) writes run files byte-identical to the packed jobs' files, and asking
    for one run file under packs builds its whole pack."""
    modes = sorted(p.relative_to(tiny_run) for p in (tiny_run / "results/theory").rglob("modes_*.parquet"))
    assert len(modes) == 4  # widths × seeds, written by the packed train jobs
    proc = snakemake(
        "all_runs", *map(str, modes), "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
        "--configfile", str(ROOT / "workflow/presets/tiny.yaml"), "--config", "train={granularity: run}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    packed = sorted(p.relative_to(tiny_run) for p in (tiny_run / "results/runs").rglob("*.parquet"))
    single = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results/runs").rglob("*.parquet"))
    assert packed == single and len(packed) == 8
    assert all((tiny_run / p).read_bytes() == (tmp_path / p).read_bytes() for p in packed)
    # the theory modes a pack's train job writes equal those of the theory_modes rule (one job per run)
    assert re.search(r"^(local)?rule theory_modes:", proc.stdout + proc.stderr, re.M)
    assert all((tiny_run / p).read_bytes() == (tmp_path / p).read_bytes() for p in modes)
    metas = [json.loads((tiny_run / p).with_suffix(".json").read_text()) for p in packed]
    assert {m["pack_size"] for m in metas} == {2} and {m["lambda0_rows_source"] for m in metas} != {"computed"}
    assert {json.loads((tmp_path / p).with_suffix(".json").read_text())["pack_size"] for p in single} == {1}

    one = "results/runs/mnist5k/nag/m64_c10_b0.9_s1.parquet"
    proc = snakemake(one, "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path / "fresh"), "--cores", "1",
                     "--configfile", str(ROOT / "workflow/presets/tiny.yaml"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout + proc.stderr)["train"] == 1
    assert "m64_c10_b0.9_s1.parquet" in proc.stdout and "hb/m64_c10_b0.9_s1.parquet" in proc.stdout


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
    html = report.read_text().replace("\\n", " ")  # the texts sit in JSON strings, line breaks escaped
    # the front page (Snakefile `report:` workflow/report/workflow.rst), rendered with this run's config
    assert "Where to start" in html and "results/claims.md" in html and "datasets mnist5k" in html
    assert "runs per dataset" in html and "showCategory('Claims')" in html and "{{ snakemake" not in html
    # the captions of claims.md and table1.md (workflow/report/claims.rst, table1.rst)
    assert "the machine-readable form is" in html and "The same table is" in html


# --- every file a rule writes is spelled in PATHS (workflow/rules/paths.smk), which nothing changes afterwards ----------

RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk")) + [ROOT / "Snakefile"]
FILE_DIRECTIVES = ("output", "log", "benchmark")


def rule_file_directives() -> list[tuple[str, str, str, str]]:
    """(file, rule, directive, body) of every output:, log: and benchmark: of every rule (nested rules included)."""
    found = []
    for smk in RULE_FILES:
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            head = re.match(r"^(\s*)(?:rule|checkpoint)\s+(\w+)\s*:", line)
            if not head:
                continue
            indent, directive, directive_indent = len(head.group(1)), None, None
            for body_line in lines[i + 1 :]:
                here = len(body_line) - len(body_line.lstrip())
                if body_line.strip() and here <= indent:
                    break  # the rule ends
                d = re.match(r"^\s+(\w+):", body_line)
                if d and (directive_indent is None or here == directive_indent):
                    directive_indent, directive = here, d.group(1)
                    if directive in FILE_DIRECTIVES:
                        found.append([smk.name, head.group(2), directive, body_line.split(":", 1)[1]])
                elif found and directive in FILE_DIRECTIVES and found[-1][:3] == [smk.name, head.group(2), directive]:
                    found[-1][3] += "\n" + body_line
    return [tuple(f) for f in found]


def test_rules_name_every_output_log_and_benchmark_through_paths():
    """No path literal (or a path glued from pieces) in an output:, log: or benchmark: directive: each is a PATHS
    entry or a helper that expands one; a log and a benchmark are exactly PATHS["log_<rule>"], PATHS["bench_<rule>"]."""
    directives = rule_file_directives()
    assert {d[1] for d in directives} >= {"fetch", "train", "theory_modes", "claims"}, "rule parser found too little"
    for smk, rule, directive, body in directives:
        code = re.sub(r"#.*", "", body)
        assert not re.search(r"""["'](results|resources)/|\bf["']|["']\s*\+|\+\s*["']""", code), (smk, rule, code)
        if directive == "log":
            assert code.strip().rstrip(",") == f'PATHS["log_{rule}"]', (smk, rule, code)
        if directive == "benchmark":
            assert code.strip() == f'PATHS["bench_{rule}"]', (smk, rule, code)
        if directive == "output":
            assert "PATHS[" in code or "job_files(" in code, (smk, rule, code)


def test_paths_is_built_once_and_read_only():
    """paths.smk builds PATHS in one expression and no .smk assigns to it; the loaded workflow's PATHS refuses writes,
    and every rule's log and benchmark is one of its templates."""
    for smk in RULE_FILES:
        text = re.sub(r"#.*", "", smk.read_text())  # comments may name the forbidden form
        assert not re.search(r"\bPATHS\s*(\[[^\]]*\]\s*=[^=]|\.(update|setdefault|pop)\(|\|=)", text), smk.name
        assert len(re.findall(r"^PATHS\s*=", text, re.M)) == (smk.name == "paths.smk"), smk.name
    script = r"""
import json, re, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
root, workdir, preset = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
plain = lambda f: re.sub(r"{(\w+),[^}]*}", r"{\1}", str(f))
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), snakefile=root / "Snakefile", workdir=workdir,
                      config_settings=ConfigSettings(configfiles=[preset]))._workflow
    paths = wf.globals["PATHS"]
    try:
        paths["log_fetch"] = "elsewhere.log"
        frozen = False
    except TypeError:
        frozen = True
    files = {r.name: [plain(f) for f in [*r.log, *([r.benchmark] if r.benchmark else [])]] for r in wf.rules}
    print("INSPECT" + json.dumps({"frozen": frozen, "paths": dict(paths), "files": files}))
"""
    preset = ROOT / "workflow/presets/tiny.yaml"
    with __import__("tempfile").TemporaryDirectory() as workdir:
        proc = subprocess.run([sys.executable, "-c", script, str(ROOT), workdir, str(preset)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("INSPECT"))[len("INSPECT") :])
    assert seen["frozen"], "PATHS accepted an assignment after it was built"
    templates = set(seen["paths"].values())
    assert all(f in templates for fs in seen["files"].values() for f in fs), seen["files"]
