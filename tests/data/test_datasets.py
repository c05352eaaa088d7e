"""Registration of converted datasets: names, metadata, volume keys, laziness, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from brainseg_d2.data.datasets import (
    VOLUME_KEYS,
    check_datasets_exist,
    register_all,
    register_brainseg_dataset,
)


def test_register_all_registers_every_split_idempotently(phantom_dataset):
    names = register_all(phantom_dataset["root"])
    assert names == ["phantom_test", "phantom_train", "phantom_val"]
    assert register_all(phantom_dataset["root"]) == names  # second call: no assertion error
    meta = MetadataCatalog.get("phantom_train")
    assert meta.thing_classes == ["necrotic", "edema", "enhancing"]
    assert len(meta.thing_colors) == 3
    assert meta.evaluator_type == "brainseg"
    assert meta.target == "labels" and meta.label_convention == "brats2021"
    assert meta.slice_axis == "axial"  # the mapper reads it (no flip on sagittal slices)
    volumes = json.loads(open(meta.volumes_file).read())["volumes"]
    assert volumes and all("geometry" in v for v in volumes.values())


def test_dataset_dicts_keep_volume_keys_and_rle(phantom_dataset):
    register_all(phantom_dataset["root"])
    dicts = DatasetCatalog.get("phantom_val")
    assert dicts
    for d in dicts:
        for key in VOLUME_KEYS:
            assert key in d, key
        assert d["slice_index"] < d["num_slices"]
    annotated = [d for d in dicts if d["annotations"]]
    empty = [d for d in dicts if not d["annotations"]]
    assert annotated and empty  # val keeps empty slices for the metrics
    ann = annotated[0]["annotations"][0]
    assert set(ann["segmentation"]) == {"size", "counts"}
    assert 0 <= ann["category_id"] < 3


def test_a_folder_of_the_same_name_elsewhere_replaces_the_old_registration(
    phantom_dataset, tmp_path, caplog
):
    register_all(phantom_dataset["root"])
    other = tmp_path / "datasets" / "phantom"
    shutil.copytree(phantom_dataset["dataset"], other)
    train = json.loads((other / "annotations" / "instances_train.json").read_text())
    train["images"], train["annotations"] = train["images"][:1], []
    (other / "annotations" / "instances_train.json").write_text(json.dumps(train))
    try:
        with caplog.at_level("WARNING", logger="brainseg_d2.data.datasets"):
            register_all(tmp_path / "datasets")
        meta = MetadataCatalog.get("phantom_train")
        assert meta.json_file == str(other.resolve() / "annotations" / "instances_train.json")
        assert len(DatasetCatalog.get("phantom_train")) == 1  # the other folder's data
        assert "phantom_train was registered from" in caplog.text
    finally:
        register_all(phantom_dataset["root"])  # leave the session's dataset registered
    assert len(DatasetCatalog.get("phantom_train")) > 1


def test_loading_is_lazy_and_errors_name_the_file(phantom_dataset, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(phantom_dataset["dataset"], copy)
    bad = copy / "annotations" / "instances_val.json"
    bad.write_text("{not json")
    names = register_brainseg_dataset(copy, name="broken")  # must not read the JSON
    assert "broken_val" in names
    with pytest.raises(ValueError, match="instances_val.json"):
        DatasetCatalog.get("broken_val")


def test_empty_split_is_reported(phantom_dataset, tmp_path):
    copy = tmp_path / "emptied"
    shutil.copytree(phantom_dataset["dataset"], copy)
    f = copy / "annotations" / "instances_train.json"
    coco = json.loads(f.read_text())
    coco["images"], coco["annotations"] = [], []
    f.write_text(json.dumps(coco))
    register_brainseg_dataset(copy, name="emptied")
    with pytest.raises(ValueError, match="split is empty"):
        DatasetCatalog.get("emptied_train")


def test_not_a_dataset_and_missing_names(tmp_path):
    with pytest.raises(ValueError, match="not a converted dataset"):
        register_brainseg_dataset(tmp_path)
    with pytest.raises(ValueError, match="'nope_train' is not registered"):
        check_datasets_exist(["nope_train"])
