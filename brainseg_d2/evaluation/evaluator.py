"""Volume metrics of Mask R-CNN slice predictions: :class:`BrainSegEvaluator`.

Data path::

    outputs["sem_seg"] (C, H, W) probabilities, or outputs["instances"] (N, H, W)
        --masks_and_seeds_from_output(score_threshold, mask source)--> (C, H, W)
        --compressed RLE per category--> small per-slice records --comm.gather--> rank 0
        (with hysteresis, ``component_score_threshold``, also seed masks made the same way)
    rank 0: records --> (C, S, H, W) per volume; ground truth from the original label
        map (GroundTruthReader) --postprocess_volume(raw | post)--> evaluate_volume
        --> rows --> summarize

One implementation, two entry points: :func:`evaluate_volume` scores the named
masks of a volume with :func:`~brainseg_d2.evaluation.case_scores.score_named_masks`,
the function behind ``brainseg-evaluate``'s
:func:`~brainseg_d2.evaluation.case_scores.score_label_maps`; the same masks give
the same numbers in both (a test writes them as NIfTI and compares).

Names and variants. Every metric is reported for each *name*: the BraTS regions the
target can express (group ``region``: WT, TC, ET for ``labels`` and ``regions``,
WT only for ``binary``; see :func:`region_categories`), then the dataset's
categories that are not one of those regions (group ``category``: necrotic and
edema for ``labels``; none for ``regions`` and ``binary``, whose categories are
regions; see :func:`named_categories`). Each comes in two *variants* side by
side: ``raw`` (score threshold only, :meth:`PostprocessParams.raw`) and ``post``
(``cfg.BRAINSEG.POSTPROCESS``, 2D and 3D steps of :func:`postprocess_volume` on
the reassembled volume, with nesting enforced for nested targets).

Metrics (per name and variant; :mod:`~brainseg_d2.evaluation.case_scores` states
the conventions, :class:`~brainseg_d2.evaluation.case_scores.ScoringSettings`
holds them):

* per volume, 3D over all ``num_slices`` slices, spacing ``(slice_thickness,
  pixel_spacing[0], pixel_spacing[1])`` (the slice-array axis order): Dice, IoU,
  sensitivity, specificity, precision, HD95 (MONAI and panoptica conventions),
  volumes and volume difference in mL; BraTS 2023 lesion-wise Dice and HD95; BraTS
  2024+ RQ, SQ, PQ and SQ HD95. Both masks empty: Dice/IoU/lesion Dice score
  ``empty_score`` and the row is flagged ``both_empty``; exactly one empty: HD95
  is the penalty ``hd95_penalty``
  (:data:`~brainseg_d2.evaluation.metrics.HD95_PENALTY_MM`, 374 mm).
* per slice: Dice and IoU of every evaluated slice (a slice of the dataset that
  received a prediction), subject to the *empty-slice policy*:
  ``"exclude"`` (default) skips slices where prediction and ground truth are
  both empty, so the slice mean measures tumour slices and false-positive
  slices only and does not depend on how many healthy slices a volume has;
  ``"include"`` keeps them, scoring ``empty_score``.

Ground truth is the original label map of each volume, every voxel
(:class:`~brainseg_d2.data.ground_truth.GroundTruthReader`: ``volumes.json``'s
``source.mask`` through the recorded geometry); where that file is not available
it is the converter's label PNGs (said once in the log), and for datasets without
them the annotations' RLE masks. Slices absent from the dataset (the converter
drops slices without brain) are predicted empty; they count in the 3D volume.

Aggregates (:func:`summarize`): per-volume metrics are averaged over volumes;
slice metrics over all kept slices of all volumes; ``*_mean_*`` keys average the
regions; ``num_present_*`` and ``volume_dice_present_*`` give the *n* of the
volumes whose ground truth holds a name and the Dice mean over them. Means skip
NaN (BraTS 2024+ qualities are NaN for a volume without lesions on either side).

Files (``output_dir``): :data:`CASES_FILE` (one row per volume x name x variant),
:data:`LESIONS_FILE` (one row per reference lesion), :data:`SUMMARY_FILE` (the
flat metrics, settings and run information: model, weights, versions, date) and,
built from a config, :data:`CONFIG_FILE` (the config evaluated with). The HTML
report (:mod:`brainseg_d2.report`) reads them.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from brainseg_d2.data.ground_truth import GroundTruthReader
from brainseg_d2.evaluation.case_scores import (
    LESION_COLUMNS,
    SCORE_COLUMNS,
    ScoringSettings,
    pop_lesion_records,
    score_named_masks,
    summarize_cases,
)
from brainseg_d2.evaluation.lesion_metrics import LesionSettings
from brainseg_d2.evaluation.metrics import confusion_counts, scores_from_counts
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
    "CONFIG_FILE",
    "EMPTY_SLICE_POLICIES",
    "LESIONS_FILE",
    "SUMMARY_FILE",
    "VARIANTS",
    "BrainSegEvaluator",
    "evaluate_volume",
    "metric_key",
    "named_categories",
    "region_categories",
    "scoring_settings_from_cfg",
    "summarize",
    "write_cases_csv",
]

logger = logging.getLogger(__name__)

#: Per-case table written by the evaluator (one row per volume x name x variant).
CASES_FILE = "brainseg_cases.csv"
#: Per-lesion table (one row per reference lesion x definition x name x variant).
LESIONS_FILE = "brainseg_lesions.csv"
#: Flat metrics plus run information, written by the evaluator.
SUMMARY_FILE = "brainseg_summary.json"
#: The config the evaluator was built from (:meth:`BrainSegEvaluator.from_config`).
CONFIG_FILE = "brainseg_config.yaml"
CASES_COLUMNS = ("volume_id", "patient_id", "group", "name", "variant", "gt_source",
                 *SCORE_COLUMNS)  # fmt: skip
EMPTY_SLICE_POLICIES = ("exclude", "include")
VARIANTS = ("raw", "post")
#: Row field -> flat-key metric name; averaged over volumes.
_VOLUME_METRICS = {
    "dice": "volume_dice",
    "iou": "volume_iou",
    "hd95": "volume_hd95",
    "hd95_pooled": "volume_hd95_pooled",
    "sensitivity": "volume_sensitivity",
    "specificity": "volume_specificity",
    "precision": "volume_precision",
    "volume_diff_ml": "volume_diff_ml",
    "lesion_dice": "lesion_dice",
    "lesion_hd95": "lesion_hd95",
    "rq": "lesion_rq",
    "sq": "lesion_sq",
    "pq": "lesion_pq",
    "sq_hd95": "lesion_sq_hd95",
}
#: Row field (a list per volume) -> flat-key metric name; averaged over slices.
_SLICE_METRICS = {"slice_dice": "slice_dice", "slice_iou": "slice_iou"}


def scoring_settings_from_cfg(cfg) -> ScoringSettings:
    """:class:`ScoringSettings` from ``cfg.BRAINSEG.EVAL`` (penalty, empty score, lesions)."""
    e = cfg.BRAINSEG.EVAL
    return ScoringSettings(
        hd95_penalty=float(e.HD95_PENALTY),
        empty_score=float(e.EMPTY_SCORE),
        lesion=LesionSettings(
            dilation_iters=int(e.LESION_DILATION_ITERS),
            min_lesion_volume=float(e.LESION_MIN_VOLUME),
        ),
    )


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


def named_categories(target: Target | str) -> list[tuple[str, str, tuple[int, ...]]]:
    """What is scored: ``(group, name, category indices)``, regions first, then the
    categories that are not one of those regions (each mask is scored once, as
    :meth:`~brainseg_d2.labels.LabelConvention.evaluation_names` does for label maps).

    ``labels``: WT, TC, ET, necrotic, edema (enhancing *is* ET); ``regions``: WT,
    TC, ET; ``binary``: WT.
    """
    target = _as_target(target)
    regions = region_categories(target)
    region_codes = {frozenset(REGIONS[r]) for r in regions}
    named = [("region", region, idx) for region, idx in regions.items()]
    named += [
        ("category", name, (i,))
        for i, (name, codes) in enumerate(target.categories.items())
        if frozenset(codes) not in region_codes
    ]
    return named


def metric_key(group: str, name: str) -> str:
    """Part of a flat key naming a region (``WT``) or a category (``cat_necrotic``).

    The ``cat_`` prefix keeps categories apart from regions of the same name.
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


def _slice_scores(
    pred: np.ndarray, gt: np.ndarray, kept: np.ndarray, policy: str, empty_score: float
) -> dict[str, list[float]]:
    """Dice and IoU of the kept slices of ``(S, H, W)`` masks under the empty-slice policy."""
    out: dict[str, list[float]] = {"slice_dice": [], "slice_iou": []}
    for s in kept:
        counts = confusion_counts(pred[s], gt[s])
        tp, fp, fn, _ = counts
        if policy == "include" or tp + fp + fn > 0:
            scores = scores_from_counts(*counts, empty_score=empty_score)
            out["slice_dice"].append(scores["dice"])
            out["slice_iou"].append(scores["iou"])
    return out


def evaluate_volume(
    pred_masks: np.ndarray,
    gt_masks: np.ndarray,
    spacing: Sequence[float],
    target: Target | str,
    *,
    slices: Sequence[int] | None = None,
    settings: ScoringSettings | None = None,
    empty_slice_policy: str = "exclude",
    with_lesions: bool = False,
) -> list[dict]:
    """All metrics of one predicted volume against its ground truth.

    The evaluator calls this once per volume and variant; volume inference and
    non-learned baselines can call it directly to be scored by the same code.
    The per-volume metrics are those of ``brainseg-evaluate``
    (:func:`~brainseg_d2.evaluation.case_scores.score_named_masks`).

    Args:
        pred_masks: bool ``(C, S, H, W)`` category masks in the target's category
            order (already post-processed, or not).
        gt_masks: bool ``(C, S, H, W)`` ground truth.
        spacing: ``(slice_thickness, row_spacing, column_spacing)`` in mm, the
            array axis order ``(S, H, W)``.
        target: the dataset's :class:`~brainseg_d2.labels.Target` or its name.
        slices: indices of the slices that count for per-slice scores (default:
            all ``S``). Per-volume scores always use the whole volume.
        settings: scoring conventions (HD95 penalty, empty score, BraTS 2023
            lesion settings); default :class:`ScoringSettings` (BraTS GLI).
        empty_slice_policy: ``"exclude"`` drops slices where both are empty from
            the slice scores; ``"include"`` keeps them with ``empty_score``.
        with_lesions: also return the per-lesion records (``lesions_2023``,
            ``lesions_panoptic``; see
            :func:`~brainseg_d2.evaluation.case_scores.pop_lesion_records`).

    Returns:
        One dict per name of :func:`named_categories` with ``group``
        (``region``/``category``), ``name``, the per-volume metrics of
        :data:`~brainseg_d2.evaluation.case_scores.SCORE_COLUMNS` (``dice``,
        ``hd95``, ``lesion_dice``, ``pq``, ``ref_voxels``, ``both_empty``, ...)
        and the lists ``slice_dice``, ``slice_iou`` (scores of the kept slices,
        in slice order).

    Raises:
        ValueError: on shapes that do not match each other or the target, a bad
            spacing, policy or slice index.
    """
    target = _as_target(target)
    settings = settings or ScoringSettings()
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
    kept = np.arange(num_slices) if slices is None else np.unique(np.asarray(slices, dtype=int))
    if kept.size and (kept[0] < 0 or kept[-1] >= num_slices):
        raise ValueError(f"slice indices must be in [0, {num_slices}), got {kept.tolist()}")

    named = [
        (group, name, np.logical_or.reduce(pred_masks[list(idx)]),
         np.logical_or.reduce(gt_masks[list(idx)]))
        for group, name, idx in named_categories(target)
    ]  # fmt: skip
    rows = score_named_masks(named, spacing, settings, with_lesions=with_lesions)
    for row, (_, _, pred, gt) in zip(rows, named):
        del row["missing"]
        row.update(_slice_scores(pred, gt, kept, empty_slice_policy, settings.empty_score))
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

    The means are those of :func:`~brainseg_d2.evaluation.case_scores.summarize_cases`
    (``brainseg-evaluate``'s summary), flattened.

    Args:
        rows: dicts with ``variant``, ``group``, ``name``, the per-volume metrics
            and the ``slice_dice``/``slice_iou`` lists, one per volume x name x
            variant (e.g. the evaluator's rows).

    Returns:
        ``{metric}_{key}_{variant}`` -> float, ``key`` from :func:`metric_key`
        (``WT`` or ``cat_<name>``) and ``metric`` one of ``volume_dice``,
        ``volume_iou``, ``volume_hd95``, ``volume_hd95_pooled``,
        ``volume_sensitivity``, ``volume_specificity``, ``volume_precision``,
        ``volume_diff_ml``, ``lesion_dice``, ``lesion_hd95`` (BraTS 2023),
        ``lesion_rq``, ``lesion_sq``, ``lesion_pq``, ``lesion_sq_hd95`` (BraTS
        2024+; means over volumes), ``slice_dice``, ``slice_iou`` (means over kept
        slices of all volumes); plus ``{metric}_mean_{variant}``, the mean over
        regions. NaN values are skipped by every mean (NaN only when nothing is
        left). Beside the BraTS-convention means (a volume without the region in
        prediction and ground truth scores 1): ``volume_dice_present_{key}_{variant}``,
        the mean Dice over the volumes whose ground truth holds the name, and
        ``num_present_{key}``, how many those are (the ``n`` of that mean), so a
        region that is never predicted cannot read as 0.5.
    """
    by_variant: dict[str, list[Mapping]] = defaultdict(list)
    for row in rows:
        by_variant[row["variant"]].append(row)
    flat: dict[str, float] = {}
    per_region: dict[tuple[str, str], list[float]] = defaultdict(list)
    for variant, items in by_variant.items():
        slices: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
        for row in items:
            slices[(row["group"], row["name"])].append(row)
        for entry in summarize_cases(items):
            group, name = entry["group"], entry["name"]
            key = metric_key(group, name)
            values = {
                metric: float(entry["mean"][field]) for field, metric in _VOLUME_METRICS.items()
            }
            for field, metric in _SLICE_METRICS.items():
                scores = itertools.chain.from_iterable(
                    r.get(field, ()) for r in slices[(group, name)]
                )
                values[metric] = _nanmean(list(scores))
            values["volume_dice_present"] = float(entry["mean_exists"]["dice"])
            flat[f"num_present_{key}"] = float(entry["n_exists"])
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


def _csv_value(value):
    return "" if isinstance(value, float) and math.isnan(value) else value


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/inf
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_cases_csv(
    path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str] = CASES_COLUMNS
) -> None:
    """Write rows as the evaluator's per-case table (NaN as an empty cell)."""
    PathManager.mkdirs(os.path.dirname(str(path)) or ".")
    with PathManager.open(str(path), "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)


def run_info_from_cfg(cfg) -> dict:
    """What the report names as the run: model, weights, output folder, versions."""
    import detectron2
    import torch

    from brainseg_d2 import __version__

    m = cfg.MODEL
    backbone = m.BACKBONE.NAME
    if "resnet" in backbone.lower():
        backbone += f" (ResNet-{m.RESNETS.DEPTH})"
    return {
        "model": f"{m.META_ARCHITECTURE}, {backbone}",
        # What the config names; a model evaluated in memory (training, the demo) may
        # have moved on from it, and the report says so when it is empty.
        "weights": m.WEIGHTS,
        "output_dir": cfg.OUTPUT_DIR,
        "versions": {
            "brainseg_d2": __version__,
            "detectron2": detectron2.__version__,
            "torch": torch.__version__,
        },
    }


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
    every volume, reads its ground truth (the original label map), post-processes
    the prediction in 3D, scores it and writes :data:`CASES_FILE`,
    :data:`LESIONS_FILE` and :data:`SUMMARY_FILE` into ``output_dir``. Other ranks
    return ``{}``. Works beside ``COCOEvaluator`` inside ``DatasetEvaluators``.

    After :meth:`evaluate`, ``rows`` (one dict per volume x name x variant),
    ``lesions`` (one per reference lesion) and ``summary`` hold the results on
    rank 0.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: str | None = None,
        postprocess: PostprocessParams | None = None,
        settings: ScoringSettings | None = None,
        empty_slice_policy: str = "exclude",
        mask_source: str = "semantic",
        distributed: bool = True,
        run_info: Mapping | None = None,
        config_text: str | None = None,
    ) -> None:
        """
        Args:
            dataset_name: a registered brainseg dataset (metadata ``target`` and
                dataset dicts with ``volume_id``/``slice_index``).
            output_dir: where the CSVs and JSON go; None writes nothing.
            postprocess: the ``post`` variant's settings (default
                ``PostprocessParams()``); its score threshold makes the masks of
                both variants.
            settings: scoring conventions (HD95 penalty, empty score, BraTS 2023
                lesion settings); default :class:`ScoringSettings`.
            empty_slice_policy: see :func:`evaluate_volume`.
            mask_source: ``semantic`` (the model's ``sem_seg`` probabilities) or
                ``instances`` (union of instance masks); see
                :func:`~brainseg_d2.postprocessing.masks_and_seeds_from_output`.
            distributed: gather records from all ranks (False: this process only).
            run_info: what the summary and report say about the run (model,
                weights, versions; :func:`run_info_from_cfg`).
            config_text: the config as YAML, written to :data:`CONFIG_FILE`.
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
        self._raw = self._post.thresholds_only()
        # Validates the hysteresis length once; None when it is off.
        self._seed_thresholds = self._post.component_thresholds(len(self._target.categories))
        self._settings = settings or ScoringSettings()
        self._empty_slice_policy = empty_slice_policy
        self._distributed = distributed
        self._run_info = dict(run_info or {})
        self._config_text = config_text
        self._ground_truth: GroundTruthReader | None = None
        self.rows: list[dict] = []
        self.lesions: list[dict] = []
        self.summary: dict = {}
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None):
        """Settings from ``cfg.BRAINSEG.EVAL`` and ``cfg.BRAINSEG.POSTPROCESS``."""
        return cls(
            dataset_name,
            output_dir=output_dir,
            postprocess=PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS),
            settings=scoring_settings_from_cfg(cfg),
            empty_slice_policy=cfg.BRAINSEG.EVAL.EMPTY_SLICE_POLICY,
            mask_source=cfg.BRAINSEG.MASK_SOURCE,
            run_info=run_info_from_cfg(cfg),
            config_text=cfg.dump(),
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

    def _predictions(
        self, vol: _Volume, preds: Mapping[int, dict]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted masks and seed masks (None without hysteresis), ``(C, S, H, W)``."""
        shape = (len(self._target.categories), vol.num_slices, *vol.shape)
        pred = np.zeros(shape, dtype=bool)
        seeds = np.zeros(shape, dtype=bool) if self._seed_thresholds is not None else None
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
        return pred, seeds

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
        if self._ground_truth is None:
            self._ground_truth = GroundTruthReader.for_dataset(self._dataset_name, self._target)
        rows, lesions = [], []
        for vid in sorted(grouped):
            vol, preds = volumes[vid], grouped[vid]
            missing = len(vol.slices) - len(preds)
            if missing:
                logger.warning(
                    f"[BrainSegEvaluator] volume {vid}: {missing} of its {len(vol.slices)} "
                    "slices have no prediction; they count as predicted empty"
                )
            pred, seeds = self._predictions(vol, preds)
            gt, gt_source = self._ground_truth.masks(vid, vol.num_slices, vol.shape, vol.slices)
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
                    settings=self._settings,
                    empty_slice_policy=self._empty_slice_policy,
                    with_lesions=True,
                )
                info = {"volume_id": vid, "patient_id": vol.patient_id, "variant": variant}
                for row in scored:
                    lesions += [{**info, **rec} for rec in pop_lesion_records(row)]
                per_variant.append([{**info, "gt_source": gt_source, **row} for row in scored])
            # Raw and post rows of one name side by side.
            rows += itertools.chain.from_iterable(zip(*per_variant))
        flat = summarize(rows)
        self.rows, self.lesions = rows, lesions
        self.summary = {
            **flat,
            "dataset_name": self._dataset_name,
            "target": self._target.name,
            "empty_slice_policy": self._empty_slice_policy,
            "postprocess": self._post.to_cfg_dict(),
            "num_volumes": len(grouped),
            "ground_truth": dict(sorted(self._ground_truth.sources.items())),
            "settings": {
                "hd95_penalty_mm": self._settings.hd95_penalty,
                "empty_score": self._settings.empty_score,
                "lesion_dilation_iters": self._settings.lesion.dilation_iters,
                "lesion_min_volume_mm3": self._settings.lesion.min_lesion_volume,
                "matching_threshold": self._settings.matching_threshold,
            },
            "run": {**self._run_info, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        }
        self._ground_truth.sources.clear()
        self._log_table(flat)
        if self._output_dir:
            self._write(rows, lesions)
        return {"brainseg": flat}

    def _write(self, rows: Sequence[Mapping], lesions: Sequence[Mapping]) -> None:
        PathManager.mkdirs(self._output_dir)
        write_cases_csv(os.path.join(self._output_dir, CASES_FILE), rows)
        write_cases_csv(
            os.path.join(self._output_dir, LESIONS_FILE),
            lesions,
            ("volume_id", "patient_id", "variant", *LESION_COLUMNS),
        )
        if self._config_text is not None:
            with PathManager.open(os.path.join(self._output_dir, CONFIG_FILE), "w") as f:
                f.write(self._config_text)
            self.summary["run"]["config"] = CONFIG_FILE
        with PathManager.open(os.path.join(self._output_dir, SUMMARY_FILE), "w") as f:
            json.dump(_json_safe(self.summary), f, indent=2)

    def _log_table(self, flat: Mapping[str, float]) -> None:
        metrics = ("volume_dice", "volume_hd95", "lesion_dice", "slice_dice")
        names = named_categories(self._target)
        table = [
            [name, int(flat[f"num_present_{metric_key(group, name)}"])]
            + [flat[f"{m}_{metric_key(group, name)}_{v}"] for m in metrics for v in VARIANTS]
            for group, name, _ in names
        ]
        headers = ["name", "n present"] + [f"{m} {v}" for m in metrics for v in VARIANTS]
        logger.info(
            f"BrainSeg metrics on {self._dataset_name} ({self.summary['num_volumes']} volumes, "
            f"empty slices: {self._empty_slice_policy}; HD95 "
            f"{self._settings.hd95_penalty:g} mm is a penalty, not a distance):\n"
            + tabulate(table, headers=headers, tablefmt="pipe", floatfmt=".4f")
        )
