"""Project metadata and the workflow's edges: LICENSE, CITATION.cff, the per-rule runtime limits and benchmarks, the
results/ listing. (The report's front page and captions are checked in test_workflow.test_report_builds.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from momentum_ntk import plan  # noqa: E402

PAPER = ROOT.parent / "shared" / "paper" / "liu2023-nag-over-hb.md"
PAPER_TITLE = (
    "Provable Acceleration of Nesterov's Accelerated Gradient Method over Heavy Ball Method in Training "
    "Over-Parameterized Neural Networks"
)
PAPER_AUTHORS = ["Xin Liu", "Wei Tao", "Wei Li", "Dazhi Zhan", "Jun Wang", "Zhisong Pan"]
# Rules whose jobs do the work: each writes a Snakemake benchmark TSV (wall time, peak memory).
# Packed train jobs (the default) also write the theory modes, so the paper plan has no theory_modes job; with
# train.granularity: run the theory_modes rule exists and carries a benchmark too.
COMPUTE_RULES = {"fetch", "binarize", "ntk", "train", "theory_predict", "aggregate"}
# Measured: the whole ntk job for FMNIST (n = 12,000) took 202 s on the 2-core CI machine (README).
NTK_FMNIST_MEASURED_S = 202


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def snakemake(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


# --- LICENSE and CITATION.cff ------------------------------------------------------------------------------------------


def test_license_is_mit_as_pyproject_says():
    text = (ROOT / "LICENSE").read_text()
    assert pyproject()["license"] == {"text": "MIT"}
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The momentum-ntk authors" in text
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


CFF_KEYS = {"abstract", "authors", "cff-version", "commit", "contact", "date-released", "doi", "identifiers",
            "keywords", "license", "license-url", "message", "preferred-citation", "references", "repository",
            "repository-artifact", "repository-code", "title", "type", "url", "version"}  # fmt: skip
CFF_REFERENCE_KEYS = {"abstract", "authors", "collection-title", "conference", "date-published", "doi", "identifiers",
                      "issue", "journal", "keywords", "month", "notes", "pages", "publisher", "start", "end", "status",
                      "title", "type", "url", "volume", "year"}  # fmt: skip
CFF_PERSON_KEYS = {"family-names", "given-names", "name-particle", "name-suffix", "affiliation", "orcid", "email",
                   "website", "alias"}  # fmt: skip


def paper_front_matter() -> tuple[str, list[str], str]:
    """(title, authors, full text) of the paper file; the built-in title and authors when the file is absent."""
    if not PAPER.is_file():
        return PAPER_TITLE, PAPER_AUTHORS, ""
    text = PAPER.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    authors = [re.sub(r"[\d*\s]+$", "", a).strip() for a in lines[1].split(",")]
    return lines[0], authors, text


def test_paper_front_matter_is_what_the_tests_expect():
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER}")
    title, authors, _ = paper_front_matter()
    assert (title, authors) == (PAPER_TITLE, PAPER_AUTHORS)


def test_citation_cff_cites_the_workflow_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert set(cff) <= CFF_KEYS, f"not CFF 1.2.0 keys: {set(cff) - CFF_KEYS}"
    for key in ("message", "title", "authors"):
        assert cff.get(key), f"CITATION.cff lacks {key}"
    project = pyproject()
    assert cff["title"] == project["name"] and cff["version"] == project["version"]
    assert cff["license"] == project["license"]["text"] == "MIT"
    assert all(a.get("name") or a.get("family-names") for a in cff["authors"])

    refs = [cff["preferred-citation"]] if "preferred-citation" in cff else []
    refs += cff.get("references", [])
    title, authors, text = paper_front_matter()
    paper = [r for r in refs if r.get("title") == title]
    assert len(paper) == 1, f"no reference titled {title!r}"
    ref = paper[0]
    assert set(ref) <= CFF_REFERENCE_KEYS, f"not CFF reference keys: {set(ref) - CFF_REFERENCE_KEYS}"
    assert ref["type"] == "article" and ref["year"] == 2023
    assert [f"{a['given-names']} {a['family-names']}" for a in ref["authors"]] == authors
    assert all(set(a) <= CFF_PERSON_KEYS for a in ref["authors"])
    if text:  # venue, DOI and URL only as the paper itself states them
        for key in ("doi", "journal", "conference", "url"):
            if key in ref:
                value = ref[key]["name"] if isinstance(ref[key], dict) else str(ref[key])
                assert value in text, f"CITATION.cff: {key} {value!r} is not in the paper text"
        for a in ref["authors"]:
            assert a.get("affiliation", "") in text


# --- the parsed workflow: runtime and benchmark per rule ---------------------------------------------------------------

# Loads the workflow through Snakemake's API (as `snakemake --lint` does) and prints, per rule, whether it runs
# locally, whether it has an action, its benchmark template and its resource names, plus PATHS.
_INSPECT = r"""
import json, re, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
root, workdir = Path(sys.argv[1]), Path(sys.argv[2])
plain = lambda f: re.sub(r"{(\w+),[^}]*}", r"{\1}", str(f))  # without the wildcard constraints Snakemake adds
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), snakefile=root / "Snakefile", workdir=workdir,
                      config_settings=ConfigSettings(configfiles=[root / "config.yaml"]))._workflow
    rules = {r.name: {"local": r.name in wf._localrules, "action": not r.norun,
                      "benchmark": plain(r.benchmark) if r.benchmark else None,
                      "resources": sorted(r.resources), "log": [plain(f) for f in r.log]} for r in wf.rules}
    print("INSPECT" + json.dumps({"rules": rules, "paths": dict(wf.globals["PATHS"])}))
"""


@pytest.fixture(scope="module")
def workflow_rules(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("inspect")
    proc = subprocess.run([sys.executable, "-c", _INSPECT, str(ROOT), str(workdir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("INSPECT"))
    return json.loads(line[len("INSPECT") :])


def test_every_non_local_rule_declares_a_runtime(workflow_rules):
    remote = {name for name, r in workflow_rules["rules"].items() if r["action"] and not r["local"]}
    assert {"binarize", "ntk", "train"} <= remote
    missing = sorted(name for name in remote if "runtime" not in workflow_rules["rules"][name]["resources"])
    assert not missing, f"SLURM jobs without their own runtime (minutes, -t): {missing}"


def test_compute_rules_write_a_benchmark_spelled_in_paths(workflow_rules):
    rules, paths = workflow_rules["rules"], workflow_rules["paths"]
    for name in sorted(COMPUTE_RULES):
        bench = rules[name]["benchmark"]
        assert bench, f"rule {name} has no benchmark"
        assert bench == paths[f"bench_{name}"] and bench.startswith("results/benchmarks/") and bench.endswith(".tsv")
        # keyed like the job's log: the same wildcards, so one TSV per job
        log = rules[name]["log"][0]
        assert set(re.findall(r"{(\w+)", bench)) == set(re.findall(r"{(\w+)", log)), (name, bench, log)
    benches = [r["benchmark"] for r in rules.values() if r["benchmark"]]
    assert len(benches) == len(set(benches))


# --- the planned jobs of the paper config (a dry run) ----------------------------------------------------------------


def dry_run_jobs(stdout: str) -> list[dict]:
    """Job blocks of `snakemake --dry-run` (not quiet): rule name and the `key: value` lines below it."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:\n)", "\n" + stdout):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):\n", block)
        if not head:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        fields["rule"] = head.group(1)
        jobs.append(fields)
    return jobs


def resources_of(job: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in job.get("resources", "").split(", ") if "=" in item)


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory) -> list[dict]:
    workdir = tmp_path_factory.mktemp("paper-plan")
    proc = snakemake("-n", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(ROOT / "config.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dry_run_jobs(proc.stdout)


def test_paper_plan_runtimes_are_whole_minutes_above_the_floor(paper_plan, workflow_rules):
    remote = {name for name, r in workflow_rules["rules"].items() if r["action"] and not r["local"]}
    jobs = [j for j in paper_plan if j["rule"] in remote]
    counts = {rule: sum(j["rule"] == rule for j in jobs) for rule in remote}
    assert counts == {"binarize": 3, "ntk": 3, "train": 60}, counts
    runtime = {}
    for job in jobs:
        value = resources_of(job).get("runtime")
        assert value is not None and re.fullmatch(r"\d+", value), job
        assert int(value) >= plan.RUNTIME_FLOOR_MIN, job
        runtime[job["rule"], job.get("wildcards", "")] = int(value)
    # generous against what was measured: the FMNIST ntk job took 202 s on 2 cores
    assert runtime["ntk", "dataset=fmnist"] * 60 >= 5 * NTK_FMNIST_MEASURED_S
    # the n×n eigendecomposition dominates: mnist (n = 12,665) plans more than cifar10 (n = 10,000)
    assert runtime["ntk", "dataset=mnist"] > runtime["ntk", "dataset=cifar10"]
    # a pack's limit grows with the width (training FLOP, the n×m pattern and H(0) = S·Sᵀ of its theory modes) and
    # covers the theory modes' n×n eigendecomposition on top of training
    packs = {w: runtime["train", f"dataset=mnist, width={w}, seed=0"] for w in (1000, 8000)}
    assert packs[8000] > packs[1000]
    assert packs[1000] >= plan.theory_modes_runtime_min(12665, 784, 1000)


def test_paper_plan_benchmarks_are_one_per_job_and_consumed_by_none(paper_plan):
    benches = [j["benchmark"] for j in paper_plan if j["rule"] in COMPUTE_RULES]
    assert len(benches) == sum(j["rule"] in COMPUTE_RULES for j in paper_plan) and len(set(benches)) == len(benches)
    assert all(b.startswith("results/benchmarks/") for b in benches)
    assert {j["rule"] for j in paper_plan if "benchmark" in j} == COMPUTE_RULES
    files = {f for j in paper_plan for key in ("input", "output") for f in j.get(key, "").split(", ")}
    assert not files & set(benches), "a benchmark file is some job's input or output"


def test_benchmarks_follow_the_train_granularity(tmp_path):
    """Packs: one TSV per (dataset, width, seed); `train.granularity: run`: one per run, beside its log."""
    tiny = ("-n", "-s", str(ROOT / "Snakefile"), "--configfile", str(ROOT / "workflow/presets/tiny.yaml"))
    for granularity, expect in [
        ("pack", {f"results/benchmarks/train/mnist5k/m{w}_s{s}.tsv" for w in (64, 256) for s in (0, 1)}),
        ("run", {f"results/benchmarks/train/mnist5k/{m}/m{w}_c10_b0.9_s{s}.tsv"
                 for m in ("hb", "nag") for w in (64, 256) for s in (0, 1)}),
    ]:  # fmt: skip
        proc = snakemake(*tiny, "-d", str(tmp_path / granularity), "--config", f"train={{granularity: {granularity}}}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = dry_run_jobs(proc.stdout)
        assert {j["benchmark"] for j in jobs if j["rule"] == "train"} == expect
        predict = {j["benchmark"] for j in jobs if j["rule"] == "theory_predict"}
        assert predict == {p.replace("/train/", "/theory/").replace("/mnist5k/m", "/mnist5k/predict_m")
                           if granularity == "pack" else p.replace("/train/", "/theory/") for p in expect}  # fmt: skip


def test_runtime_limits_scale_with_the_dataset():
    """The dense jobs' limits grow as n³ (the eigendecomposition) and are whole minutes ≥ the floor."""
    floor = plan.RUNTIME_FLOOR_MIN
    for fn in (lambda n: plan.ntk_runtime_min(n, 784, [1000, 8000], min(n, 2000), min(n, 2000)),
               lambda n: plan.theory_modes_runtime_min(n, 784, 1000)):  # fmt: skip
        small, big = fn(8000), fn(32000)
        assert isinstance(small, int) and small >= floor
        assert big - floor >= 0.9 * 64 * (small - floor - 1)  # 4× n: ~64× the n³ part (ceil: -1 minute)
        assert fn(10) == floor + 1  # a tiny dataset: the floor and the one minute ceil rounds up to
    assert plan.binarize_runtime_min(12665, 784) >= floor and isinstance(plan.binarize_runtime_min(10, 10), int)


# --- results/README.md -------------------------------------------------------------------------------------------------


def readme_patterns() -> list[re.Pattern[str]]:
    """Every backticked path of results/README.md's table as a regex: {a,b} alternatives, {wildcard} one path part,
    … any characters within a part, **/ any number of folders."""
    patterns = []
    for line in (ROOT / "results/README.md").read_text().splitlines():
        if not line.startswith("|"):
            continue
        for span in re.findall(r"`([^`]+)`", line):
            if "/" not in span and "." not in span:
                continue
            rx = ""
            for tok in re.split(r"({[^}]*}|…|\*\*/)", span):
                if tok == "…":
                    rx += "[^/]*"
                elif tok == "**/":
                    rx += "(?:[^/]+/)*"
                elif tok.startswith("{") and "," in tok:
                    rx += "(?:" + "|".join(map(re.escape, tok[1:-1].split(","))) + ")"
                elif tok.startswith("{"):
                    rx += "[^/]+"
                else:
                    rx += re.escape(tok)
            patterns.append(re.compile(rx))
    return patterns


def test_results_readme_names_every_folder_of_paths(workflow_rules):
    text = (ROOT / "results/README.md").read_text()
    templates = [p for p in workflow_rules["paths"].values() if p.startswith("results/")]
    templates += [f for r in workflow_rules["rules"].values() for f in r["log"] + [r["benchmark"] or ""]]
    for template in filter(None, templates):
        parts = Path(template).relative_to("results").parts
        top = parts[0] + ("/" if len(parts) > 1 else "")
        assert f"`{top}" in text, f"results/README.md does not list {top} ({template})"


@pytest.mark.slow
def test_results_readme_lists_every_file_of_a_run(tiny_run):
    """Every file the tiny preset wrote under results/ matches a path of results/README.md's table, and every compute
    job left its benchmark TSV (wall time and peak memory)."""
    patterns = readme_patterns()
    files = [p.relative_to(tiny_run / "results").as_posix() for p in (tiny_run / "results").rglob("*") if p.is_file()]
    unlisted = sorted(f for f in files if not any(rx.fullmatch(f) for rx in patterns))
    assert not unlisted, f"not listed in results/README.md: {unlisted}"
    benches = sorted((tiny_run / "results/benchmarks").rglob("*.tsv"))
    rules = {p.relative_to(tiny_run / "results/benchmarks").parts[0] for p in benches}
    assert rules == {"fetch", "binarize", "ntk", "train", "theory", "aggregate"}
    assert len(list((tiny_run / "results/benchmarks/train").rglob("*.tsv"))) == 4  # one per pack: 2 widths × 2 seeds
    header = benches[0].read_text().splitlines()[0].split("\t")
    assert header[:3] == ["s", "h:m:s", "max_rss"]
