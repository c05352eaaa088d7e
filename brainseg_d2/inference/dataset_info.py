"""The training dataset's ``dataset.json`` a model was trained on, found from its config."""

from __future__ import annotations

from pathlib import Path

from brainseg_d2.structures import DatasetInfo

__all__ = ["dataset_info_from_cfg"]


def dataset_info_from_cfg(cfg) -> DatasetInfo:
    """``dataset.json`` of the registered training dataset ``cfg.DATASETS.TRAIN[0]``.

    Raises:
        ValueError: no training dataset, or it is not registered.
    """
    from detectron2.data import MetadataCatalog

    if not cfg.DATASETS.TRAIN:
        raise ValueError("cfg.DATASETS.TRAIN is empty: pass dataset_info (--dataset-info)")
    name = cfg.DATASETS.TRAIN[0]
    root = MetadataCatalog.get(name).get("dataset_root")
    if root is None:
        raise ValueError(
            f"dataset {name!r} is not registered, so its dataset.json is unknown: set "
            "DETECTRON2_DATASETS (or BRAINSEG.DATASET_ROOT) to the folder holding it, or pass "
            "--dataset-info path/to/dataset.json (Python: dataset_info=)"
        )
    return DatasetInfo.load(Path(root) / "dataset.json")
