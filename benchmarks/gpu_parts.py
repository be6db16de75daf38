"""The measured parts of benchmarks/gpu_check.py (its docstring says what each measures): one function per part,
each taking a :class:`gpu_common.Ctx` and returning a JSON-able dict with a one-line "summary". :data:`PARTS` holds
them with their shares of the time budget. Each part runs in a child process of its own.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_common import (  # noqa: E402  (benchmarks/ is on sys.path: the script's own folder)
    Ctx,
    accuracy_problem,
    ROOT,
    child_env,
    compare_runs,
    engine_kwargs,
    frames_identical,
    free_device_memory,
    gemm_time,
    note,
    pack_kwargs,
    row_gemm_time,
    rss_mb,
    run_bounded,
    run_specs,
    sync,
    tail,
    timed_command,
    train_step_time,
    unit_rows,
)

if TYPE_CHECKING:  # the parent process stays stdlib-only; the parts import the scientific stack themselves
    import pandas as pd



def part_env(ctx: Ctx) -> dict[str, Any]:
    """The resolved device, torch and CUDA versions and the GPU's name (CUDA initialised here, in a child)."""
    import torch

    from momentum_ntk import lease

    device = lease.resolve_device(ctx.device)
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    info = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": gpu,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if gpu else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    return info | {"summary": f"{device} ({gpu or 'no GPU'}), torch {torch.__version__}, CUDA {torch.version.cuda}"}


def part_accuracy(ctx: Ctx) -> dict[str, Any]:
    """NAG and HB in float32 and float64 on the device against float64 on the CPU (the reference)."""
    from momentum_ntk import loop

    s = ctx.sizes
    X, y, W0, a, specs, gram_every = accuracy_problem(s)

    def run(device: str, dtype: str) -> list[pd.DataFrame]:
        return loop.train_many(X, y, W0, a, specs, steps=s.small_steps, gram_every=gram_every, dtype=dtype,
                                device=device, **engine_kwargs("direct"))  # fmt: skip

    ref = run("cpu", "float64")
    variants = {}
    for dtype in ("float32", "float64"):
        t0 = time.perf_counter()
        got = run(ctx.device, dtype)
        variants[dtype] = {"device": ctx.device, "wall_s": time.perf_counter() - t0} | compare_runs(ref, got)
        note(f"accuracy {ctx.device} {dtype}: {variants[dtype]}")
    v32, v64 = variants["float32"]["loss_rel_diff"], variants["float64"]["loss_rel_diff"]
    return {
        "n": s.small_n, "d": s.small_d, "m": s.small_m, "steps": s.small_steps, "gram_every": gram_every,
        "eta": specs[0].eta, "beta": 0.9, "reference": "cpu float64",
        "final_loss": {sp.method: float(df["loss"].iloc[-1]) for sp, df in zip(specs, ref)},
        "initial_loss": float(ref[0]["loss"].iloc[0]),
        "variants": variants,
        "summary": f"loss vs CPU float64: {ctx.device} float32 {v32:.1e}, float64 {v64:.1e} (max relative)",
    }  # fmt: skip


def part_step_roofline(ctx: Ctx) -> dict[str, Any]:
    """Per width: the two bare GEMMs against one train_many step, both in ms and TFLOP/s, and their ratio."""
    from momentum_ntk import devices, engine, model

    s = ctx.sizes
    devices.strict_float32()
    X, y = unit_rows(s.big_n, s.big_d)
    rows = []
    for m in s.widths:
        W0, a = model.init_params(s.big_d, m, 0)
        t_gemm = gemm_time(X, W0, ctx.device, s.gemm_reps)
        note(f"step_roofline m={m}: two GEMMs {1e3 * t_gemm:.3f} ms")
        specs = [engine.RunSpec("nag", 0.1 / s.big_n, 0.99)]
        t_step, diverged = train_step_time(X, y, W0, a, specs, ctx, s.step_steps, s.step_reps, "direct")
        flop = 4 * s.big_n * s.big_d * m
        rows.append({
            "m": m,
            "roofline_ms": 1e3 * t_gemm,
            "roofline_tflops": flop / t_gemm / 1e12,
            "step_ms": 1e3 * t_step,
            "step_tflops": flop / t_step / 1e12 if t_step > 0 else math.nan,
            "fraction": t_gemm / t_step if t_step > 0 else math.nan,
            "diverged": diverged,
        })  # fmt: skip
        note(f"step_roofline: {rows[-1]}")
        free_device_memory(ctx)
    line = "; ".join(f"m={r['m']}: step {r['step_ms']:.2f} ms, {r['step_tflops']:.2f} TFLOP/s, "
                     f"{r['fraction']:.2f} of roofline" for r in rows)  # fmt: skip
    return {"n": s.big_n, "d": s.big_d, "steps": s.step_steps, "reps": s.step_reps, "widths": rows, "summary": line}


def part_pack_speedup(ctx: Ctx) -> dict[str, Any]:
    """Per pack size k: one step of k batched runs, per run and as a speed-up over k single runs."""
    from momentum_ntk import model

    s = ctx.sizes
    X, y = unit_rows(s.big_n, s.big_d)
    W0, a = model.init_params(s.big_d, s.pack_m, 0)
    rows, t1 = [], math.nan
    for k in s.pack_ks:
        t_k, diverged = train_step_time(X, y, W0, a, run_specs(k, 0.1 / s.big_n), ctx, s.pack_steps, s.step_reps,
                                        "direct")
        t1 = t_k if k == 1 else t1
        rows.append({"k": k, "pack_step_ms": 1e3 * t_k, "per_run_ms": 1e3 * t_k / k,
                     "speedup": k * t1 / t_k if t_k > 0 else math.nan, "diverged": diverged})  # fmt: skip
        note(f"pack_speedup: {rows[-1]}")
        free_device_memory(ctx)
    line = "; ".join(f"k={r['k']}: {r['per_run_ms']:.2f} ms/run-step, {r['speedup']:.2f}x" for r in rows)
    return {"n": s.big_n, "d": s.big_d, "m": s.pack_m, "steps": s.pack_steps, "pack_size_keyword": bool(pack_kwargs(1)),
            "packs": rows, "summary": line}  # fmt: skip


def part_pack_identity(ctx: Ctx) -> dict[str, Any]:
    """Whether 4 runs trained in one pack give exactly the frames of the same runs trained one at a time."""
    from momentum_ntk import loop, model

    s = ctx.sizes
    X, y = unit_rows(s.small_n, s.small_d, seed=1)
    W0, a = model.init_params(s.small_d, s.small_m, 1)
    specs = run_specs(4, 0.1 / s.small_n)
    kw = dict(steps=s.identity_steps, gram_every=s.identity_gram_every, dtype="float32", device=ctx.device,
              **engine_kwargs("direct"))
    packed = loop.train_many(X, y, W0, a, specs, **kw, **pack_kwargs(len(specs)))
    alone = [loop.train_many(X, y, W0, a, [sp], **kw)[0] for sp in specs]
    runs = [
        {"method": sp.method, "eta": sp.eta, "beta": sp.beta, "identical": frames_identical(p, q),
         "attrs_equal": p.attrs == q.attrs, "loss_max_abs_diff": float((p["loss"] - q["loss"]).abs().max())}
        for sp, p, q in zip(specs, packed, alone)
    ]  # fmt: skip
    identical = all(r["identical"] and r["attrs_equal"] for r in runs)
    return {"n": s.small_n, "d": s.small_d, "m": s.small_m, "steps": s.identity_steps, "device": ctx.device,
            "identical": identical, "runs": runs,
            "summary": f"4 packed runs bit-identical to each alone on {ctx.device}: {identical}"}  # fmt: skip


def part_rowspace(ctx: Ctx) -> dict[str, Any]:
    """The row-space engine on the device: accuracy against the CPU float64 direct run, packed vs alone, and its step
    against the direct step and its own GEMM roofline, with each engine's peak GPU memory."""
    import torch

    from momentum_ntk import devices, engine, loop, model

    s = ctx.sizes
    devices.strict_float32()
    # accuracy, as the accuracy part measures it
    X, y, W0, a, specs, gram_every = accuracy_problem(s)
    kw = dict(steps=s.small_steps, gram_every=gram_every)
    ref = loop.train_many(X, y, W0, a, specs, **kw, dtype="float64", device="cpu", engine="direct")
    accuracy = {}
    for dtype in ("float32", "float64"):
        got = loop.train_many(X, y, W0, a, specs, **kw, dtype=dtype, device=ctx.device, engine="rowspace")
        accuracy[dtype] = compare_runs(ref, got) | {"engine": got[0].attrs.get("engine")}
        note(f"rowspace accuracy {ctx.device} {dtype}: {accuracy[dtype]}")
    # packed vs alone
    Xi, yi = unit_rows(s.small_n, s.small_d, seed=1)
    Wi, ai = model.init_params(s.small_d, s.small_m, 1)
    ispecs = run_specs(4, 0.1 / s.small_n)
    ikw = dict(steps=s.identity_steps, gram_every=s.identity_gram_every, dtype="float32", device=ctx.device,
               engine="rowspace")  # fmt: skip
    packed = loop.train_many(Xi, yi, Wi, ai, ispecs, **ikw, pack_size=len(ispecs))
    alone = [loop.train_many(Xi, yi, Wi, ai, [sp], **ikw)[0] for sp in ispecs]
    identical = all(frames_identical(p, q) and p.attrs == q.attrs for p, q in zip(packed, alone))
    note(f"rowspace pack identity: {identical}")
    # step times
    steps = []
    for n, m in s.row_sizes:
        Xs, ys = unit_rows(n, s.big_d)
        W0s, a_s = model.init_params(s.big_d, m, 0)
        pre = model.preactivations(Xs, W0s)
        nag = [engine.RunSpec("nag", 0.1 / n, 0.99)]
        row = {"n": n, "d": s.big_d, "m": m}
        for eng, w in (("direct", W0s), ("rowspace", pre)):
            if ctx.cuda:
                sync(ctx.device)
                torch.cuda.reset_peak_memory_stats(ctx.device)
            t, diverged = train_step_time(Xs, ys, w, a_s, nag, ctx, s.step_steps, s.step_reps, eng)
            row[f"{eng}_ms"] = 1e3 * t
            row[f"{eng}_diverged"] = diverged
            row[f"{eng}_peak_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
            free_device_memory(ctx)
        t_gemm = row_gemm_time(n, m, ctx.device, s.gemm_reps)
        row |= {
            "row_gemm_ms": 1e3 * t_gemm,
            "row_gemm_tflops": 2 * n * n * m / t_gemm / 1e12,
            "row_fraction": t_gemm / (row["rowspace_ms"] / 1e3) if row["rowspace_ms"] > 0 else math.nan,
            "speedup": row["direct_ms"] / row["rowspace_ms"] if row["rowspace_ms"] > 0 else math.nan,
        }
        steps.append(row)
        note(f"rowspace step: {row}")
        free_device_memory(ctx)
    line = (f"float32 loss vs CPU float64 {accuracy['float32']['loss_rel_diff']:.1e}, float64 "
            f"{accuracy['float64']['loss_rel_diff']:.1e}; packed identical {identical}; "
            + "; ".join(f"n={r['n']} m={r['m']}: {r['speedup']:.1f}x direct, {r['row_fraction']:.2f} of its roofline"
                        for r in steps))  # fmt: skip
    return {"accuracy": accuracy, "reference": "cpu float64 direct", "n": s.small_n, "d": s.small_d, "m": s.small_m,
            "pack_identical": identical, "steps": steps, "summary": line}  # fmt: skip


def part_ntk_eigh(ctx: Ctx) -> dict[str, Any]:
    """H∞ (float64) and its eigendecomposition on the device: times, peak GPU memory, peak RSS, sanity checks."""
    import numpy as np
    import torch

    from momentum_ntk import gram, ntk

    s = ctx.sizes
    X, _ = unit_rows(s.ntk_n, s.ntk_d, seed=2)
    rss_before = rss_mb()
    t0 = time.perf_counter()
    H = gram.ntk_gram(X)
    t_gram = time.perf_counter() - t0
    note(f"ntk_eigh: H∞ ({s.ntk_n}, {s.ntk_n}) built in {t_gram:.2f} s, peak RSS {ntk.peak_rss_mb():.0f} MiB")
    gram.ntk_spectrum(gram.ntk_gram(X[:64]), vectors=True, device=ctx.device)  # load the solver (cuSOLVER) first
    if ctx.cuda:
        sync(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
    gpu_base = torch.cuda.memory_allocated(ctx.device) if ctx.cuda else 0
    t0 = time.perf_counter()
    w, V = gram.ntk_spectrum(H, vectors=True, device=ctx.device)
    t_eigh = time.perf_counter() - t0
    note(f"ntk_eigh: eigh on {ctx.device} in {t_eigh:.2f} s")
    gpu_peak = (torch.cuda.max_memory_allocated(ctx.device) - gpu_base) / 2**30 if ctx.cuda else None
    residual = max(float(np.linalg.norm(H @ V[:, i] - w[i] * V[:, i])) for i in (0, -1))
    n = s.ntk_n
    gpu = "-" if gpu_peak is None else f"{gpu_peak:.2f} GiB"
    line = (f"n={n}: H∞ {t_gram:.3g} s, eigh {t_eigh:.3g} s on {ctx.device}, peak GPU {gpu}, "
            f"peak RSS {ntk.peak_rss_mb() / 1024:.2f} GiB")  # fmt: skip
    return {
        "n": n, "d": s.ntk_d, "device": ctx.device,
        "gram_s": t_gram, "eigh_s": t_eigh,
        "gpu_peak_gib": gpu_peak, "matrix_gib": n * n * 8 / 2**30,
        "rss_before_mb": rss_before, "peak_rss_mb": ntk.peak_rss_mb(),
        "lambda0": float(w[0]), "lambda_max": float(w[-1]),
        "trace_rel_err": abs(float(w.sum()) - n / 2) / (n / 2),
        "eigpair_residual": residual,
        "summary": line,
    }  # fmt: skip


def train_job_command(ctx: Ctx, data: Path, summary: Path) -> list[str]:
    """`python -m momentum_ntk.train` for one NAG run of 0 steps on ``data``, with the flags this CLI has."""
    from momentum_ntk import train

    flags = {opt for action in train.build_parser()._actions for opt in action.option_strings}
    s = ctx.sizes
    cmd = [sys.executable, "-m", "momentum_ntk.train", "--data", str(data), "--ntk-summary", str(summary),
           "--dataset", "gpu_check", "--method", "nag", "--width", str(s.job_m), "--eta-divisor", "10",
           "--beta", "0.9", "--steps", "0", "--device", ctx.device,
           "--out", str(ctx.scratch / "run.parquet"), "--meta", str(ctx.scratch / "run.json")]  # fmt: skip
    if "--no-progress" in flags:
        cmd.append("--no-progress")
    if "--gpus-held" in flags and ctx.cuda:
        cmd += ["--gpus-held", "1"]
    return cmd


def part_job_fixed_cost(ctx: Ctx) -> dict[str, Any]:
    """End-to-end seconds of a 0-step train job, of importing torch and of creating a CUDA context."""
    import numpy as np

    s = ctx.sizes
    X, y = unit_rows(s.job_n, s.job_d, seed=3)
    data, summary = ctx.scratch / "data.npz", ctx.scratch / "summary.json"
    np.savez(data, X=X, y=y)
    summary.write_text(json.dumps({"eta": {"10": 1e-3}}))
    env = child_env(MOMENTUM_NTK_LOCK_DIR=str(ctx.scratch / "locks"))
    job = [timed_command(train_job_command(ctx, data, summary), ctx, "train", env) for _ in range(s.job_reps)]
    imp = [timed_command([sys.executable, "-c", "import torch"], ctx, "import", env) for _ in range(s.job_reps)]
    ctx_cmd = [sys.executable, "-c", f"import torch; torch.zeros(1, device={ctx.device!r}); "
               f"torch.cuda.synchronize()"]  # fmt: skip
    cuda = [timed_command(ctx_cmd, ctx, "cuda", env) for _ in range(s.job_reps)] if ctx.cuda else None
    meta = json.loads((ctx.scratch / "run.json").read_text())
    med = statistics.median
    line = (f"train --steps 0: {med(job):.2f} s; import torch {med(imp):.2f} s; "
            f"CUDA context {'-' if cuda is None else f'{med(cuda) - med(imp):.2f} s'} (medians)")  # fmt: skip
    return {
        "n": s.job_n, "d": s.job_d, "m": s.job_m, "device": ctx.device,
        "train_job_s": med(job), "train_job_all_s": job,
        "import_torch_s": med(imp), "import_torch_all_s": imp,
        "import_torch_cuda_context_s": None if cuda is None else med(cuda), "cuda_context_all_s": cuda,
        "cuda_context_s": None if cuda is None else med(cuda) - med(imp),
        "train_loop_wall_s": meta.get("wall_s"), "train_cuda_init_s": meta.get("cuda_init_s"),
        "summary": line,
    }  # fmt: skip


def copy_tracked_files(dest: Path) -> int:
    """Copy the repository's tracked files (as they are in the working tree) under ``dest``; returns their number."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    count = 0
    for name in filter(None, out.split(b"\0")):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
            count += 1
    return count


def expected_runs(preset: dict[str, Any]) -> int:
    """Number of training runs of a preset: datasets × methods × widths × η divisors × β × seeds."""
    g = preset["grid"]
    return math.prod(len(x) for x in (preset["datasets"], g["methods"], g["widths"], g["eta_divisors"], g["betas"],
                                      g["seeds"]))  # fmt: skip


def part_tiny_preset(ctx: Ctx) -> dict[str, Any]:
    """The tiny preset end to end with train.device overridden: wall, run files, what the run sidecars report."""
    import yaml

    repo = ctx.scratch / "repo"
    files = copy_tracked_files(repo)
    (repo / "override.yaml").write_text(yaml.safe_dump({"train": {"device": ctx.device}}))
    preset = yaml.safe_load((repo / "workflow/presets/tiny.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "--cores", "4", "--configfile", "workflow/presets/tiny.yaml",
           "override.yaml"] + (["--resources", "gpu=1"] if ctx.cuda else [])  # fmt: skip
    log = ctx.scratch / "snakemake.log"
    env = child_env(MOMENTUM_NTK_LOCK_DIR=str(ctx.scratch / "locks"))
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), env["PYTHONPATH"]])
    rc, wall = run_bounded(cmd, ctx.limit_s - 10, log, cwd=repo, env=env)
    runs = sorted((repo / "results/runs").rglob("*.parquet"))
    metas = [json.loads(p.with_suffix(".json").read_text()) for p in runs if p.with_suffix(".json").is_file()]
    devices = sorted({str(m.get("device")) for m in metas})
    steps = sorted({int(m.get("steps", -1)) for m in metas})
    merged = bool(metas) and steps == [preset["train"]["steps"]] and all(d.startswith(ctx.device) for d in devices)
    res = {
        "status": "ok" if rc == 0 else ("timeout" if rc is None else "error"),
        "command": " ".join(["snakemake", *cmd[3:]]), "files_copied": files, "snakemake_wall_s": wall,
        "snakemake_rc": rc,
        "run_files": len(runs), "expected_run_files": expected_runs(preset),
        "run_devices": devices, "run_steps": steps, "config_merged": merged,
        "summary": f"{len(runs)}/{expected_runs(preset)} run files in {wall:.0f} s on {','.join(devices) or '-'}",
    }  # fmt: skip
    if rc != 0:
        res["error"] = tail(log)
    return res


PARTS: dict[str, tuple[float, Callable[[Ctx], dict[str, Any]]]] = {
    # name: (share of the budget, function); the shares sum below 1, the rest is the parent's own margin
    "env": (0.06, part_env),
    "accuracy": (0.07, part_accuracy),
    "step_roofline": (0.10, part_step_roofline),
    "pack_speedup": (0.08, part_pack_speedup),
    "pack_identity": (0.05, part_pack_identity),
    "rowspace": (0.07, part_rowspace),
    "ntk_eigh": (0.18, part_ntk_eigh),
    "job_fixed_cost": (0.12, part_job_fixed_cost),
    "tiny_preset": (0.24, part_tiny_preset),
}


MEASURED = [name for name in PARTS if name != "env"]
