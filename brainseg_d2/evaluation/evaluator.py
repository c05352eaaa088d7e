"""Volume metrics of Mask R-CNN slice predictions: :class:`BrainSegEvaluator`.

Data path::

    outputs["sem_seg"] (C, H, W) probabilities, or outputs["instances"] (N, H, W)
        --masks_and_seeds_from_output(score_threshold, mask source)--> (C, H, W)
        --compressed RLE per category--> small per-slice records --comm.gather--> rank 0
        (with hysteresis, ``component_score_threshold``, also seed masks made the same way)
    rank 0: records + ground truth from the dataset dicts --> (C, S, H, W) per volume
        --postprocess_volume(raw | post)--> evaluate_volume --> rows --> summarize

Names and variants. Every metric is reported for each *name*: the BraTS regions the
target can express (group ``region``: WT, TC, ET for ``labels`` and ``regions``,
WT only for ``binary``; see :func:`region_categories`) and the dataset's
categories (group ``category``). Each comes in two *variants* side by side:
``raw`` (score threshold only, :meth:`PostprocessParams.raw`) and ``post``
(``cfg.BRAINSEG.POSTPROCESS``, 2D and 3D steps of :func:`postprocess_volume` on
the reassembled volume, with nesting enforced for nested targets).

Metrics (per name and variant):

* per volume, 3D over all ``num_slices`` slices: Dice, IoU, sensitivity,
  precision from the POOLED voxel counts of the volume (not a mean of slice
  scores); HD95 in mm with spacing ``(slice_thickness, pixel_spacing[0],
  pixel_spacing[1])``, the slice-array axis order; lesion-wise Dice (BraTS 2023,
  :func:`~brainseg_d2.evaluation.metrics.lesion_wise_dice`). Both masks empty:
  Dice/IoU/lesion Dice score ``empty_score``, HD95 0; one empty: HD95 is
  ``hd95_one_empty``.
* per slice: Dice and IoU of every evaluated slice (a slice of the dataset that
  received a prediction), subject to the *empty-slice policy*:
  ``"exclude"`` (default) skips slices where prediction and ground truth are
  both empty, so the slice mean measures tumour slices and false-positive
  slices only and does not depend on how many healthy slices a volume has;
  ``"include"`` keeps them, scoring ``empty_score``.

Slices absent from the dataset (the converter drops slices without brain) are
empty in both ground truth and prediction: they count in the 3D volume (as
true negatives, and for the inter-slice geometry) but are never "evaluated
slices". Ground truth is every labelled pixel of the slice: the converter's label
PNG of tissue codes (``sem_seg_file_name``), mapped to the target's categories;
datasets without label PNGs fall back to the annotations' RLE masks. Both are
looked up by ``(volume_id, slice_index)``.

Aggregates (:func:`summarize`): per-volume metrics and lesion Dice are averaged
over volumes; slice metrics over all kept slices of all volumes; ``*_mean_*``
keys average the regions. Means skip NaN, and a value is NaN only when nothing
was left to average: slice scores under ``"exclude"`` when no evaluated slice of
any volume holds that name in prediction or ground truth, or anything where a
NaN ``empty_score`` was chosen and every case was empty.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from brainseg_d2.data.dataset_mapper import read_label_png
from brainseg_d2.evaluation.metrics import (
    BRATS_MAX_DISTANCE_MM,
    PooledCounts,
    confusion_counts,
    hausdorff_distance_95,
    lesion_wise_dice,
    scores_from_counts,
)
from brainseg_d2.labels import REGIONS, Target, get_target
from brainseg_d2.postprocessing import (
    MASK_SOURCES,
    PostprocessParams,
    masks_and_seeds_from_output,
    postprocess_volume,
)

__all__ = [
    "CASES_COLUMNS",
    "CASES_FILE",
    "EMPTY_SLICE_POLICIES",
    "SUMMARY_FILE",
    "VARIANTS",
    "BrainSegEvaluator",
    "evaluate_volume",
    "metric_key",
    "region_categories",
    "summarize",
]

logger = logging.getLogger(__name__)

#: Per-case table written by the evaluator (one row per volume x name x variant).
CASES_FILE = "brainseg_cases.csv"
#: Flat metrics plus run information, written by the evaluator.
SUMMARY_FILE = "brainseg_summary.json"
CASES_COLUMNS = (
    "volume_id",
    "patient_id",
    "group",
    "name",
    "variant",
    "dice",
    "iou",
    "hd95",
    "sensitivity",
    "precision",
    "lesion_dice",
    "gt_voxels",
    "pred_voxels",
)
EMPTY_SLICE_POLICIES = ("exclude", "include")
VARIANTS = ("raw", "post")
#: Row field -> flat-key metric name; the first group is per volume and averaged over volumes.
_VOLUME_METRICS = {
    "dice": "volume_dice",
    "iou": "volume_iou",
    "hd95": "volume_hd95",
    "sensitivity": "volume_sensitivity",
    "precision": "volume_precision",
    "lesion_dice": "lesion_dice",
}
_SLICE_METRICS = {"slice_dice": "slice_dice", "slice_iou": "slice_iou"}


# ---------------------------------------------------------------------------
# regions and names
# ---------------------------------------------------------------------------


def _as_target(target: Target | str) -> Target:
    return target if isinstance(target, Target) else get_target(target)


def region_categories(target: Target | str) -> dict[str, tuple[int, ...]]:
    """Which categories (0-based indices) form each BraTS region the target can express.

    A category whose tissue codes equal the region's *is* the region (``regions``
    and ``binary`` targets). Otherwise the region is the union of the categories
    whose codes all lie inside it, provided they cover all of its codes
    (``labels``: WT = necrotic | edema | enhancing, TC = necrotic | enhancing).
    Regions nothing covers are left out (TC and ET for ``binary``).

    Args:
        target: a :class:`~brainseg_d2.labels.Target` or its name.

    Returns:
        region name -> category indices, in :data:`~brainseg_d2.labels.REGIONS` order.
    """
    cats = [set(codes) for codes in _as_target(target).categories.values()]
    out: dict[str, tuple[int, ...]] = {}
    for region, codes in REGIONS.items():
        codes = set(codes)
        exact = [i for i, c in enumerate(cats) if c == codes]
        if exact:
            out[region] = (exact[0],)
            continue
        parts = [i for i, c in enumerate(cats) if c <= codes]
        if parts and set().union(*(cats[i] for i in parts)) == codes:
            out[region] = tuple(parts)
    return out


def _named_masks(masks: np.ndarray, target: Target) -> list[tuple[str, str, np.ndarray]]:
    """``(group, name, mask)``: regions first, then categories; masks ``(S, H, W)``."""
    named = [
        ("region", region, np.logical_or.reduce(masks[list(idx)]))
        for region, idx in region_categories(target).items()
    ]
    named += [("category", name, masks[i]) for i, name in enumerate(target.category_names)]
    return named


def metric_key(group: str, name: str) -> str:
    """Part of a flat key naming a region (``WT``) or a category (``cat_necrotic``).

    The ``cat_`` prefix keeps categories apart from regions of the same name
    (the ``regions`` target has categories WT, TC, ET).
    """
    if group == "region":
        return name
    return "cat_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


# ---------------------------------------------------------------------------
# one volume
# ---------------------------------------------------------------------------


def _check_volume_masks(pred: np.ndarray, gt: np.ndarray, target: Target) -> None:
    if pred.ndim != 4 or pred.shape != gt.shape:
        raise ValueError(
            f"pred_masks and gt_masks must both be (C, S, H, W), got {pred.shape} and {gt.shape}"
        )
    if pred.shape[0] != len(target.categories):
        raise ValueError(
            f"target '{target.name}' has {len(target.categories)} categories, "
            f"got masks of shape {pred.shape}"
        )


def evaluate_volume(
    pred_masks: np.ndarray,
    gt_masks: np.ndarray,
    spacing: Sequence[float],
    target: Target | str,
    *,
    slices: Sequence[int] | None = None,
    empty_score: float = 1.0,
    hd95_one_empty: float = BRATS_MAX_DISTANCE_MM,
    empty_slice_policy: str = "exclude",
    lesion_min_volume: float = 0.0,
    lesion_dilation_iters: int = 3,
) -> list[dict]:
    """All metrics of one predicted volume against its ground truth.

    The evaluator calls this once per volume and variant; volume inference and
    non-learned baselines can call it directly to be scored by the same code.

    Args:
        pred_masks: bool ``(C, S, H, W)`` category masks in the target's category
            order (already post-processed, or not).
        gt_masks: bool ``(C, S, H, W)`` ground truth.
        spacing: ``(slice_thickness, row_spacing, column_spacing)`` in mm, the
            array axis order ``(S, H, W)``.
        target: the dataset's :class:`~brainseg_d2.labels.Target` or its name.
        slices: indices of the slices that count for per-slice scores (default:
            all ``S``). Per-volume scores always use the whole volume.
        empty_score: Dice/IoU (volume, slice, lesion-wise) when prediction and
            ground truth are both empty.
        hd95_one_empty: HD95 in mm when exactly one of them is empty (both
            empty: 0).
        empty_slice_policy: ``"exclude"`` drops slices where both are empty from
            the slice scores; ``"include"`` keeps them with ``empty_score``.
        lesion_min_volume: lesions of at most this volume (mm^3) are ignored by
            the lesion-wise Dice (BraTS 2023 GLI: 50; default keeps all).
        lesion_dilation_iters: dilation used to merge and match lesions (BraTS: 3).

    Returns:
        One dict per name, regions first (WT, TC, ET as the target allows), then
        categories, with ``group`` (``region``/``category``), ``name``, ``dice``,
        ``iou``, ``hd95``, ``sensitivity``, ``precision``, ``lesion_dice``,
        ``gt_voxels``, ``pred_voxels`` and the lists ``slice_dice``,
        ``slice_iou`` (scores of the kept slices, in slice order).

    Raises:
        ValueError: on shapes that do not match each other or the target, a bad
            spacing, policy or slice index.
    """
    target = _as_target(target)
    pred_masks = np.asarray(pred_masks).astype(bool, copy=False)
    gt_masks = np.asarray(gt_masks).astype(bool, copy=False)
    _check_volume_masks(pred_masks, gt_masks, target)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3:
        raise ValueError(f"spacing must be (slice, row, column) in mm, got {spacing!r}")
    if empty_slice_policy not in EMPTY_SLICE_POLICIES:
        raise ValueError(
            f"empty_slice_policy must be one of {EMPTY_SLICE_POLICIES}, got {empty_slice_policy!r}"
        )
    num_slices = pred_masks.shape[1]
    kept = range(num_slices) if slices is None else sorted({int(s) for s in slices})
    if kept and (kept[0] < 0 or kept[-1] >= num_slices):
        raise ValueError(f"slice indices must be in [0, {num_slices}), got {list(kept)}")
    kept = set(kept)

    rows = []
    named = zip(_named_masks(pred_masks, target), _named_masks(gt_masks, target))
    for (group, name, pred), (_, _, gt) in named:
        pooled = PooledCounts()
        slice_scores: dict[str, list[float]] = {"dice": [], "iou": []}
        for s in range(num_slices):
            counts = confusion_counts(pred[s], gt[s])
            pooled.add(0, 0, counts)
            tp, fp, fn, _ = counts
            if s in kept and (empty_slice_policy == "include" or tp + fp + fn > 0):
                scores = scores_from_counts(*counts, empty_score=empty_score)
                slice_scores["dice"].append(scores["dice"])
                slice_scores["iou"].append(scores["iou"])
        volume = pooled.scores(empty_score=empty_score)[(0, 0)]
        tp, fp, fn, _ = pooled.counts()[(0, 0)]
        lesions = lesion_wise_dice(
            pred,
            gt,
            spacing=spacing,
            dilation_iters=lesion_dilation_iters,
            min_lesion_volume=lesion_min_volume,
            empty_score=empty_score,
        )
        rows.append(
            {
                "group": group,
                "name": name,
                "dice": volume["dice"],
                "iou": volume["iou"],
                "hd95": hausdorff_distance_95(pred, gt, spacing, one_empty=hd95_one_empty),
                "sensitivity": volume["sensitivity"],
                "precision": volume["precision"],
                "lesion_dice": lesions["lesion_wise_dice"],
                "gt_voxels": tp + fn,
                "pred_voxels": tp + fp,
                "slice_dice": slice_scores["dice"],
                "slice_iou": slice_scores["iou"],
            }
        )
    return rows


# ---------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------


def _nanmean(values: Sequence[float]) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def summarize(rows: Sequence[Mapping]) -> dict[str, float]:
    """Flat metrics over volumes from :func:`evaluate_volume` rows tagged with ``variant``.

    Args:
        rows: dicts with ``variant``, ``group``, ``name``, the per-volume metrics
            and the ``slice_dice``/``slice_iou`` lists, one per volume x name x
            variant (e.g. the evaluator's rows).

    Returns:
        ``{metric}_{key}_{variant}`` -> float, ``key`` from :func:`metric_key`
        (``WT`` or ``cat_<name>``) and ``metric`` one of ``volume_dice``,
        ``volume_iou``, ``volume_hd95``, ``volume_sensitivity``,
        ``volume_precision``, ``lesion_dice`` (means over volumes), ``slice_dice``,
        ``slice_iou`` (means over kept slices of all volumes); plus
        ``{metric}_mean_{variant}``, the mean over regions. NaN values are
        skipped by every mean (NaN only when nothing is left). Beside the
        BraTS-convention means (a volume without the region in prediction and
        ground truth scores 1): ``volume_dice_present_{key}_{variant}``, the mean
        Dice over the volumes whose ground truth holds the region, and
        ``num_present_{key}``, how many those are (the ``n`` of that mean), so a
        region that is never predicted cannot read as 0.5.
    """
    grouped: dict[tuple[str, str, str], list[Mapping]] = defaultdict(list)
    for row in rows:
        grouped[(row["variant"], row["group"], row["name"])].append(row)
    flat: dict[str, float] = {}
    per_region: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (variant, group, name), items in grouped.items():
        key = metric_key(group, name)
        values = {
            metric: _nanmean([r[field] for r in items]) for field, metric in _VOLUME_METRICS.items()
        }
        values.update(
            {
                metric: _nanmean(list(itertools.chain.from_iterable(r[field] for r in items)))
                for field, metric in _SLICE_METRICS.items()
            }
        )
        present = [r for r in items if r["gt_voxels"] > 0]
        values["volume_dice_present"] = _nanmean([r["dice"] for r in present])
        flat[f"num_present_{key}"] = float(len(present))
        for metric, value in values.items():
            flat[f"{metric}_{key}_{variant}"] = value
            if group == "region":
                per_region[(metric, variant)].append(value)
    for (metric, variant), values in per_region.items():
        flat[f"{metric}_mean_{variant}"] = _nanmean(values)
    return dict(sorted(flat.items()))


# ---------------------------------------------------------------------------
# evaluator
# ---------------------------------------------------------------------------


def _encode(masks: np.ndarray) -> list[dict]:
    """Compressed RLE of each ``(H, W)`` mask of a ``(C, H, W)`` stack."""
    return [mask_util.encode(np.asfortranarray(m, np.uint8)) for m in masks]


def _decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """Bool ``(H, W)`` mask of a COCO segmentation (compressed/uncompressed RLE or polygons)."""
    if isinstance(segm, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_util.frPyObjects(segm, height, width)
    elif isinstance(segm, dict):
        rle = segm
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return mask_util.decode(rle).astype(bool)


class _Volume:
    """Geometry and slice dicts of one volume of the dataset."""

    def __init__(self, first: Mapping) -> None:
        self.patient_id = str(first.get("patient_id", first["volume_id"]))
        self.num_slices = int(first["num_slices"])
        self.shape = (int(first["height"]), int(first["width"]))
        row, col = first.get("pixel_spacing", (1.0, 1.0))
        self.spacing = (float(first.get("slice_thickness", 1.0)), float(row), float(col))
        self.slices: dict[int, Mapping] = {}


class BrainSegEvaluator(DatasetEvaluator):
    """Per-slice, per-volume and lesion-wise metrics, raw and post-processed (module doc).

    Each rank encodes its slices' per-category masks as compressed RLE; on
    :meth:`evaluate` these small records are gathered to rank 0, which rebuilds
    every volume, post-processes it in 3D, scores it and writes
    :data:`CASES_FILE` and :data:`SUMMARY_FILE` into ``output_dir``. Other ranks
    return ``{}``. Works beside ``COCOEvaluator`` inside ``DatasetEvaluators``.

    After :meth:`evaluate`, ``rows`` (one dict per volume x name x variant) and
    ``summary`` hold the results on rank 0.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: str | None = None,
        postprocess: PostprocessParams | None = None,
        empty_score: float = 1.0,
        hd95_one_empty: float = BRATS_MAX_DISTANCE_MM,
        empty_slice_policy: str = "exclude",
        lesion_min_volume: float = 0.0,
        lesion_dilation_iters: int = 3,
        mask_source: str = "semantic",
        distributed: bool = True,
    ) -> None:
        """
        Args:
            dataset_name: a registered brainseg dataset (metadata ``target`` and
                dataset dicts with ``volume_id``/``slice_index``).
            output_dir: where the CSV and JSON go; None writes nothing.
            postprocess: the ``post`` variant's settings (default
                ``PostprocessParams()``); its score threshold makes the masks of
                both variants.
            empty_score, hd95_one_empty, empty_slice_policy, lesion_min_volume,
                lesion_dilation_iters: see :func:`evaluate_volume`.
            mask_source: ``semantic`` (the model's ``sem_seg`` probabilities) or
                ``instances`` (union of instance masks); see
                :func:`~brainseg_d2.postprocessing.masks_and_seeds_from_output`.
            distributed: gather records from all ranks (False: this process only).
        """
        if empty_slice_policy not in EMPTY_SLICE_POLICIES:
            raise ValueError(
                f"empty_slice_policy must be one of {EMPTY_SLICE_POLICIES}, "
                f"got {empty_slice_policy!r}"
            )
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
        self._mask_source = mask_source
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "target"):
            raise ValueError(
                f"dataset {dataset_name!r} has no 'target' metadata; register it with "
                "brainseg_d2.data.datasets.register_brainseg_dataset"
            )
        self._dataset_name = dataset_name
        self._target = get_target(meta.target)
        classes = list(getattr(meta, "thing_classes", self._target.category_names))
        if classes != self._target.category_names:
            raise ValueError(
                f"dataset {dataset_name!r} classes {classes} do not match target "
                f"'{self._target.name}' categories {self._target.category_names}"
            )
        self._output_dir = output_dir
        self._post = postprocess if postprocess is not None else PostprocessParams()
        self._raw = PostprocessParams.raw(self._post.score_threshold)
        # Validates the hysteresis length once; None when it is off.
        self._seed_thresholds = self._post.component_thresholds(len(self._target.categories))
        self._volume_kwargs = {
            "empty_score": float(empty_score),
            "hd95_one_empty": float(hd95_one_empty),
            "empty_slice_policy": empty_slice_policy,
            "lesion_min_volume": float(lesion_min_volume),
            "lesion_dilation_iters": int(lesion_dilation_iters),
        }
        self._distributed = distributed
        self.rows: list[dict] = []
        self.summary: dict = {}
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None):
        """Settings from ``cfg.BRAINSEG.EVAL`` and ``cfg.BRAINSEG.POSTPROCESS``."""
        e = cfg.BRAINSEG.EVAL
        return cls(
            dataset_name,
            output_dir=output_dir,
            postprocess=PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS),
            empty_score=e.EMPTY_SCORE,
            hd95_one_empty=e.HD95_ONE_EMPTY,
            empty_slice_policy=e.EMPTY_SLICE_POLICY,
            lesion_min_volume=e.LESION_MIN_VOLUME,
            lesion_dilation_iters=e.LESION_DILATION_ITERS,
            mask_source=cfg.BRAINSEG.MASK_SOURCE,
        )

    def reset(self) -> None:
        self._records: list[dict] = []

    def process(self, inputs, outputs) -> None:
        """Keep, per slice, ``image_id``, ``volume_id``, ``slice_index`` and category RLEs."""
        num_categories = len(self._target.categories)
        for inp, out in zip(inputs, outputs):
            masks, seeds = masks_and_seeds_from_output(
                out, num_categories, self._post, self._mask_source
            )
            record = {
                "image_id": inp["image_id"],
                "volume_id": inp.get("volume_id"),
                "slice_index": inp.get("slice_index"),
                "masks": _encode(masks),
            }
            if seeds is not None:
                record["seeds"] = _encode(seeds)
            self._records.append(record)

    def _volumes(self) -> dict[str, _Volume]:
        volumes: dict[str, _Volume] = {}
        for d in DatasetCatalog.get(self._dataset_name):
            if "volume_id" not in d or "slice_index" not in d:
                raise ValueError(
                    f"dataset {self._dataset_name!r} has images without volume_id/slice_index; "
                    "BrainSegEvaluator needs a dataset written by brainseg-convert"
                )
            vol = volumes.get(d["volume_id"])
            if vol is None:
                vol = volumes[d["volume_id"]] = _Volume(d)
            vol.slices[int(d["slice_index"])] = d
        return volumes

    def _group_records(
        self, records: list[dict], volumes: Mapping[str, _Volume]
    ) -> dict[str, dict[int, list]]:
        """volume_id -> slice_index -> category RLEs; checks every record against the dataset."""
        by_image = {
            d["image_id"]: (vid, s) for vid, vol in volumes.items() for s, d in vol.slices.items()
        }
        grouped: dict[str, dict[int, list]] = defaultdict(dict)
        for rec in records:
            if rec["volume_id"] is not None and rec["slice_index"] is not None:
                key = (rec["volume_id"], int(rec["slice_index"]))
            elif rec["image_id"] in by_image:
                key = by_image[rec["image_id"]]
            else:
                raise ValueError(
                    f"prediction for image_id {rec['image_id']!r} is not an image of dataset "
                    f"{self._dataset_name!r}"
                )
            vid, s = key
            if vid not in volumes or s not in volumes[vid].slices:
                raise ValueError(
                    f"prediction for volume {vid!r} slice {s} is not in dataset "
                    f"{self._dataset_name!r}"
                )
            grouped[vid][s] = rec
        return grouped

    def _arrays(
        self, vol: _Volume, preds: Mapping[int, dict]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Predicted masks, ground truth and seed masks (None without hysteresis)."""
        shape = (len(self._target.categories), vol.num_slices, *vol.shape)
        gt = np.zeros(shape, dtype=bool)
        pred = np.zeros(shape, dtype=bool)
        seeds = np.zeros(shape, dtype=bool) if self._seed_thresholds is not None else None
        for s, d in vol.slices.items():
            if "sem_seg_file_name" in d:
                gt[:, s] = self._target.masks_from_tissue(read_label_png(d["sem_seg_file_name"]))
                continue
            for ann in d.get("annotations", []):
                gt[ann["category_id"], s] |= _decode_segmentation(ann["segmentation"], *vol.shape)
        for s, rec in preds.items():
            for key, out in (("masks", pred), ("seeds", seeds)):
                if out is None:
                    continue
                masks = mask_util.decode(rec[key])  # (H, W, C)
                if masks.shape[:2] != vol.shape:
                    raise ValueError(
                        f"prediction of slice {s} has size {masks.shape[:2]}, "
                        f"the dataset's image is {vol.shape}"
                    )
                out[:, s] = masks.transpose(2, 0, 1).astype(bool)
        return pred, gt, seeds

    def evaluate(self) -> dict:
        """Gather, score on rank 0, write files; returns ``{"brainseg": {key: float}}``."""
        records = self._records
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain.from_iterable(comm.gather(records, dst=0)))
            if not comm.is_main_process():
                return {}
        if not records:
            logger.warning("[BrainSegEvaluator] did not receive valid predictions")
            return {}
        volumes = self._volumes()
        grouped = self._group_records(records, volumes)
        if len(grouped) < len(volumes):
            logger.warning(
                f"[BrainSegEvaluator] {len(volumes) - len(grouped)} of {len(volumes)} volumes "
                "received no prediction and are not scored"
            )
        rows = []
        for vid in sorted(grouped):
            vol, preds = volumes[vid], grouped[vid]
            missing = len(vol.slices) - len(preds)
            if missing:
                logger.warning(
                    f"[BrainSegEvaluator] volume {vid}: {missing} of its {len(vol.slices)} "
                    "slices have no prediction; they count as predicted empty"
                )
            pred, gt, seeds = self._arrays(vol, preds)
            per_variant = []
            for variant, params in zip(VARIANTS, (self._raw, self._post)):
                masks = postprocess_volume(
                    pred, params, enforce_nesting=self._target.nested, seeds=seeds
                )
                scored = evaluate_volume(
                    masks,
                    gt,
                    vol.spacing,
                    self._target,
                    slices=list(preds),
                    **self._volume_kwargs,
                )
                info = {"volume_id": vid, "patient_id": vol.patient_id, "variant": variant}
                per_variant.append([{**info, **row} for row in scored])
            # Raw and post rows of one name side by side.
            rows += itertools.chain.from_iterable(zip(*per_variant))
        flat = summarize(rows)
        self.rows = rows
        self.summary = {
            **flat,
            "dataset_name": self._dataset_name,
            "target": self._target.name,
            "empty_slice_policy": self._volume_kwargs["empty_slice_policy"],
            "postprocess": self._post.to_cfg_dict(),
            "num_volumes": len(grouped),
        }
        self._log_table(flat)
        if self._output_dir:
            self._write(rows)
        return {"brainseg": flat}

    def _write(self, rows: Sequence[Mapping]) -> None:
        PathManager.mkdirs(self._output_dir)
        with PathManager.open(os.path.join(self._output_dir, CASES_FILE), "w") as f:
            writer = csv.DictWriter(f, fieldnames=CASES_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        # Strict JSON has no NaN: undefined values are written as null.
        summary = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.summary.items()
        }
        with PathManager.open(os.path.join(self._output_dir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)

    def _log_table(self, flat: Mapping[str, float]) -> None:
        names = [("region", r) for r in region_categories(self._target)]
        names += [("category", c) for c in self._target.category_names]
        metrics = ("volume_dice", "volume_hd95", "lesion_dice", "slice_dice")
        table = [
            [name] + [flat[f"{m}_{metric_key(group, name)}_{v}"] for m in metrics for v in VARIANTS]
            for group, name in names
        ]
        headers = ["name"] + [f"{m} {v}" for m in metrics for v in VARIANTS]
        logger.info(
            f"BrainSeg metrics on {self._dataset_name} ({self.summary['num_volumes']} volumes, "
            f"empty slices: {self._volume_kwargs['empty_slice_policy']}):\n"
            + tabulate(table, headers=headers, tablefmt="pipe", floatfmt=".4f")
        )
