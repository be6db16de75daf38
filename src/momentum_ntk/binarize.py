"""Stage ``binarize``: the paper's binary training set — two classes, labels ±1, every instance of unit L2 norm.

    PYTHONPATH=src python -m momentum_ntk.binarize --dataset mnist5k --manifest resources/raw/mnist5k/manifest.json \\
        --classes 0 1 [--max-per-class N] --subsample-seed 0 --duplicates drop --parallel-tol 1e-9 \\
        --out results/data/mnist5k.npz --record results/data/mnist5k.json

Steps (paper §5.1, following Arora et al. 2019): take the training split of the fetched raw files; keep the two given
classes (first → y = +1, second → y = −1), in raw order; optionally draw at most ``--max-per-class`` of each class
with ``numpy.random.default_rng(subsample_seed)`` (sorted back into raw order); flatten to float64 and scale every
row to unit L2 norm (an all-zero image is an error).

Lemma 1 (λ0 > 0) needs no two inputs parallel. Pairs with |cos| ≥ 1 − parallel_tol (exact duplicates, scaled copies,
anti-parallel copies) are found blockwise (memory O(block · n)), grouped (connected components), and per
``--duplicates``: ``drop`` keeps the first (lowest raw index) of each group, ``keep`` keeps all with a warning,
``error`` stops with a UserError.

Outputs: ``--out`` npz with X float64 (n, d), y float64 (n,) in {+1, −1}, index int64 (n,) rows of the raw training
split, label int64 (n,) raw class; ``--record`` JSON (see :func:`build_record`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from momentum_ntk import datasets
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.io import (
    atomic_path,
    environment_record,
    read_record,
    rebuild_command,
    rebuild_fix,
    sha256,
    write_json,
)

N_EXAMPLES = 20  # flagged pairs listed in the record


def select_classes(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Sorted raw indices (int64) of the rows whose label is one of ``classes``."""
    return np.flatnonzero(np.isin(labels, np.asarray(classes))).astype(np.int64)


def subsample(index: np.ndarray, labels: np.ndarray, classes: Sequence[int], max_per_class: int | None,
              seed: int) -> np.ndarray:
    """At most ``max_per_class`` raw indices per class, drawn without replacement by ``default_rng(seed)`` (classes
    in the given order); returned sorted. ``None`` keeps everything."""
    if max_per_class is None:
        return index
    rng = np.random.default_rng(seed)
    parts = []
    for c in classes:
        members = index[labels[index] == c]
        if members.size > max_per_class:
            members = rng.choice(members, size=max_per_class, replace=False)
        parts.append(members)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def unit_rows(images: np.ndarray, index: np.ndarray, where: str) -> np.ndarray:
    """float64 (n, d) copy of ``images`` with every row scaled to unit L2 norm; UserError on an all-zero row
    (``index`` gives the raw row numbers for the message, ``where`` names the data)."""
    X = images.reshape(images.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(X, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise UserError(
            f"{where}: {zero.size} all-zero instance(s) (raw rows {index[zero[:5]].tolist()}) cannot be scaled to unit "
            "norm: they are not valid inputs for the paper's model; check the raw files (re-fetch) or the classes"
        )
    X /= norms[:, None]
    return X


@dataclass
class ParallelScan:
    """Pairs (i < j) of rows with |cos| ≥ 1 − tol: ``pairs`` int64 (k, 2), ``cos`` float64 (k,) signed cosine;
    ``min_gap`` = min over all pairs i < j of 1 − |cos| (clipped at 0; NaN when n < 2)."""

    pairs: np.ndarray
    cos: np.ndarray
    min_gap: float


def find_parallel_pairs(X: np.ndarray, tol: float, block_bytes: int = 32 << 20) -> ParallelScan:
    """Scan all pairs of unit rows of ``X`` (n, d) blockwise; memory O(block · n) with block · n · 8 ≤ block_bytes."""
    n = X.shape[0]
    block = max(1, min(n, block_bytes // (8 * max(n, 1))))
    pairs, cosines, best = [], [], -1.0  # best = max |cos| over pairs
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        G = X[i0:i1] @ X[i0:].T  # (b, n - i0); entry (r, c) is pair (i0 + r, i0 + c)
        A = np.abs(G)
        A[np.tril_indices(i1 - i0, m=A.shape[1])] = -1.0  # only j > i
        if A.size:
            best = max(best, float(A.max()))
        r, c = np.nonzero(A >= 1.0 - tol)
        pairs.append(np.stack([r + i0, c + i0], axis=1))
        cosines.append(G[r, c])
    if n < 2:
        return ParallelScan(np.zeros((0, 2), np.int64), np.zeros(0), float("nan"))
    return ParallelScan(np.concatenate(pairs).astype(np.int64), np.concatenate(cosines), max(0.0, 1.0 - best))


def exact_duplicate_pairs(images: np.ndarray) -> int:
    """Number of pairs i < j of byte-identical rows."""
    counts: dict[bytes, int] = {}
    for row in np.ascontiguousarray(images.reshape(images.shape[0], -1)):
        key = row.tobytes()
        counts[key] = counts.get(key, 0) + 1
    return sum(k * (k - 1) // 2 for k in counts.values())


def first_of_groups(n: int, pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of the graph on ``n`` rows with edges ``pairs``; returns (keep mask (n,) bool with only
    the lowest index of each component True, number of components with more than one row)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for i, j in pairs:
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the root is always the lowest index of its component
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    keep = roots == np.arange(n)
    sizes = np.bincount(roots, minlength=n)
    return keep, int(np.count_nonzero(sizes > 1))


def binarize(images: np.ndarray, labels: np.ndarray, classes: Sequence[int], *, max_per_class: int | None = None,
             subsample_seed: int = 0, duplicates: str = "drop", parallel_tol: float = 1e-9,
             where: str = "data") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The whole stage on arrays: images (N, ...) uint8/float, labels (N,) int. Returns the npz arrays
    ``{X, y, index, label}`` and a dict of statistics for the record."""
    c0, c1 = (int(c) for c in classes)
    if c0 == c1:
        raise UserError(f"--classes must be two different classes, got {c0} {c1}")
    available = {c: int(np.count_nonzero(labels == c)) for c in (c0, c1)}
    for c, k in available.items():
        if k == 0:
            present = sorted(int(v) for v in np.unique(labels))
            raise UserError(f"{where}: class {c} has no instances (labels present: {present}): fix --classes")
    if max_per_class is not None and max_per_class < 1:
        raise UserError(f"--max-per-class must be a positive integer, got {max_per_class}")
    if duplicates not in ("drop", "keep", "error"):
        raise UserError(f"--duplicates must be drop, keep or error, got {duplicates!r}")
    if not 0.0 <= parallel_tol < 1.0:
        raise UserError(f"--parallel-tol must lie in [0, 1), got {parallel_tol}")

    index = subsample(select_classes(labels, (c0, c1)), labels, (c0, c1), max_per_class, subsample_seed)
    X = unit_rows(images[index], index, where)
    lab = labels[index].astype(np.int64)
    scan = find_parallel_pairs(X, parallel_tol)
    keep, groups = first_of_groups(X.shape[0], scan.pairs)
    flagged = np.unique(scan.pairs)
    li, lj = (lab[scan.pairs[:, 0]], lab[scan.pairs[:, 1]]) if scan.pairs.size else (lab[:0], lab[:0])
    dup = {
        "exact_duplicate_pairs": exact_duplicate_pairs(images[index]),
        "parallel_pairs": int(scan.pairs.shape[0]),
        "antiparallel_pairs": int(np.count_nonzero(scan.cos < 0)),
        "cross_class_pairs": int(np.count_nonzero(li != lj)),
        "groups": groups,
        "instances_in_groups": int(flagged.size),
        "instances_dropped": 0,
        "examples": [
            {"index_i": int(index[i]), "index_j": int(index[j]), "label_i": int(lab[i]), "label_j": int(lab[j]),
             "cos": float(cs)}
            for (i, j), cs in zip(scan.pairs[:N_EXAMPLES], scan.cos[:N_EXAMPLES])
        ],
    }
    min_gap_before = scan.min_gap
    if scan.pairs.size:
        msg = (f"{where}: {dup['parallel_pairs']} pair(s) of instances are parallel within tol {parallel_tol} "
               f"(|cos| >= 1 - tol; {dup['exact_duplicate_pairs']} exact duplicate pair(s), {groups} group(s)); "
               "Lemma 1 needs no two inputs parallel")
        if duplicates == "error":
            raise UserError(msg + ": use --duplicates drop (config data.duplicates) to keep the first of each group")
        if duplicates == "keep":
            print(f"warning: {msg}; keeping all of them (--duplicates keep): lambda0 of H-infinity will be zero or "
                  "close to it", file=sys.stderr)
        else:
            dup["instances_dropped"] = int(np.count_nonzero(~keep))
            X, lab, index = X[keep], lab[keep], index[keep]
            after = find_parallel_pairs(X, parallel_tol)
            assert after.pairs.size == 0, "dropping the non-first members of each group left a parallel pair"
            scan = after
    y = np.where(lab == c0, 1.0, -1.0)
    arrays = {"X": X, "y": y, "index": index, "label": lab}
    stats = {
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "n_per_class": {str(c0): int(np.count_nonzero(lab == c0)), str(c1): int(np.count_nonzero(lab == c1))},
        "n_available_per_class": {str(c): k for c, k in available.items()},
        "duplicates": dup,
        "min_one_minus_abs_cos": None if np.isnan(scan.min_gap) else scan.min_gap,
        "min_one_minus_abs_cos_before_drop": None if np.isnan(min_gap_before) else min_gap_before,
    }
    return arrays, stats


def check_manifest(manifest: dict[str, Any], manifest_path: Path, dataset: str) -> None:
    """The manifest is for ``dataset`` and every file it lists still has the recorded SHA-256."""
    if manifest.get("dataset") != dataset:
        raise UserError(
            f"{manifest_path} is the manifest of {manifest.get('dataset')!r}, not {dataset!r}: pass the matching "
            f"--manifest (resources/raw/{dataset}/manifest.json)"
        )
    refetch = f"run the fetch stage again, which re-verifies it: {rebuild_command(manifest_path)}"
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) and {"path", "sha256"} <= e.keys()
                                              for e in files.values()):
        raise UserError(f"{manifest_path}: 'files' is not a map of roles to {{path, sha256, ...}}; "
                        f"{rebuild_fix(manifest_path)}")
    for role, entry in files.items():
        p = Path(entry["path"])
        if not p.is_file():
            raise UserError(f"{p} ({dataset} {role}, listed in {manifest_path}) is missing: {refetch}")
        if sha256(p) != entry["sha256"]:
            raise UserError(f"{p} ({dataset} {role}) changed since {manifest_path} was written (its SHA-256 differs: "
                            f"truncated or replaced?): {refetch}")


def build_record(manifest: dict[str, Any], stats: dict[str, Any], args: argparse.Namespace,
                 wall_s: float) -> dict[str, Any]:
    """Record JSON: dataset, source, raw_files {role: {path, sha256, bytes}}, classes [c0, c1], class_names,
    label_map {str(c0): 1, str(c1): -1}, n, d, n_per_class, n_available_per_class, max_per_class, subsample_seed,
    duplicates_policy, parallel_tol, duplicates {exact_duplicate_pairs, parallel_pairs, antiparallel_pairs,
    cross_class_pairs, groups, instances_in_groups, instances_dropped, examples}, min_one_minus_abs_cos (over the
    output's pairs), min_one_minus_abs_cos_before_drop, wall_s, environment, args."""
    spec = datasets.get_spec(args.dataset)
    c0, c1 = args.classes
    return {
        "dataset": args.dataset,
        "source": manifest.get("source"),
        "raw_files": {r: {k: e[k] for k in ("path", "sha256", "bytes")} for r, e in manifest["files"].items()},
        "classes": [c0, c1],
        "class_names": [spec.class_names[c] if 0 <= c < len(spec.class_names) else str(c) for c in (c0, c1)],
        "label_map": {str(c0): 1, str(c1): -1},
        **stats,
        "max_per_class": args.max_per_class,
        "subsample_seed": args.subsample_seed,
        "duplicates_policy": args.duplicates,
        "parallel_tol": args.parallel_tol,
        "wall_s": wall_s,
        "environment": environment_record(),
        "args": vars(args),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.binarize", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--manifest", required=True, help="fetch manifest JSON")
    ap.add_argument("--classes", type=int, nargs=2, default=[0, 1], metavar=("POS", "NEG"))
    ap.add_argument("--max-per-class", type=int, default=None)
    ap.add_argument("--subsample-seed", type=int, default=0)
    ap.add_argument("--duplicates", choices=("drop", "keep", "error"), default="drop")
    ap.add_argument("--parallel-tol", type=float, default=1e-9)
    ap.add_argument("--out", required=True, help="output npz")
    ap.add_argument("--record", required=True, help="output JSON record")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    datasets.get_spec(args.dataset)
    manifest_path = Path(args.manifest)
    if not manifest_path.is_file():
        raise UserError(f"manifest {manifest_path} does not exist: run `python -m momentum_ntk.fetch --dataset "
                        f"{args.dataset} --manifest {manifest_path}` first")
    manifest = read_record(manifest_path, ("dataset", "files"), what="fetch manifest", fix=rebuild_fix(manifest_path))
    check_manifest(manifest, manifest_path, args.dataset)
    images, labels = datasets.load_training_split(manifest)
    arrays, stats = binarize(
        images, labels, args.classes, max_per_class=args.max_per_class, subsample_seed=args.subsample_seed,
        duplicates=args.duplicates, parallel_tol=args.parallel_tol, where=f"{args.dataset} ({manifest_path})",
    )
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    wall_s = time.perf_counter() - t0
    write_json(args.record, build_record(manifest, stats, args, wall_s))
    dup = stats["duplicates"]
    print(f"binarize {args.dataset}: n={stats['n']} {stats['n_per_class']} d={stats['d']}, parallel pairs "
          f"{dup['parallel_pairs']} (exact {dup['exact_duplicate_pairs']}), dropped {dup['instances_dropped']}, "
          f"min 1-|cos| {stats['min_one_minus_abs_cos']}, {wall_s:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
