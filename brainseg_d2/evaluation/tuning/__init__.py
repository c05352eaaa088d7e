"""Choosing the post-processing settings on validation volumes, instead of by hand.

The sweep (``tools/tune_postprocess.py`` and the demo) runs
the model once over every validation volume, keeps each category's per-voxel
score (:func:`~brainseg_d2.postprocessing.score_maps_from_output`: the dense
head's probability, or the best covering instance's score), and then scores
every setting of a grid of ``BRAINSEG.POSTPROCESS`` keys on those maps:

* ``SCORE_THRESH``: where voxels enter the masks;
* ``MIN_VOLUME_ML``: 3D components smaller than this many millilitres go
  (``MIN_VOLUME_3D``, the same in voxels, is set to 0), in physical units so that
  the choice holds on scans of another voxel size;
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

Then, for nested targets, the innermost category's ``MIN_TOTAL_ML`` (0, 0.25, 0.5,
1 or 2 ml): below that total, a volume's enhancing call becomes core, as BraTS
submissions relabel a small enhancing volume as necrosis. A tumour without
enhancement scores ET Dice 1 with no enhancing voxel and 0 with any, so one
speck costs a whole case. Same objective; ties keep the smallest.

Then, for nested targets, ``CORE_HULL_MARGIN`` (off, or 0, 1, 2, 4 voxels): each
tumour-core component that holds enhancing tumour keeps only what lies within the
convex hull of that enhancement, grown by the margin. Same objective as the step
before; ties keep it off, then the widest margin.

Elsewhere ties go to the setting that changes the least: the lowest minimum volume,
hysteresis off, and the score threshold closest to 0.5. Volumes are processed one
at a time, so memory does not grow with the validation set.
"""

from __future__ import annotations

import logging

from brainseg_d2.evaluation.tuning.cache import cache_volumes, iter_volume_scores, read_cached
from brainseg_d2.evaluation.tuning.config_file import (
    TUNED_HEADER,
    check_tuned_output,
    write_tuned_config,
)
from brainseg_d2.evaluation.tuning.grid import (
    DEFAULT_GRID,
    TuningGrid,
    best_setting,
    region_dice,
    sweep,
)
from brainseg_d2.evaluation.tuning.refine import (
    lesion_dice_by_region,
    refine_category_thresholds,
    refine_core_hull_margin,
    refine_inner_min_volume,
    refine_min_total_ml,
)
from brainseg_d2.postprocessing import PostprocessParams

__all__ = [
    "DEFAULT_GRID",
    "STAGES",
    "TUNED_HEADER",
    "TuningGrid",
    "best_setting",
    "cache_volumes",
    "check_tuned_output",
    "iter_volume_scores",
    "lesion_dice_by_region",
    "read_cached",
    "refine_category_thresholds",
    "refine_core_hull_margin",
    "refine_inner_min_volume",
    "refine_min_total_ml",
    "region_dice",
    "sweep",
    "tune_postprocess",
    "write_tuned_config",
]

logger = logging.getLogger(__name__)

#: The tuning's stages, in order, and the objective each one maximises.
STAGES = {
    "grid": "mean volume Dice",
    "category thresholds": "mean volume Dice",
    "inner minimum volume": "mean of volume and lesion-wise Dice",
    "least enhancing total": "mean of volume and lesion-wise Dice",
    "core hull margin": "mean of volume and lesion-wise Dice",
}


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
        (the grid's, then the per-category thresholds', the inner minimum volumes',
        the least enhancing totals', then the core hull margins'), each with its
        ``stage`` (:data:`STAGES`); the chosen one has ``chosen`` True.
    """
    import tempfile

    from detectron2.data import DatasetCatalog, MetadataCatalog

    from brainseg_d2.labels import get_target

    if dataset_name not in DatasetCatalog.list():
        known = ", ".join(n for n in DatasetCatalog.list() if n.endswith("_val")
                          and MetadataCatalog.get(n).get("evaluator_type") == "brainseg") or "none"
        raise ValueError(f"dataset {dataset_name!r} is not registered (validation splits: "
                         f"{known}); is DETECTRON2_DATASETS the folder holding it?")
    if not any("sem_seg_file_name" in d for d in DatasetCatalog.get(dataset_name)):
        raise ValueError(f"dataset {dataset_name!r} has no label maps (an unlabelled split?): "
                         "tuning scores against them; give a labelled validation split")
    target = get_target(MetadataCatalog.get(dataset_name).target)
    base = PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS)
    with tempfile.TemporaryDirectory(prefix="brainseg-tune-") as tmp:
        paths = cache_volumes(iter_volume_scores(model, cfg, dataset_name), tmp)
        results = sweep(read_cached(paths), target, grid.settings(base, target))
        best = best_setting(results)
        params, refined = refine_category_thresholds(
            paths, target, best["params"], grid.score_thresh
        )
        params, inner = refine_inner_min_volume(paths, target, params, grid.inner_min_volume_ml)
        params, total = refine_min_total_ml(paths, target, params, grid.min_total_ml)
        params, hull = refine_core_hull_margin(paths, target, params, grid.core_hull_margin)
    for stage, rows in zip(STAGES, (results, refined, inner, total, hull)):
        for r in rows:
            r["stage"] = stage
    results += refined + inner + total + hull
    chosen = next(r for r in reversed(results) if r["params"] == params)
    chosen["chosen"] = True
    logger.info(
        "tuning on %s (%d volumes): best %s, objective %.4f, Dice %s",
        dataset_name, chosen["num_volumes"], params.to_cfg_dict(), chosen["objective"],
        {k: round(v, 4) for k, v in chosen["dice"].items()},
    )  # fmt: skip
    return params, results
