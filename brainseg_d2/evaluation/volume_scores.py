"""Scoring one volume's category masks, and summarising volumes into flat metrics.

What is scored for a target (:func:`named_categories`): the BraTS regions it can
express (group ``region``: WT, TC, ET for ``labels`` and ``regions``, WT only for
``binary``; :func:`region_categories`), then its categories that are not one of
those regions (group ``category``: necrotic and edema for ``labels``).
:func:`evaluate_volume` scores ``(C, S, H, W)`` masks of one volume per name with
:func:`~brainseg_d2.evaluation.case_scores.score_named_masks`, the core of
``brainseg-evaluate`` too, so the same masks give the same numbers in both, and
adds per-slice Dice and IoU under an empty-slice policy. :func:`summarize` turns
rows of many volumes, tagged with a *variant* (``raw``, ``post``), into the flat
``{metric}_{name}_{variant}`` keys that Detectron2's evaluation loop reports.

Used by :class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator`, the demo's
non-learned baseline and post-processing tuning; free of Detectron2.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from brainseg_d2.evaluation.case_scores import ScoringSettings, score_named_masks
from brainseg_d2.evaluation.case_summary import summarize_cases
from brainseg_d2.evaluation.lesion_metrics import LesionSettings
from brainseg_d2.evaluation.metrics import confusion_counts, scores_from_counts
from brainseg_d2.labels import REGIONS, Target, get_target

__all__ = [
    "EMPTY_SLICE_POLICIES",
    "VARIANTS",
    "evaluate_volume",
    "metric_key",
    "named_categories",
    "region_categories",
    "scoring_settings_from_cfg",
    "summarize",
]

#: Per-slice scores: drop slices where prediction and ground truth are both empty,
#: or keep them with the empty score.
EMPTY_SLICE_POLICIES = ("exclude", "include")
#: Score threshold only, and the configured post-processing.
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

    The means are those of :func:`~brainseg_d2.evaluation.case_summary.summarize_cases`
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
