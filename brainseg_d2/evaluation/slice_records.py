"""Per-slice prediction records of :class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator`.

The evaluator sees a dataset one slice at a time, possibly on several ranks,
but scores whole volumes on rank 0. In between, each slice's predicted category
masks travel as a small record: ``image_id``, ``volume_id``, ``slice_index``
and one compressed RLE per category (:func:`encode_masks`; with hysteresis the
seed masks too). This module holds that bookkeeping, which needs the dataset's
slice dicts but no scoring:

* :func:`dataset_volumes`: every volume of a registered brainseg dataset, with
  its geometry and slice dicts (:class:`DatasetVolume`);
* :func:`group_records`: the gathered records by volume and slice, each checked
  against the dataset (a prediction for an image the dataset does not hold is
  an error, not something to skip);
* :func:`volume_masks`: one volume's records decoded into ``(C, S, H, W)``
  masks; slices without a record are empty.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog

from brainseg_d2.structures import stack_slice_masks

__all__ = ["DatasetVolume", "dataset_volumes", "encode_masks", "group_records", "volume_masks"]


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Compressed RLE of each ``(H, W)`` mask of a ``(C, H, W)`` stack."""
    return [mask_util.encode(np.asfortranarray(m, np.uint8)) for m in masks]


class DatasetVolume:
    """Geometry and slice dicts of one volume of the dataset.

    Attributes:
        patient_id: the slice dicts' ``patient_id``, else the ``volume_id``.
        num_slices: slices of the whole volume, also those the dataset dropped.
        shape: ``(height, width)`` of a slice.
        spacing: ``(slice_thickness, row, column)`` in mm (1 mm where not recorded).
        slices: slice index -> dataset dict, for the slices the dataset holds.
    """

    def __init__(self, first: Mapping) -> None:
        """Geometry from ``first``, any slice dict of the volume; ``slices`` starts empty."""
        self.patient_id = str(first.get("patient_id", first["volume_id"]))
        self.num_slices = int(first["num_slices"])
        self.shape = (int(first["height"]), int(first["width"]))
        row, col = first.get("pixel_spacing", (1.0, 1.0))
        self.spacing = (float(first.get("slice_thickness", 1.0)), float(row), float(col))
        self.slices: dict[int, Mapping] = {}

    @property
    def voxel_ml(self) -> float:
        """One voxel's volume in millilitres."""
        return math.prod(self.spacing) / 1000.0


def dataset_volumes(dataset_name: str) -> dict[str, DatasetVolume]:
    """volume_id -> :class:`DatasetVolume` of every volume of a registered dataset.

    Raises:
        ValueError: a dataset dict without ``volume_id`` or ``slice_index`` (not
            written by ``brainseg-convert``).
    """
    volumes: dict[str, DatasetVolume] = {}
    for d in DatasetCatalog.get(dataset_name):
        if "volume_id" not in d or "slice_index" not in d:
            raise ValueError(
                f"dataset {dataset_name!r} has images without volume_id/slice_index; "
                "BrainSegEvaluator needs a dataset written by brainseg-convert"
            )
        vol = volumes.get(d["volume_id"])
        if vol is None:
            vol = volumes[d["volume_id"]] = DatasetVolume(d)
        vol.slices[int(d["slice_index"])] = d
    return volumes


def group_records(
    records: list[dict], volumes: Mapping[str, DatasetVolume], dataset_name: str
) -> dict[str, dict[int, dict]]:
    """volume_id -> slice_index -> record; checks every record against the dataset.

    A record without ``volume_id``/``slice_index`` is placed by its ``image_id``.
    A later record for the same slice replaces an earlier one.

    Raises:
        ValueError: a record for an image, volume or slice that ``volumes``
            (the dataset ``dataset_name``) does not hold.
    """
    by_image = {
        d["image_id"]: (vid, s) for vid, vol in volumes.items() for s, d in vol.slices.items()
    }
    grouped: dict[str, dict[int, dict]] = defaultdict(dict)
    for rec in records:
        if rec["volume_id"] is not None and rec["slice_index"] is not None:
            key = (rec["volume_id"], int(rec["slice_index"]))
        elif rec["image_id"] in by_image:
            key = by_image[rec["image_id"]]
        else:
            raise ValueError(
                f"prediction for image_id {rec['image_id']!r} is not an image of dataset "
                f"{dataset_name!r}"
            )
        vid, s = key
        if vid not in volumes or s not in volumes[vid].slices:
            raise ValueError(
                f"prediction for volume {vid!r} slice {s} is not in dataset {dataset_name!r}"
            )
        grouped[vid][s] = rec
    return grouped


def volume_masks(
    vol: DatasetVolume, records: Mapping[int, dict], key: str, num_categories: int
) -> np.ndarray:
    """bool ``(C, S, H, W)`` masks of one volume from its records' RLEs under ``key``.

    Args:
        vol: the volume's geometry (``num_slices``, ``shape``).
        records: slice index -> record, as :func:`group_records` gives them.
        key: ``"masks"`` (the predicted masks) or ``"seeds"`` (hysteresis seeds).
        num_categories: C.
    """
    shape = (vol.num_slices, *vol.shape)
    slices = (  # decode gives (H, W, C)
        (s, mask_util.decode(rec[key]).transpose(2, 0, 1)) for s, rec in records.items()
    )
    return stack_slice_masks(slices, shape, num_categories)
