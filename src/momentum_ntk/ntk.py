"""NTK stage: the infinite-width Gram matrix H∞ of eq. (10), its spectrum, the learning rates, and a Lemma 2 check.

Run::

    PYTHONPATH=src python -m momentum_ntk.ntk --data results/data/mnist5k.npz --dataset mnist5k \\
        --eta-divisors 10 20 --widths 1000 2000 4000 8000 --gap-max-n 2000 --gap-seed 0 \\
        --eigvec-dtype float32 --device auto --threads 2 \\
        --spectrum results/ntk/mnist5k/spectrum.parquet --summary results/ntk/mnist5k/summary.json \\
        --eigvecs results/ntk/mnist5k/eigvecs.npy --gap results/ntk/mnist5k/finite_width.parquet \\
        --plot results/ntk/mnist5k/spectrum.png

Math: :mod:`momentum_ntk.gram` (H∞ of eq. 10, λ0, λm, the learning rates, Lemma 2's gap).

Outputs: ``spectrum.parquet`` (k int64, 0 = smallest; eigenvalue float64, ascending), ``summary.json`` (keys in
docs/CONTRACT.md plus ``trace``, ``trace_over_half_n``, ``max_offdiag_cosine``, ``closest_pair``, ``eigh_driver``,
``threads`` and ``phase_s``: seconds for gram (closest pair + H∞), eigh, write, gap), ``eigvecs.npy`` ((n, n),
column k is the unit eigenvector of eigenvalue k, in ``--eigvec-dtype``), ``finite_width.parquet`` (one row per
width, see :func:`finite_width_gap`) and ``spectrum.png``.

Cost (Fashion-MNIST classes 0/1, n = 12,000, 2 busy cores): H∞ in place is n²·8 B = 1.15 GB; the eigenvectors
with the default ``evr`` driver add one more (n, n) array (peak ≈ 2.6 GB RSS), ``evd`` needs 2n² workspace on top
(peak ≈ 3.7 GB) and was slower here; eigenvalues alone stay at ≈ 1.6 GB.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momentum_ntk import defaults, io
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.gram import (
    EIGH_DRIVERS,
    PARALLEL_COS,
    finite_width_gap,
    lambda0_of_rows,
    learning_rates,
    lemma_constants,
    max_offdiag_cosine,
    ntk_gram,
    ntk_spectrum,
    subsample_rows,
    thread_limit,
)

# ----------------------------------------------------------------------------------------------------------------
# Input, output, plot
# ----------------------------------------------------------------------------------------------------------------


def write_eigvecs(path: str | Path, V: np.ndarray, dtype: str) -> None:
    """Save eigenvectors (n, n), column k for eigenvalue k, as ``.npy`` in ``dtype``, atomically."""
    with io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, V.astype(dtype, copy=False))


def plot_spectrum(path: str | Path, eigenvalues: np.ndarray, consts: dict[str, float], title: str) -> None:
    """Log-scale eigenvalues of H∞ against their index, with λ0, λmax and λm marked; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.arange(len(eigenvalues))
    positive = eigenvalues > 0
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.semilogy(k[positive], eigenvalues[positive], ".", ms=3, color="tab:blue", label="eigenvalues of H∞")
    marks = [
        ("lambda0", r"$\lambda_0$", "tab:red", "-"),
        ("lambda_max", r"$\lambda_{\max}$", "tab:green", "-"),
        ("lambda_m", r"$\lambda_m=\lambda_{\max}+\lambda_0/4$", "black", ":"),
    ]
    for key, label, color, style in marks:
        if consts[key] > 0:
            ax.axhline(consts[key], color=color, ls=style, lw=1, label=f"{label} = {consts[key]:.4g}")
    ax.set_xlabel("index k (ascending)")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"{title}   ($\\kappa$ = {consts['kappa']:.3g})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="center left", fontsize=9)  # the left middle is empty: small k sit low, the lines high
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m momentum_ntk.ntk", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="binarized input .npz with X (n, d), unit rows")
    p.add_argument("--dataset", required=True, help="dataset name recorded in the summary")
    p.add_argument("--eta-divisors", type=int, nargs="+", default=[10, 20], help="c in η = 1/(c λm)")
    p.add_argument("--widths", type=int, nargs="+", default=[1000, 2000, 4000, 8000], help="m for Lemma 2")
    p.add_argument("--gap-max-n", type=int, default=defaults.GAP_MAX_N, help="most rows for the Lemma 2 check")
    p.add_argument("--gap-seed", type=int, default=defaults.GAP_SEED, help="init seed (and row-subsample seed) for Lemma 2")
    p.add_argument("--gram-max-n", type=int, default=defaults.GRAM_MAX_N, help="the train stage's Gram-tracking rows: at most this many")
    p.add_argument("--gram-seed", type=int, default=defaults.GRAM_SEED, help="the train stage's Gram-tracking row seed")
    p.add_argument("--eigvec-dtype", choices=["float32", "float64"], default=defaults.EIGVEC_DTYPE)
    p.add_argument("--eigh-driver", choices=list(EIGH_DRIVERS), default="evr", help="LAPACK driver on the CPU")
    p.add_argument("--block-rows", type=int, default=1024, help="rows per block when building H∞")
    p.add_argument("--device", default=defaults.DEVICE, help="auto, cpu, cuda or cuda:<i>")
    p.add_argument("--gpus-held", type=int, default=0, help="GPUs this job holds (Snakemake resources.gpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and BLAS)")
    p.add_argument("--spectrum", required=True, help="output spectrum.parquet")
    p.add_argument("--summary", required=True, help="output summary.json")
    p.add_argument("--eigvecs", required=True, help="output eigvecs.npy")
    p.add_argument("--gap", required=True, help="output finite_width.parquet")
    p.add_argument("--plot", required=True, help="output spectrum.png")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if any(c < 1 for c in args.eta_divisors):
        raise UserError(f"--eta-divisors {args.eta_divisors}: each divisor c must be a positive integer")
    if any(m < 1 for m in args.widths):
        raise UserError(f"--widths {args.widths}: each width must be a positive integer")
    if args.gram_max_n < 1:
        raise UserError(f"--gram-max-n {args.gram_max_n}: must be a positive integer (train.gram_max_n)")
    if args.gap_max_n < 2:
        raise UserError(f"--gap-max-n {args.gap_max_n}: need at least 2 rows for the Lemma 2 check")
    if args.block_rows < 1:
        raise UserError(f"--block-rows {args.block_rows}: must be a positive integer")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be a positive integer")


def _lap(phases: dict[str, float], name: str, since: float) -> float:
    """Record the seconds since ``since`` as ``phases[name]``; return now."""
    now = time.perf_counter()
    phases[name] = now - since
    return now


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = _parser().parse_args(argv)
    _check_args(args)
    from momentum_ntk.lease import job_device  # concurrent GPU jobs get distinct devices

    with job_device(args.device, args.gpus_held, "ntk") as device:
        return _run(args, device, t0)


def _run(args: argparse.Namespace, device: str, t0: float) -> int:
    X, _ = io.read_binarized(args.data, labels=False)
    n, d = X.shape

    phases: dict[str, float] = {}
    with thread_limit(args.threads):
        tic = time.perf_counter()
        cos_max, ci, cj = max_offdiag_cosine(X, args.block_rows)
        if cos_max >= PARALLEL_COS:
            raise UserError(
                f"{args.data}: rows {ci} and {cj} of 'X' are parallel (cosine {cos_max:.15f}), so H∞ is singular "
                "(Lemma 1); drop duplicate rows in the binarize stage"
            )
        H = ntk_gram(X, args.block_rows)
        trace = float(np.trace(H))
        tic = _lap(phases, "gram_s", tic)
        eigenvalues, V = ntk_spectrum(H, vectors=True, device=device, driver=args.eigh_driver, overwrite=True)
        tic = _lap(phases, "eigh_s", tic)
        del H  # LAPACK may have overwritten it; V is now the only (n, n) array alive
        consts = lemma_constants(eigenvalues)
        if consts["lambda0"] <= 0:
            raise UserError(
                f"{args.data}: λmin(H∞) = {consts['lambda0']:.3g} ≤ 0 in float64 (closest rows {ci}, {cj} have "
                f"cosine {cos_max:.12f}); drop near-duplicate rows in the binarize stage"
            )
        write_eigvecs(args.eigvecs, V, args.eigvec_dtype)
        del V
        spectrum = pd.DataFrame({"k": np.arange(n, dtype=np.int64), "eigenvalue": eigenvalues.astype(np.float64)})
        io.write_parquet(args.spectrum, spectrum)
        tic = _lap(phases, "write_s", tic)
        gap = finite_width_gap(X, args.widths, seed=args.gap_seed, max_n=args.gap_max_n, device=device)
        io.write_parquet(args.gap, gap)
        tic = _lap(phases, "gap_s", tic)
        # λ0 on the rows every train job tracks H(t) on: computed here once, read by every train job.
        gram_rows = {"max_n": args.gram_max_n, "seed": args.gram_seed, "n": n}
        gram_rows["lambda0"] = lambda0_of_rows(X, subsample_rows(n, args.gram_max_n, args.gram_seed))
        _lap(phases, "gram_rows_s", tic)
    plot_spectrum(args.plot, eigenvalues, consts, f"{args.dataset}: spectrum of H∞ (n = {n}, d = {d})")

    summary: dict[str, Any] = {
        "dataset": args.dataset,
        "n": n,
        "d": d,
        **consts,
        "eta_divisors": [int(c) for c in args.eta_divisors],
        "eta": learning_rates(consts["lambda_m"], args.eta_divisors),
        "eigvec_dtype": args.eigvec_dtype,
        "gram_rows": gram_rows,
        "device": device,
        # sanity and provenance beyond the contract
        "trace": trace,
        "trace_over_half_n": trace / (n / 2),
        "max_offdiag_cosine": cos_max,
        "closest_pair": [ci, cj],
        "eigh_driver": args.eigh_driver if device == "cpu" else "torch.linalg.eigh",
        "threads": args.threads,
        "phase_s": phases,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
    }
    io.write_json(args.summary, summary)
    print(
        f"{args.dataset}: n={n} d={d} lambda0={consts['lambda0']:.6g} lambda_max={consts['lambda_max']:.6g} "
        f"kappa={consts['kappa']:.4g} wall={summary['wall_s']:.1f}s peak_rss={summary['peak_rss_mb']:.0f}MiB",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
