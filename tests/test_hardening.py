"""Issue 19, one test per row: careless inputs stop before any job naming the key, every printed fix works as typed,
silent corruption is caught, a full or read-only disk is one clean line, tables print β losslessly.

The end-to-end tests work on a copy of the workflow holding the tiny preset's outputs (test_newcomer.clone_with_results)
and run commands from the copy's root as a user types them; the full-disk and read-only tests need root (a small
tmpfs, a read-only bind mount) and skip otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from test_newcomer import TINY, clone_with_results, snakemake

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
RUN = "results/runs/mnist5k/hb/m64_c10_b0.9_s0.parquet"


def plan_with(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """`snakemake -n` on the tiny preset plus a config file holding ``text``, in an empty working directory."""
    extra = tmp_path / "bad.yaml"
    extra.write_text(text)
    return snakemake(["-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path / "work"), "--configfile",
                      str(ROOT / TINY), str(extra)], cwd=ROOT)  # fmt: skip


def config_problems(text: str) -> list[str]:
    """momentum_ntk.configcheck on the tiny preset updated by ``text`` (as Snakemake merges config files)."""
    from momentum_ntk import configcheck

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for part in (yaml.safe_load((ROOT / TINY).read_text()), yaml.safe_load(text)):
        for key, value in part.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return configcheck.problems(config, SCHEMA)


def run_printed(command: str, cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    """A command an error message printed, typed literally in ``cwd`` (a shell line; `snakemake` and `python` are
    the test interpreter's, with the package of this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}  # fmt: skip
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)


def backticked(text: str, start: str) -> str:
    """The first `...` span of ``text`` that starts with ``start``."""
    found = re.search(rf"`({re.escape(start)}[^`]*)`", text)
    assert found, text[-3000:]
    return found.group(1)


def data_files(results: Path) -> dict[str, bytes]:
    """Every output under ``results`` but logs and benchmark TSVs (jobs that fail rewrite their own log)."""
    return {str(p.relative_to(results)): p.read_bytes() for p in results.rglob("*")
            if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(results).parts)}  # fmt: skip


# --- rows 1-7: a bad config stops before any job, naming the key in its last lines ----------------------------------
@pytest.mark.parametrize(
    "text, key",
    [
        ("grid:\n  betas: [.nan]\n", "grid.betas[0]"),  # was: AssertionError in common.smk
        ("datasets: []\n", "datasets"),  # was: jobs ran, then argparse in aggregate and claims
        ("grid:\n  betas: [1.0e-300]\n", "grid.betas[0]"),  # was: File name too long, Snakemake's traceback
        ("grid:\n  widht: [10]\n", "grid.widht"),  # was: the key on line 5 of 642 lines of schema dump
    ],
    ids=["nan-beta", "no-datasets", "tiny-beta", "misspelt-key"],
)
def test_bad_config_stops_at_plan_time_naming_the_key_last(tmp_path, text, key):
    proc = plan_with(tmp_path, text)
    err = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "Traceback" not in err and "AssertionError" not in err and "Failed validating" not in err
    tail = err.strip().splitlines()[-3:]  # the problem lines, then Snakemake's one `File ...` line
    assert any(key in line for line in tail), err
    assert len(err.strip().splitlines()) < 10, err
    assert not (tmp_path / "work/results").exists()  # nothing ran


def test_nan_and_inf_are_rejected_for_every_number_key():
    """train.divergence_factor, analysis.theory_horizon and data.parallel_tol: NaN passed the schema's bounds (it
    compares false with everything), and the run trained before a later job failed on its CLI flag."""
    bad = config_problems("train:\n  divergence_factor: .nan\nanalysis:\n  theory_horizon: .nan\n"
                          "data:\n  parallel_tol: .nan\n")  # fmt: skip
    assert [line.split(":")[0] for line in bad] == ["data.parallel_tol", "train.divergence_factor",
                                                    "analysis.theory_horizon"]  # fmt: skip
    assert config_problems("train:\n  divergence_factor: .inf\n") == [
        "train.divergence_factor: inf is not a finite number (NaN and ±inf mean nothing here)"
    ]
    assert config_problems("grid:\n  betas: [0.9]\n") == []


def test_integer_keys_are_bounded_by_what_the_files_hold():
    """Every integer key is bounded by what an int64 Parquet column (and the JSON records) can hold: by its schema
    maximum, or by configcheck for a key without one. A seed of 2**64 trained 4 packs, then aggregate died in
    pyarrow."""
    import pyarrow as pa

    from momentum_ntk import configcheck

    def walk(node: dict, where: str) -> Iterator[tuple[str, dict]]:
        if node.get("type") == "integer" or "integer" in (node.get("type") or []):
            yield where, node
        for key, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{where}.{key}".strip("."))
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{where}[]")

    keys = dict(walk(SCHEMA, ""))
    assert len(keys) >= 13 and sum("maximum" in node for node in keys.values()) >= 13, keys
    assert all(node.get("maximum", 0) <= 2**63 - 1 for node in keys.values())
    pa.array([configcheck.INT64_MAX], type=pa.int64())  # holds
    bad = config_problems("grid:\n  seeds: [18446744073709551616]\n")
    assert bad == ["grid.seeds[0]: 18446744073709551616 is greater than the maximum of 9223372036854775807"]
    unbounded = {"type": "object", "properties": {"n": {"type": "array", "items": {"type": "integer", "minimum": 2}}}}
    assert configcheck.problems({"n": [4, 2**64]}, unbounded) == [
        "n[1]: 18446744073709551616 does not fit a 64-bit integer (at most 9223372036854775807)"
    ]


def test_beta_file_names_are_short_or_rejected():
    from momentum_ntk import configcheck, names

    config = {"grid": {"betas": [0.0, 0.9, 0.90000000001, 1.2345678901234567e-06, 1e-300]}}
    bad = configcheck.name_problems(config)
    assert len(bad) == 1 and bad[0].startswith("grid.betas[4]: 1e-300 would be named") and "302 characters" in bad[0]
    assert max(len(names.beta_name(b)) for b in config["grid"]["betas"][:4]) <= names.BETA_NAME_MAX


def test_unknown_key_names_the_closest_known_one():
    assert config_problems("trian:\n  steps: 3\n") == [
        f"trian: unknown key (did you mean train?); the top level takes {', '.join(SCHEMA['properties'])}"
    ]


# --- row 8: the corrupt-input fix carries the --configfile that made results/ -----------------------------------------
@pytest.mark.slow
def test_corrupt_input_fix_works_as_typed(tiny_run, tmp_path):
    """A stage that finds a changed run file prints `snakemake --force <file> --configfile <the preset>`; typed as
    printed, it passes the foreign-config guard and rebuilds the file (was: refused, no --configfile)."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    path = repo / RUN
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x10
    path.write_bytes(bytes(bad))
    runs = sorted(str(p.relative_to(repo)) for p in (repo / "results/runs/mnist5k").glob("*/*.parquet"))
    proc = run_printed(shlex.join(["python", "-m", "momentum_ntk.aggregate", "--runs", *runs, "--out", "x.parquet"]),
                       repo)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    fix = backticked(proc.stderr, "snakemake --force")
    assert fix == f"snakemake --force {RUN} --configfile {TINY}"
    done = run_printed(fix, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert path.read_bytes() == good  # the pack retrained, bit for bit


# --- row 9: a damaged stamp is an error with its own fix ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("damage", [b'{"name": "ti', b"[]", b'{"configfiles": []}'], ids=["truncated", "list", "no-name"])
def test_damaged_stamp_stops_with_its_own_fix(tiny_run, tmp_path, damage):
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    (repo / "results/.config.json").write_bytes(damage)
    proc = snakemake(["-n", "fig2"], cwd=repo)  # config.yaml: another config, which the guard must still see
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "results/.config.json is damaged" in out, out[-3000:]
    assert "Traceback" not in out and not re.search(r"^rule \w+:", out, re.M)
    assert f"`{shlex.join(['python', '-m', 'momentum_ntk.shelve', 'results-old'])}`" in out
    fix = backticked(out, "rm results/.config.json")
    assert fix == "rm results/.config.json && snakemake"  # the fix for this run's config (config.yaml)
    proc = snakemake(["-n", "--configfile", TINY], cwd=repo)
    fix = backticked(proc.stdout + proc.stderr, "rm results/.config.json")
    done = run_printed(fix, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((repo / "results/.config.json").read_text())["name"] == "tiny"


# --- row 10: a full or read-only disk is one clean line with the recovery command ------------------------------------
@contextlib.contextmanager
def mounted(*args: str, target: Path) -> Iterator[None]:
    """``mount <args> <target>`` for the block (root only; skips the test when mounting is not possible)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs or a read-only bind mount")
    proc = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.mark.slow
def test_full_disk_is_one_clean_line_and_the_line_finishes_the_run(tiny_run, tmp_path):
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    saved = tmp_path / "saved"
    shutil.move(repo / "results", saved)
    (repo / "results").mkdir()
    with mounted("-t", "tmpfs", "-o", "size=4m", "tmpfs", target=repo / "results"):
        shutil.copytree(saved, repo / "results", dirs_exist_ok=True)
        for name in ("claims.md", "claims.json", "figures/fig1_rho_nag.png", "figures/fig1_rho_nag.pdf"):
            (repo / "results" / name).unlink()
        before = data_files(repo / "results")
        free = shutil.disk_usage(repo / "results").free
        (repo / "results/ballast").write_bytes(b"\0" * (free - 8192))
        proc = snakemake(["--configfile", TINY], cwd=repo)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "Traceback" not in out and "OSError" not in out, out[-4000:]
        line = next(x for x in out.splitlines() if x.startswith("momentum-ntk: the disk holding results/ is full"))
        assert f"`snakemake --configfile {TINY}`" in line
        errors = [x for x in out.splitlines() if x.startswith("error: results/") and "no space left on device" in x]
        assert errors and all(f"`snakemake --configfile {TINY}`" in x for x in errors), out[-4000:]
        after = data_files(repo / "results")
        assert {k: after.get(k) for k in before} == before  # nothing finished was lost or changed
        (repo / "results/ballast").unlink()
        done = run_printed(backticked(line, "snakemake"), repo)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (repo / "results/claims.md").read_bytes() == (saved / "claims.md").read_bytes()


@pytest.mark.slow
def test_read_only_results_is_one_clean_line(tiny_run, tmp_path):
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    (repo / "results/claims.md").unlink()
    results = str(repo / "results")
    with mounted("--bind", results, target=repo / "results"):
        subprocess.run(["mount", "-o", "remount,ro,bind", results], check=True)
        proc = snakemake(["--configfile", TINY], cwd=repo)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and not re.search(r"^rule \w+:", out, re.M)
    line = next(x for x in out.splitlines() if "results/ in" in x and "is read-only" in x)
    assert "remount" in line and f"`snakemake --configfile {TINY}`" in line


def test_write_error_is_a_clean_cli_error(tmp_path, capsys, monkeypatch):
    """A stage that hits ENOSPC anywhere exits 2 with one line naming the file and the recovery command."""
    import errno

    from momentum_ntk import io
    from momentum_ntk.entry import cli

    monkeypatch.chdir(tmp_path)

    def main(argv):
        with io.atomic_path(tmp_path / "out.parquet") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")

    assert cli(main, []) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: {tmp_path / 'out.parquet'}: cannot write it, no space left" in err
    assert "`snakemake` (with the --configfile you ran with)" in err
    assert not list(tmp_path.iterdir())  # no partial file, no hash record

    def arrow(argv):
        raise OSError("IOError: [errno 28] Error writing bytes to file. Detail: No space left on device")

    assert cli(arrow, []) == 2 and "no space left on device" in capsys.readouterr().err


# --- row 11: the device error names the config key, the torch build and the install fix -----------------------------
def test_cuda_on_a_cpu_only_torch_names_the_key_the_build_and_the_fix(monkeypatch):
    import torch

    from momentum_ntk.errors import UserError
    from momentum_ntk.lease import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(UserError) as exc:
        resolve_device("cuda")
    text = str(exc.value)
    assert "config key train.device is 'cuda'" in text and "a CPU-only build" in text
    assert "--device" not in text  # the stage flag is not what the user sets
    assert re.search(r"`pip install torch==\d+\.\d+\.\d+ --index-url https://download.pytorch.org/whl/cu128`", text)
    assert """--config 'train={"device": "cpu"}'`""" in text
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.raises(UserError, match=r"a CUDA 12\.8 build, but it sees no CUDA device: check the NVIDIA driver"):
        resolve_device("cuda:1")


# --- row 12: tables print β as losslessly as the file names -----------------------------------------------------------
@pytest.mark.slow
def test_tables_print_distinct_betas_distinctly(tmp_path):
    """β = 0.9 and 0.90000000001 are two files and, now, two rows printed apart in summary.csv, theory_rates_*.csv
    and .md, table1.md and claims.md (%g and %.10g printed both as 0.9)."""
    extra = tmp_path / "betas.yaml"
    extra.write_text("name: betas\ngrid:\n  betas: [0.9, 0.90000000001]\n  seeds: [0]\ntrain:\n  steps: 20\n"
                     "analysis:\n  report_steps: [10, 20]\n")  # fmt: skip
    proc = snakemake(["all_runs", "all_theory", "results/figures/table1.md", "results/claims.md", "-s",
                      str(ROOT / "Snakefile"), "-d", str(tmp_path / "w"), "--cores", "2", "--configfile",
                      str(ROOT / TINY), str(extra)], cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp_path / "w/results"
    for name in ("aggregate/mnist5k/summary.csv", "figures/theory_rates_mnist5k.csv", "figures/theory_rates_mnist5k.md",
                 "figures/table1.md", "claims.md"):  # fmt: skip
        text = (res / name).read_text()
        assert re.search(r"(?<![\d.])0\.9(?![\d])", text) and "0.90000000001" in text, name
    assert "0.90000000001" in (res / "figures/table1.csv").read_text()


def test_beta_text_is_the_file_name_and_keeps_the_usual_spelling():
    import pandas as pd

    from momentum_ntk.names import beta_text, with_beta_text

    assert [beta_text(b) for b in (0.9, 0.97, 0.99, 0.0, 0.90000000001, 1e-05)] == [
        "0.9", "0.97", "0.99", "0", "0.90000000001", "0.00001"]  # fmt: skip
    df = pd.DataFrame({"beta": [0.9, 0.90000000001, float("nan")], "x": [1.0, 2.0, 3.0]})
    assert with_beta_text(df).to_csv(index=False, float_format="%.10g") == (
        "beta,x\n0.9,1\n0.90000000001,2\n,3\n"
    )


# --- row 13: one flipped bit in a run's Parquet is an error, never other numbers ------------------------------------
def test_bit_flips_in_a_run_file_are_caught():
    """200 single-bit flips of a run Parquet (benchmarks/bitflip.py): read without the writer's hash record, some
    return other values silently (what stages read before); with it, every one is an error naming the file and the
    rebuild command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bitflip", ROOT / "benchmarks/bitflip.py")
    bitflip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bitflip)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        counts = bitflip.trial(bitflip.synthetic_run(Path(tmp)), trials=200, seed=0)
    assert counts["without hash"]["silent"] > 0  # the corruption the issue measured (43 of 200 there)
    assert counts["with hash"] == {"caught": 200, "same": 0, "silent": 0, "crash": 0}


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".npz", ".npy"])
def test_every_checked_reader_verifies_the_recorded_hash(tmp_path, suffix):
    import numpy as np
    import pandas as pd

    from momentum_ntk import io
    from momentum_ntk.errors import UserError

    path = tmp_path / f"out{suffix}"
    write = {".parquet": lambda: io.write_parquet(path, pd.DataFrame({"a": [1.0, 2.0]})),
             ".json": lambda: io.write_json(path, {"a": 12345}),
             ".npz": lambda: _save(path, lambda fh: np.savez(fh, X=np.arange(4.0))),
             ".npy": lambda: _save(path, lambda fh: np.save(fh, np.arange(4.0)))}[suffix]  # fmt: skip
    read = {".parquet": lambda: io.read_table(path, what="t", fix="FIX"),
            ".json": lambda: io.read_record(path, what="t", fix="FIX"),
            ".npz": lambda: io.read_npz(path, ("X",), what="t", fix="FIX"),
            ".npy": lambda: io.read_npy(path, what="t", fix="FIX")}[suffix]  # fmt: skip
    write()
    record = io.hash_record_path(path)
    assert record.read_text() == f"{io.sha256(path)}  {path.name}\n"
    read()  # intact: reads
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}: t changed after the job .* FIX"):
        read()
    record.write_text("garbage\n")
    with pytest.raises(UserError, match="is damaged; FIX"):
        read()


def _save(path: Path, save) -> None:
    from momentum_ntk import io

    with io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        save(fh)


# --- row 14: the config-switch fix keeps the tracked files in place --------------------------------------------------
@pytest.mark.slow
def test_config_switch_fix_keeps_tracked_files(tiny_run, tmp_path):
    """The foreign-config guard prints `python -m momentum_ntk.shelve`; typed in a git clone it moves the outputs to
    results-tiny/, keeps the tracked results/README.md in place (git sees no change), and config.yaml runs."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    shutil.copy2(ROOT / ".gitignore", repo / ".gitignore")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=repo, check=True)
    assert subprocess.run(["git", "ls-files", "results"], cwd=repo, capture_output=True, text=True).stdout == (
        "results/README.md\n")  # fmt: skip
    readme = (repo / "results/README.md").read_bytes()
    outputs = data_files(repo / "results")
    proc = snakemake(["-n", "fig2"], cwd=repo)
    fix = backticked(proc.stdout + proc.stderr, "python -m momentum_ntk.shelve")
    assert fix == "python -m momentum_ntk.shelve"
    done = run_printed(fix, repo)
    assert done.returncode == 0 and "results-tiny/" in done.stdout, done.stderr
    assert (repo / "results/README.md").read_bytes() == readme and os.listdir(repo / "results") == ["README.md"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status == "", status
    moved = data_files(repo / "results-tiny")
    assert moved == {k: v for k, v in outputs.items() if k != "README.md"}  # every output, whole, with its stamp
    again = snakemake(["-n", "results/ntk/mnist5k/summary.json"], cwd=repo)
    assert again.returncode == 0 and "holds the outputs of config" not in again.stdout + again.stderr
    refused = run_printed("python -m momentum_ntk.shelve results-tiny", repo)
    assert refused.returncode == 2 and "results-tiny exists already, nothing was moved" in refused.stderr


# --- row 15: a report over missing outputs says which command completes them ---------------------------------------
@pytest.mark.slow
def test_report_over_missing_outputs_names_the_command_that_completes_them(tiny_run, tmp_path):
    """As after `apt-get install dataset-fashion-mnist` then `snakemake fig2`: a figure the report shows does not
    exist. The report stops naming it and the command that makes it; that command, then the report, succeed."""
    repo = clone_with_results(tiny_run, tmp_path / "repo")
    (repo / "results/figures/fig3_maxdist_hb_mnist5k.png").unlink()
    proc = snakemake(["--report", "report.html", "--configfile", TINY], cwd=repo)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not (repo / "report.html").exists()
    assert "results/figures/fig3_maxdist_hb_mnist5k.png" in out and "marked for report" not in out, out[-3000:]
    fix = backticked(out, "snakemake")
    assert fix == f"snakemake --configfile {TINY}"
    done = run_printed(fix, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    report = snakemake(["--report", "report.html", "--configfile", TINY], cwd=repo)
    assert report.returncode == 0 and (repo / "report.html").stat().st_size > 100_000, report.stderr[-3000:]
