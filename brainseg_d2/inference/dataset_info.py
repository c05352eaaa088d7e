"""The training dataset's ``dataset.json`` a model was trained on, found from its config; what
it says of a case's field of view."""

from __future__ import annotations

from pathlib import Path

from brainseg_d2.structures import DatasetInfo

__all__ = ["FOV_TOLERANCE", "dataset_info_from_cfg", "field_of_view_warning"]


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


#: A case whose slices span more than this times the training slices' field of view, or
#: less than its inverse, gets a warning (:func:`field_of_view_warning`).
FOV_TOLERANCE = 1.25


def field_of_view_warning(info: DatasetInfo, case_id: str, geometry) -> str | None:
    """A warning when a case's slices span a field of view unlike the training slices'.

    Slices are resized to ``INPUT.MIN_SIZE_TEST`` pixels on their shorter side, so a
    case cropped closer (or padded wider) than the training data shows the model its
    anatomy larger (smaller) than it learned. At 0.85x and 1.25x the demo's model lost at
    most 0.03 Dice; at 0.7x and 1.5x up to 0.15 WT and 0.10 ET on real scans
    (BENCHMARKS.md, "The field of view").

    Args:
        info: the training dataset's (one converted before the record gives no warning).
        case_id: named in the warning.
        geometry: the case's :class:`~brainseg_d2.structures.SliceGeometry`.
    """
    trained, side = info.shorter_side_mm("train"), geometry.shorter_side_mm
    if not trained or trained[0] / FOV_TOLERANCE <= side <= trained[1] * FOV_TOLERANCE:
        return None
    return (
        f"case {case_id}: its slices span {side:.0f} mm on the shorter side, the training "
        f"slices {trained[0]:.0f}-{trained[1]:.0f} mm, so the model sees its anatomy "
        f"{sum(trained) / 2 / side:.2f} times as large as it learned; crop or pad the scan "
        "nearer the training field of view"
    )
