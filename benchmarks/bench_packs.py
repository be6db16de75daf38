"""Packed train jobs against one job per run, side by side in one run: the quick preset's wall time and the fixed
cost per run.

    python benchmarks/bench_packs.py                          # baseline: the last one-job-per-run commit
    python benchmarks/bench_packs.py --baseline-rev HEAD~3 --cores 2 --out bench_packs.json
    python benchmarks/bench_packs.py --preset my_preset.yaml --designs baseline pack

Three designs, each in a fresh scratch folder, one after another on the same machine:

| design   | what                                                                                          |
| -------- | --------------------------------------------------------------------------------------------- |
| baseline | the workflow at ``--baseline-rev`` (a git worktree): one train and one theory job per run, λ0 of the tracked rows by an ``eigvalsh`` in every job, a host sync every step |
| run      | this tree with ``train.granularity: run``: one job per run, λ0 from the ntk stage           |
| pack     | this tree as configured (``train.granularity: pack``): one job per (dataset, width, seed)  |

For each: the whole quick preset's wall time (``snakemake --cores N --configfile workflow/presets/quick.yaml``), then
the fixed cost per run: one train job of the preset's largest pack (mnist5k, every width) is run as a process and
``(process wall − training wall recorded in its sidecars) / runs in the job`` is what each run pays for start-up
(interpreter, imports, data load, λ0, writes). Ratios are against the baseline, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "099039c"  # the last commit with one train job per run


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 3600) -> float:
    """Run ``cmd``; return its wall seconds; raise with the output's tail when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - t0


def preset_wall(tree: Path, workdir: Path, cores: int, preset: Path, extra: list[str]) -> float:
    """Wall seconds of the whole preset from a clean folder (data, ntk, train, theory, figures, claims)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "-d", str(workdir), "--cores", str(cores),
           "--configfile", str(tree / "config.yaml"), str(preset), *extra]  # fmt: skip
    return sh(cmd, cwd=tree)


def fixed_cost(tree: Path, data_dir: Path, runs: list[tuple[str, int, float]], width: int, steps: int,
               reps: int) -> dict:
    """Seconds per run outside training, for one job of ``runs`` (a pack; one run when len(runs) == 1)."""
    scratch = Path(tempfile.mkdtemp(prefix="fixed-"))
    outs = [scratch / f"r{i}.parquet" for i in range(len(runs))]
    cmd = [sys.executable, "-m", "momentum_ntk.train", "--data", str(data_dir / "results/data/mnist5k.npz"),
           "--ntk-summary", str(data_dir / "results/ntk/mnist5k/summary.json"), "--dataset", "mnist5k",
           "--width", str(width), "--seed", "0", "--steps", str(steps), "--gram-every", "50", "--device", "cpu",
           "--threads", "1", "--no-progress", "--method", *[r[0] for r in runs],
           "--eta-divisor", *[str(r[1]) for r in runs], "--beta", *[str(r[2]) for r in runs],
           "--out", *map(str, outs), "--meta", *[str(p.with_suffix(".json")) for p in outs]]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    per_run = []
    for _ in range(reps):
        wall = sh(cmd, cwd=tree, env=env)
        train_s = json.loads(outs[0].with_suffix(".json").read_text())["wall_s"]  # the job's training time
        per_run.append((wall - train_s) / len(runs))
    shutil.rmtree(scratch)
    return {"runs_per_job": len(runs), "fixed_s_per_run": min(per_run), "all": per_run}


def baseline_tree(rev: str) -> Path:
    """A git worktree of ``rev`` in a scratch folder (removed at the end)."""
    path = Path(tempfile.mkdtemp(prefix="baseline-")) / "tree"
    sh(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision with one train job per run")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--preset", type=Path, default=ROOT / "workflow/presets/quick.yaml",
                    help="the preset every design runs (over its own config.yaml)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each fixed-cost job (minimum kept)")
    ap.add_argument("--designs", nargs="+", choices=("baseline", "run", "pack"), default=["baseline", "run", "pack"],
                    help="which designs to run (baseline and pack are required for the ratios)")
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()

    cfg = yaml.safe_load(args.preset.read_text())
    grid = cfg["grid"]
    pack = [(m, c, b) for m in grid["methods"] for c in grid["eta_divisors"] for b in grid["betas"]]
    width = max(grid["widths"])
    base = baseline_tree(args.baseline_rev)
    scratch = Path(tempfile.mkdtemp(prefix="bench-packs-"))
    res: dict[str, dict] = {}
    try:
        designs = {"baseline": (base, []), "run": (ROOT, ["--config", "train={granularity: run}"]), "pack": (ROOT, [])}
        designs = {k: v for k, v in designs.items() if k in set(args.designs) | {"baseline", "pack"}}
        for name, (tree, extra) in designs.items():
            print(f"{name}: quick preset ...", flush=True)
            res[name] = {"preset_wall_s": preset_wall(tree, scratch / name, args.cores, args.preset.resolve(), extra)}
            print(f"{name}: quick preset {res[name]['preset_wall_s']:.0f} s", flush=True)
        for name, tree, runs in (("baseline", base, pack[:1]), ("run", ROOT, pack[:1]), ("pack", ROOT, pack)):
            if name in res:
                res[name] |= fixed_cost(tree, scratch / "pack", runs, width, cfg["train"]["steps"], args.reps)
    finally:
        sh(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
        shutil.rmtree(scratch, ignore_errors=True)

    b = res["baseline"]
    print(f"\npreset {args.preset}, --cores {args.cores}, baseline {args.baseline_rev}")
    print(f"{'design':10} {'wall s':>8} {'× baseline':>11} {'fixed s/run':>12} {'× baseline':>11}")
    for name, r in res.items():
        print(f"{name:10} {r['preset_wall_s']:8.0f} {r['preset_wall_s'] / b['preset_wall_s']:11.2f} "
              f"{r['fixed_s_per_run']:12.2f} {r['fixed_s_per_run'] / b['fixed_s_per_run']:11.2f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"cores": args.cores, "baseline_rev": args.baseline_rev,
                                        "preset": str(args.preset), **res}, indent=2))


if __name__ == "__main__":
    main()
