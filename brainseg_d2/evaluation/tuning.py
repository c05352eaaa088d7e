"""Choosing the post-processing settings on validation volumes, instead of by hand.

The sweep (``brainseg-tune``, ``tools/tune_postprocess.py``, and the demo) runs
the model once over every validation volume, keeps each category's per-voxel
score (:func:`~brainseg_d2.postprocessing.score_maps_from_output`: the dense
head's probability, or the best covering instance's score), and then scores
every setting of a grid of ``BRAINSEG.POSTPROCESS`` keys on those maps:

* ``SCORE_THRESH``: where voxels enter the masks;
* ``MIN_VOLUME_3D``: 3D components smaller than this many voxels go;
* ``COMPONENT_SCORE_THRESH``: hysteresis, a 3D component needs a voxel scoring
  at least this (``()`` is off).

For nested targets (``regions``: WT ⊇ TC ⊇ ET) the two component filters act on
the outermost category, the lesion, and the inner ones keep what lies inside a
surviving lesion (``(v, 0, 0)``): a small tumour core is part of a lesion, not
a lesion of its own. For other targets they act on every category.

Then each category gets its own threshold (``CATEGORY_SCORE_THRESH``), one
category at a time (:func:`refine_category_thresholds`). Every other key keeps
the config's value. The objective is the mean over the
BraTS regions of the mean volume Dice over volumes (both empty = 1, as BraTS
scores it, so a false positive on a tumour-free volume costs a whole 1).

Last, for nested targets, the inner categories get a minimum component volume
of their own (:func:`refine_inner_min_volume`): small core or enhancing
fragments inside a lesion barely move volume Dice, but each one is a false
positive to BraTS 2023's lesion-wise Dice. That step's objective is the mean
over regions of volume Dice and lesion-wise Dice together.
Ties go to the setting that changes the least: the lowest minimum volume,
hysteresis off, and the score threshold closest to 0.5. Volumes are processed one
at a time, so memory does not grow with the validation set.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from brainseg_d2.evaluation.metrics import confusion_counts, scores_from_counts
from brainseg_d2.labels import Target
from brainseg_d2.postprocessing import (
    PostprocessParams,
    postprocess_volume,
    probabilities_to_masks_and_seeds,
)

__all__ = [
    "DEFAULT_GRID",
    "cache_volumes",
    "read_cached",
    "lesion_dice_by_region",
    "refine_category_thresholds",
    "refine_inner_min_volume",
    "tune_postprocess",
    "TuningGrid",
    "best_setting",
    "region_dice",
    "sweep",
    "write_tuned_config",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningGrid:
    """Values tried for each swept ``BRAINSEG.POSTPROCESS`` key (every combination).

    Attributes:
        score_thresh: ``SCORE_THRESH`` values.
        min_volume_3d: ``MIN_VOLUME_3D`` values (voxels).
        component_score_thresh: ``COMPONENT_SCORE_THRESH`` values; ``()`` is off.
        inner_min_volume_3d: for nested targets, ``MIN_VOLUME_3D`` values of the
            inner categories, tried last (:func:`refine_inner_min_volume`).
    """

    score_thresh: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    min_volume_3d: tuple[int, ...] = (0, 50, 200)
    component_score_thresh: tuple[tuple[float, ...], ...] = ((), (0.8,), (0.9,), (0.95,))
    inner_min_volume_3d: tuple[int, ...] = (0, 20, 50, 100, 200)

    def settings(self, base: PostprocessParams, target: Target) -> list[PostprocessParams]:
        """Every combination, as ``base`` with the swept keys replaced (see module doc)."""
        inner = len(target.categories) - 1 if target.nested else 0

        def outer(values: tuple, off) -> tuple:
            return tuple(values) + (off,) * inner if values else ()

        return [
            replace(base, enabled=True, score_threshold=t, min_volume_3d=outer((v,), 0),
                    component_score_threshold=outer(tuple(c), 0.0))
            for t, v, c in itertools.product(
                self.score_thresh, self.min_volume_3d, self.component_score_thresh
            )
        ]  # fmt: skip


DEFAULT_GRID = TuningGrid()


def region_dice(masks: np.ndarray, gt: np.ndarray, target: Target) -> dict[str, float]:
    """Volume Dice per BraTS region the target expresses (both empty = 1).

    Args:
        masks, gt: bool ``(C, S, H, W)`` category masks.
        target: the dataset's target (which categories form which region).

    Returns:
        region name -> Dice.
    """
    from brainseg_d2.evaluation.volume_scores import region_categories

    out = {}
    for region, idx in region_categories(target).items():
        pred = np.logical_or.reduce(masks[list(idx)])
        ref = np.logical_or.reduce(gt[list(idx)])
        out[region] = scores_from_counts(*confusion_counts(pred, ref), empty_score=1.0)["dice"]
    return out


def _needs_2d_steps(params: PostprocessParams) -> bool:
    return bool(
        params.opening_kernel > 1 or params.closing_kernel > 1 or params.fill_holes
        or params.min_area_2d > 0 or params.keep_largest_k > 0
    )  # fmt: skip


def _score_settings_fast(
    scores: np.ndarray, gt: np.ndarray, target: Target, settings: Sequence[PostprocessParams]
) -> list[dict[str, float]]:
    """Region Dice of every setting, labelling each category once per score threshold.

    Exactly :func:`postprocess_volume` for settings whose only steps are the swept
    ones (score thresholds, minimum 3D volume, hysteresis) and nesting: those drop
    whole 3D components of the thresholded masks, so one labelling serves them all.
    """
    from scipy import ndimage

    from brainseg_d2.evaluation.metrics import neighbourhood_structure

    num_categories = len(scores)
    labelled: dict[tuple[int, float, int], tuple[np.ndarray, int, np.ndarray]] = {}

    def components(c: int, threshold: float, connectivity: int):
        key = (c, float(threshold), connectivity)
        if key not in labelled:
            structure = neighbourhood_structure(3, connectivity)
            lab, n = ndimage.label(scores[c] >= np.float32(threshold), structure=structure)
            labelled[key] = (lab, n, np.bincount(lab.ravel(), minlength=n + 1))
        return labelled[key]

    out = []
    for p in settings:
        thresholds = p.score_thresholds(num_categories)
        seeds = p.component_thresholds(num_categories) if p.enabled else None
        min_volumes = p.min_volumes(num_categories)
        kept = np.zeros(scores.shape, dtype=bool)
        for c in range(num_categories):
            lab, n, size = components(c, thresholds[c], p.connectivity_3d)
            keep = size >= min_volumes[c]
            if seeds is not None:
                seeded = np.zeros(n + 1, dtype=bool)
                seeded[lab[scores[c] >= np.float32(seeds[c])]] = True
                keep &= seeded
            keep[0] = False
            kept[c] = keep[lab]
        if target.nested and p.enabled:
            for c in range(1, num_categories):
                kept[c] &= kept[c - 1]
        out.append(region_dice(kept, gt, target))
    return out


def sweep(
    volumes: Iterable[tuple[str, np.ndarray, np.ndarray]],
    target: Target,
    settings: Sequence[PostprocessParams],
) -> list[dict]:
    """Score every setting on every volume.

    Args:
        volumes: ``(volume_id, scores, gt)`` with float ``(C, S, H, W)`` per-voxel
            scores in [0, 1] and bool ``(C, S, H, W)`` ground truth.
        target: the dataset's target.
        settings: post-processing settings to try.

    Returns:
        one dict per setting: ``params``, ``dice`` (region -> mean over volumes),
        ``objective`` (mean over regions) and ``num_volumes``.
    """
    totals: list[dict[str, float]] = [defaultdict(float) for _ in settings]
    fast = not any(_needs_2d_steps(p) for p in settings)
    count = 0
    for volume_id, scores, gt in volumes:
        count += 1
        if fast:
            per_setting = _score_settings_fast(scores, gt, target, settings)
        else:
            per_setting = []
            for params in settings:
                masks, seeds = probabilities_to_masks_and_seeds(scores, params)
                masks = postprocess_volume(
                    masks, params, enforce_nesting=target.nested, seeds=seeds
                )
                per_setting.append(region_dice(masks, gt, target))
        for total, dice in zip(totals, per_setting):
            for region, value in dice.items():
                total[region] += value
        logger.info("tuning: scored %d settings on %s", len(settings), volume_id)
    if not count:
        raise ValueError("no validation volume to tune the post-processing on")
    results = []
    for params, total in zip(settings, totals):
        dice = {region: value / count for region, value in total.items()}
        results.append(
            {"params": params, "dice": dice, "objective": float(np.mean(list(dice.values()))),
             "num_volumes": count}
        )  # fmt: skip
    return results


def _simplicity(params: PostprocessParams) -> tuple:
    """Sort key among equal objectives: the setting that changes the least first."""
    return (
        max(params.min_volume_3d),
        max(params.component_score_threshold, default=0.0),
        abs(params.score_threshold - 0.5),
    )


def best_setting(results: Sequence[Mapping]) -> Mapping:
    """The result with the highest objective (ties: :func:`_simplicity`)."""
    if not results:
        raise ValueError("no tuning results to choose from")
    top = max(round(r["objective"], 6) for r in results)
    tied = [r for r in results if round(r["objective"], 6) == top]
    return min(tied, key=lambda r: _simplicity(r["params"]))


#: First line of every config :func:`write_tuned_config` writes; only such files are replaced.
TUNED_HEADER = "# brainseg_d2: config with the post-processing chosen on validation data"


def write_tuned_config(cfg, params: PostprocessParams, path: str | Path) -> Path:
    """Write ``cfg`` with ``BRAINSEG.POSTPROCESS`` replaced by ``params`` as a full YAML config.

    The file can be passed as ``--config-file`` to every tool (it needs no
    ``_BASE_``). An existing file is replaced only if this function wrote it.

    Raises:
        ValueError: ``path`` exists and was not written here.
    """
    path = Path(path)
    if path.exists():
        try:
            ours = path.read_text(encoding="utf-8").startswith(TUNED_HEADER)
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise ValueError(f"{path} exists and is not a tuned config written here; choose "
                             "another output")
    tuned = cfg.clone()
    tuned.defrost()
    for key, value in params.to_cfg_dict().items():
        tuned.BRAINSEG.POSTPROCESS[key] = list(value) if isinstance(value, tuple) else value
    tuned.freeze()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{TUNED_HEADER}\n{tuned.dump()}", encoding="utf-8")
    return path


def iter_volume_scores(
    model, cfg, dataset_name: str, *, source: str | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Run ``model`` over a registered dataset, one volume at a time.

    Args:
        model: a Detectron2 model in eval mode.
        cfg: the config (test mapper, mask source).
        dataset_name: a dataset written by ``brainseg-convert`` (label PNGs).
        source: mask source (default ``cfg.BRAINSEG.MASK_SOURCE``).

    Yields:
        ``(volume_id, scores, gt)``: float16 ``(C, S, H, W)`` scores (slices the
        dataset lacks score 0) and bool ground truth from the label PNGs.
    """
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper, read_label_png
    from brainseg_d2.labels import get_target
    from brainseg_d2.postprocessing import score_maps_from_output

    source = source or cfg.BRAINSEG.MASK_SOURCE
    target = get_target(MetadataCatalog.get(dataset_name).target)
    num_categories = len(target.categories)
    mapper = BrainSegDatasetMapper(cfg, is_train=False)
    by_volume: dict[str, list[dict]] = defaultdict(list)
    for d in DatasetCatalog.get(dataset_name):
        by_volume[d["volume_id"]].append(d)
    batch = max(int(cfg.SOLVER.IMS_PER_BATCH), 1)
    for volume_id in sorted(by_volume):
        dicts = sorted(by_volume[volume_id], key=lambda d: d["slice_index"])
        first = dicts[0]
        shape = (num_categories, int(first["num_slices"]), first["height"], first["width"])
        scores = np.zeros(shape, dtype=np.float16)
        gt = np.zeros(shape, dtype=bool)
        for start in range(0, len(dicts), batch):
            chunk = dicts[start : start + batch]
            with torch.inference_mode():
                outputs = model([mapper(d) for d in chunk])
            for d, out in zip(chunk, outputs):
                s = int(d["slice_index"])
                scores[:, s] = score_maps_from_output(out, num_categories, source)
                if "sem_seg_file_name" in d:
                    gt[:, s] = target.masks_from_tissue(read_label_png(d["sem_seg_file_name"]))
        yield volume_id, scores.astype(np.float32), gt


def cache_volumes(
    volumes: Iterable[tuple[str, np.ndarray, np.ndarray]], folder: str | Path
) -> list[Path]:
    """Write each ``(volume_id, scores, gt)`` to ``folder`` (compressed, float16 scores).

    The sweeps read the validation volumes several times; computing the model
    once and reading the maps back keeps memory at one volume. Scores are stored
    as float16: a threshold can then move a voxel whose score lies within 1e-3 of
    it, which changes the choice only where two settings are that close.
    """
    paths = []
    for i, (volume_id, scores, gt) in enumerate(volumes):
        path = Path(folder) / f"{i:05d}.npz"
        np.savez_compressed(path, volume_id=volume_id, scores=scores.astype(np.float16), gt=gt)
        paths.append(path)
    return paths


def read_cached(paths: Sequence[Path]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The volumes :func:`cache_volumes` wrote, one at a time."""
    for path in paths:
        with np.load(path) as data:
            yield str(data["volume_id"]), data["scores"].astype(np.float32), data["gt"]


def refine_category_thresholds(
    paths: Sequence[Path],
    target: Target,
    params: PostprocessParams,
    thresholds: Sequence[float],
) -> tuple[PostprocessParams, list[dict]]:
    """Give each category its own score threshold, one category at a time.

    Starting from ``params`` (one threshold for all), each category's threshold
    in turn is swept over ``thresholds`` with the others fixed, keeping the best
    objective (ties keep the current value). For nested targets WT's threshold
    decides the lesions, TC's and ET's then how much of each lesion is core or
    enhancing, so they need not be equal.

    Returns:
        the refined settings and the results of every step.
    """
    num_categories = len(target.categories)
    start = tuple(params.score_thresholds(num_categories))
    current = replace(params, category_score_threshold=start)
    best = None
    history = []
    for c in range(num_categories):
        trials = []
        for t in thresholds:
            values = list(current.category_score_threshold)
            values[c] = float(t)
            trials.append(replace(current, category_score_threshold=tuple(values)))
        results = sweep(read_cached(paths), target, trials)
        history += results
        top = max(round(r["objective"], 6) for r in results)
        tied = [r for r in results if round(r["objective"], 6) == top]
        keep = current.category_score_threshold[c]
        best = min(tied, key=lambda r: abs(r["params"].category_score_threshold[c] - keep))
        current = best["params"]
    return current, history


def lesion_dice_by_region(masks: np.ndarray, gt: np.ndarray, target: Target) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice per region (every ground-truth lesion counted).

    Args:
        masks, gt: bool ``(C, S, H, W)`` category masks.
        target: the dataset's target.

    Returns:
        region name -> lesion-wise Dice (3 dilations, 26-connectivity, each false
        positive component adds 0; see ``lesion_metrics.brats2023_lesion_metrics``).
    """
    from brainseg_d2.evaluation.lesion_metrics import brats2023_lesion_metrics
    from brainseg_d2.evaluation.volume_scores import region_categories

    out = {}
    for region, idx in region_categories(target).items():
        pred = np.logical_or.reduce(masks[list(idx)])
        ref = np.logical_or.reduce(gt[list(idx)])
        out[region] = brats2023_lesion_metrics(
            pred, ref, min_lesion_volume=0.0, compute_hd95=False
        )["lesion_wise_dice"]
    return out


def refine_inner_min_volume(
    paths: Sequence[Path],
    target: Target,
    params: PostprocessParams,
    volumes: Sequence[int],
) -> tuple[PostprocessParams, list[dict]]:
    """Choose one minimum component volume for the inner categories of a nested target.

    Each of ``volumes`` is tried for every inner category (the outer one keeps
    its value); the objective is the mean over regions of volume Dice and
    lesion-wise Dice (:func:`lesion_dice_by_region`), averaged over volumes.
    Ties keep the smallest volume. Non-nested targets are returned unchanged.

    Returns:
        the chosen settings and one result per tried volume (``dice``,
        ``lesion_dice``, ``objective``, ``num_volumes``).
    """
    if not target.nested or not volumes:
        return params, []
    num_categories = len(target.categories)
    outer = params.min_volumes(num_categories)[0]
    trials = [
        replace(params, min_volume_3d=(outer,) + (int(v),) * (num_categories - 1))
        for v in sorted(set(volumes))
    ]
    sums = [(defaultdict(float), defaultdict(float)) for _ in trials]
    count = 0
    for _volume_id, scores, gt in read_cached(paths):
        count += 1
        for p, (dice_sum, lesion_sum) in zip(trials, sums):
            masks, seeds = probabilities_to_masks_and_seeds(scores, p)
            masks = postprocess_volume(masks, p, enforce_nesting=True, seeds=seeds)
            for region, value in region_dice(masks, gt, target).items():
                dice_sum[region] += value
            for region, value in lesion_dice_by_region(masks, gt, target).items():
                lesion_sum[region] += value
    if not count:
        raise ValueError("no validation volume to tune the post-processing on")
    results = []
    for p, (dice_sum, lesion_sum) in zip(trials, sums):
        dice = {k: v / count for k, v in dice_sum.items()}
        lesion = {k: v / count for k, v in lesion_sum.items()}
        objective = float(np.mean([(dice[k] + lesion[k]) / 2 for k in dice]))
        results.append({"params": p, "dice": dice, "lesion_dice": lesion,
                        "objective": objective, "num_volumes": count})  # fmt: skip
    top = max(round(r["objective"], 6) for r in results)
    best = next(r for r in results if round(r["objective"], 6) == top)  # smallest volume first
    return best["params"], results


def tune_postprocess(
    model, cfg, dataset_name: str, grid: TuningGrid = DEFAULT_GRID
) -> tuple[PostprocessParams, list[dict]]:
    """Sweep ``grid`` on a validation dataset, then per-category thresholds; the best setting.

    Args:
        model: a trained Detectron2 model in eval mode.
        cfg: its config; keys the grid does not sweep keep their values from
            ``cfg.BRAINSEG.POSTPROCESS``.
        dataset_name: the registered validation dataset.
        grid: values to try.

    Returns:
        the chosen :class:`PostprocessParams` and every result of :func:`sweep`
        (the grid's, then the per-category thresholds', then the inner minimum volumes').
    """
    import tempfile

    from detectron2.data import MetadataCatalog

    from brainseg_d2.labels import get_target

    target = get_target(MetadataCatalog.get(dataset_name).target)
    base = PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS)
    with tempfile.TemporaryDirectory(prefix="brainseg-tune-") as tmp:
        paths = cache_volumes(iter_volume_scores(model, cfg, dataset_name), tmp)
        results = sweep(read_cached(paths), target, grid.settings(base, target))
        best = best_setting(results)
        params, refined = refine_category_thresholds(
            paths, target, best["params"], grid.score_thresh
        )
        params, inner = refine_inner_min_volume(paths, target, params, grid.inner_min_volume_3d)
    results += refined + inner
    chosen = next(r for r in reversed(results) if r["params"] == params)
    logger.info(
        "tuning on %s (%d volumes): best %s, objective %.4f, Dice %s",
        dataset_name, chosen["num_volumes"], params.to_cfg_dict(), chosen["objective"],
        {k: round(v, 4) for k, v in chosen["dice"].items()},
    )  # fmt: skip
    return params, results
