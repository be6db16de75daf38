"""Atomic file output and small record helpers shared by every stage.

Every file a stage writes goes through :func:`atomic_path`: the content is written to a temporary file in the same
folder and moved into place with ``os.replace`` only when complete, so an interrupted or failing stage never leaves a
partial file that a later run would take for a finished one.

Every file a later stage reads (``.parquet``, ``.json``, ``.npz``, ``.npy``) gets its content hash recorded by the job
that writes it: :func:`atomic_path` writes ``.<name>.sha256`` beside it (``sha256sum`` format) before the file itself
appears. Every file a stage reads goes through a checked reader (:func:`read_record`, :func:`read_table`,
:func:`read_npz`, :func:`read_npy`), which checks that hash when it is there: a file changed after it was written (a
flipped bit on disk, a bad copy, an edit) is an error, not silently different numbers. A missing, truncated, corrupt
or changed input is a :class:`~momentum_ntk.errors.UserError` that names the file and the fix, for an earlier stage's
output :func:`rebuild_fix` (``snakemake --force <that file> --configfile <the config that made results/>``).

A write that fails because the disk is full or read-only is a UserError naming the file and the command that finishes
the run (:func:`momentum_ntk.entry.write_error`), not a traceback; nothing finished is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from momentum_ntk import stamp
from momentum_ntk.entry import write_error
from momentum_ntk.errors import UserError


HASHED_SUFFIXES = (".parquet", ".json", ".npz", ".npy")  # what later stages read: their hash is recorded


def hash_record_path(path: str | os.PathLike[str]) -> Path:
    """Where the content hash of ``path`` is recorded: ``.<name>.sha256`` in the same folder."""
    p = Path(path)
    return p.with_name(f".{p.name}.sha256")


def _write_hash_record(final: Path, content: Path) -> None:
    """Record the SHA-256 of ``content`` (the finished temporary file) for ``final``, atomically, in ``sha256sum``
    format (``cd <folder> && sha256sum -c .<name>.sha256`` checks it by hand)."""
    record = hash_record_path(final)
    fd, tmp = tempfile.mkstemp(prefix=f"{record.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{sha256(content)}  {final.name}\n")
        os.chmod(tmp, _file_mode())
        os.replace(tmp, record)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask  # mkstemp creates 0600; give outputs the usual permissions


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, on failure delete it.

    For the file kinds later stages read (:data:`HASHED_SUFFIXES`) the content hash is recorded first
    (:func:`hash_record_path`), so the file never exists without its hash. A disk that is full or read-only is a
    UserError naming ``path`` and the command that finishes the run."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + "".join(final.suffixes[-1:]),
                                   dir=final.parent)  # fmt: skip
        os.close(fd)
    except OSError as exc:
        raise (write_error(final, exc, permission=True) or exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode())
        if final.suffix in HASHED_SUFFIXES:
            _write_hash_record(final, tmp_path)
        os.replace(tmp_path, final)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        err = write_error(final, exc)
        if err is not None:
            raise err from None
        raise


def check_hash(path: str | os.PathLike[str], *, what: str, fix: str) -> None:
    """Compare ``path`` with the SHA-256 its writer recorded (:func:`hash_record_path`); no record (a file written
    before hashes were recorded, or copied without it) is no check. A mismatch or a damaged record is a UserError
    naming the file and the ``fix``."""
    record = hash_record_path(path)
    try:
        text = record.read_text()
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: the SHA-256 record {record} of this {what} cannot be read ({exc}); {fix}") from None
    parts = text.split()
    if len(parts) != 2 or len(parts[0]) != 64 or parts[1] != Path(path).name:
        raise UserError(f"{path}: the SHA-256 record {record} of this {what} is damaged; {fix}")
    if sha256(path) != parts[0].lower():
        raise UserError(
            f"{path}: {what} changed after the job that wrote it recorded its SHA-256 in {record} (a disk or copy "
            f"error, or an edit): its numbers cannot be trusted; {fix}"
        )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write ``record`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def rebuild_command(path: str | os.PathLike[str]) -> str:
    """The command that rebuilds one workflow output, however it exists now (``--force``: a plain ``snakemake
    <path>`` answers "Nothing to be done" for a corrupt file that is newer than its inputs), with the config that
    made ``results/`` (its stamp, :func:`momentum_ntk.stamp.command_here`), so it works when typed literally."""
    return stamp.command_here("--force", str(path))


def rebuild_fix(path: str | os.PathLike[str]) -> str:
    """The fix for a missing, truncated or corrupt output of an earlier stage, worded the same by every stage."""
    return f"rebuild it: {rebuild_command(path)}"


def read_record(path: str | os.PathLike[str], keys: Sequence[str] = (), *, what: str, fix: str) -> dict[str, Any]:
    """A JSON record that must exist, parse and hold ``keys``; otherwise a UserError naming the file, ``what`` it is
    and the ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {fix}")
    check_hash(path, what=what, fix=fix)
    try:
        rec = read_json(path)
    except (OSError, ValueError) as exc:  # truncated, empty or binary content: JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path}: {what} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: {what} is JSON {type(rec).__name__}, not an object (truncated or corrupt?); {fix}")
    missing = [k for k in keys if k not in rec]
    if missing:
        raise UserError(f"{path}: {what} lacks key(s) {missing} (docs/CONTRACT.md); {fix}")
    return rec


def read_table(path: str | os.PathLike[str], columns: Sequence[str] = (), *, what: str, fix: str) -> Any:
    """A Parquet file (as a pyarrow Table) that must exist, parse and hold ``columns``; otherwise a UserError naming
    the file, ``what`` it is and the ``fix``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {fix}")
    check_hash(path, what=what, fix=fix)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: {what} cannot be read as Parquet ({exc}); {fix}") from None
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise UserError(f"{path}: {what} lacks column(s) {absent}; {fix}")
    return table


def read_npz(path: str | os.PathLike[str], arrays: Sequence[str], *, what: str, fix: str) -> dict[str, np.ndarray]:
    """The named ``arrays`` of an ``.npz`` archive, read in full (a truncated member fails here, not later); a
    missing, truncated or corrupt file, or one without an array, is a UserError naming the file, ``what`` it is and
    the ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {fix}")
    check_hash(path, what=what, fix=fix)
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: {what} is not a readable .npz file (it holds a single array); {fix}")
        with npz:
            absent = [a for a in arrays if a not in npz.files]
            if absent:
                names = ", ".join(repr(a) for a in absent)
                raise UserError(f"{path}: {what} has no array {names} (has {sorted(npz.files)}); {fix}")
            return {a: np.asarray(npz[a]) for a in arrays}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(f"{path}: {what} is not a readable .npz file ({type(exc).__name__}: {exc}); {fix}") from None


def read_npy(path: str | os.PathLike[str], *, what: str, fix: str, mmap_mode: str | None = None) -> np.ndarray:
    """One ``.npy`` array (memory-mapped with ``mmap_mode``); a missing, truncated or corrupt file is a UserError
    naming the file, ``what`` it is and the ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {fix}")
    check_hash(path, what=what, fix=fix)
    try:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: {what} is not a readable .npy file ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise UserError(f"{path}: {what} is an .npz archive, not a .npy array; {fix}")
    return arr


def write_parquet(path: str | os.PathLike[str], table: Any) -> None:
    """Write a pandas DataFrame or pyarrow Table to Parquet atomically (zstd, no pandas index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def environment_record() -> dict[str, str]:
    """Versions of the interpreter and the numerical packages, for provenance sidecars."""
    import importlib.metadata as md

    rec = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("momentum-ntk", "numpy", "torch", "pandas", "pyarrow"):
        try:
            rec[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            rec[pkg] = "not installed"
    return rec


UNIT_NORM_TOL = 1e-6  # |‖x_i‖ − 1| allowed in binarized data (paper §3.1: every instance has unit norm)


def read_binarized(path: str | os.PathLike[str], *, labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """X (n, d) and y (n,), float64, from the binarize stage's ``.npz``: the one reader of binarized data. X must be
    a non-empty 2-D finite array with unit-norm rows (paper §3.1), y one label per row (``labels=False``: X only, y
    None). Every problem is a UserError naming the file and the command that rebuilds it."""
    fix = rebuild_fix(path)
    z = read_npz(path, ("X", "y") if labels else ("X",), what="binarized data file", fix=fix)
    X = np.asarray(z["X"], dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise UserError(f"{path}: 'X' must be a non-empty 2-D array (n, d), got shape {X.shape}; {fix}")
    if not np.all(np.isfinite(X)):
        raise UserError(f"{path}: 'X' has NaN or infinite entries; {fix}")
    dev = np.abs(np.linalg.norm(X, axis=1) - 1.0)
    if dev.max() > UNIT_NORM_TOL:
        i = int(np.argmax(dev))
        raise UserError(f"{path}: row {i} of 'X' has norm {1 + dev[i]:.6g}, rows must have unit norm (paper §3.1); {fix}")
    if not labels:
        return X, None
    y = np.asarray(z["y"], dtype=np.float64)
    if y.shape != (X.shape[0],):
        raise UserError(f"{path}: X {X.shape} and y {y.shape} do not form (n, d) and (n,); {fix}")
    return X, y
