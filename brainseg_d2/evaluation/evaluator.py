"""Volume metrics of Mask R-CNN slice predictions: :class:`BrainSegEvaluator`.

Data path::

    outputs["sem_seg"] (C, H, W) probabilities, or outputs["instances"] (N, H, W)
        --masks_and_seeds_from_output(score_threshold, mask source)--> (C, H, W)
        --compressed RLE per category--> small per-slice records --comm.gather--> rank 0
        (with hysteresis, ``component_score_threshold``, also seed masks made the same way)
    rank 0: records --> (C, S, H, W) per volume; ground truth from the original label
        map (GroundTruthReader) --postprocess_volume(raw | post)--> evaluate_volume
        --> rows --> summarize

The records, and the volumes they are checked against and rebuilt into, are
:mod:`~brainseg_d2.evaluation.slice_records`.

The scoring is :mod:`~brainseg_d2.evaluation.volume_scores` (what is named, the
metrics, the empty-slice policy, the flat keys); the files are
:mod:`~brainseg_d2.evaluation.results_files`. Each name comes in two *variants*
side by side: ``raw`` (score threshold only, :meth:`PostprocessParams.raw`) and
``post`` (``cfg.BRAINSEG.POSTPROCESS``, 2D and 3D steps of
:func:`postprocess_volume` on the reassembled volume, with nesting enforced for
nested targets). Per-volume metrics are 3D over all ``num_slices`` slices with
spacing ``(slice_thickness, pixel_spacing[0], pixel_spacing[1])``; per-slice
Dice and IoU cover the slices that received a prediction.

Ground truth is the original label map of each volume, every voxel
(:class:`~brainseg_d2.data.ground_truth.GroundTruthReader`: ``volumes.json``'s
``source.mask`` through the recorded geometry); where that file is not available
it is the converter's label PNGs (said once in the log), and for datasets without
them the annotations' RLE masks. Slices absent from the dataset (the converter
drops slices without brain) are predicted empty; they count in the 3D volume.

Files (``output_dir``, names in
:data:`~brainseg_d2.evaluation.results_files.EVALUATOR_FILES`): the per-case table
(one row per volume x name x variant), the per-lesion table (one row per
reference lesion), the summary (flat metrics, settings and the run: model,
weights, versions, date) and, built from a config,
:data:`~brainseg_d2.evaluation.results_files.CONFIG_FILE`. The HTML report
(:mod:`brainseg_d2.report`) reads them.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from brainseg_d2.data.ground_truth import GroundTruthReader
from brainseg_d2.evaluation.case_scores import ScoringSettings, pop_lesion_records
from brainseg_d2.evaluation.results_files import (
    CONFIG_FILE,
    EVALUATOR_CASES_COLUMNS,
    EVALUATOR_FILES,
    EVALUATOR_LESIONS_COLUMNS,
    write_summary,
    write_table,
)
from brainseg_d2.evaluation.slice_records import (
    DatasetVolume,
    dataset_volumes,
    encode_masks,
    group_records,
    volume_masks,
)
from brainseg_d2.evaluation.volume_scores import (
    EMPTY_SLICE_POLICIES,
    VARIANTS,
    evaluate_volume,
    metric_key,
    named_categories,
    scoring_settings_from_cfg,
    summarize,
)
from brainseg_d2.labels import get_target
from brainseg_d2.postprocessing import (
    MASK_SOURCES,
    PostprocessParams,
    masks_and_seeds_from_output,
    postprocess_volume,
)

__all__ = ["BrainSegEvaluator", "run_info_from_cfg"]

logger = logging.getLogger(__name__)


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


class BrainSegEvaluator(DatasetEvaluator):
    """Per-slice, per-volume and lesion-wise metrics, raw and post-processed (module doc).

    Each rank encodes its slices' per-category masks as compressed RLE; on
    :meth:`evaluate` these small records are gathered to rank 0, which rebuilds
    every volume, reads its ground truth (the original label map), post-processes
    the prediction in 3D, scores it and writes its files into ``output_dir``. Other ranks
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

    @property
    def uses_instances(self) -> bool:
        """Whether it reads the model's ``instances`` (else ``sem_seg`` alone)."""
        return self._mask_source == "instances"

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
                "masks": encode_masks(masks),
            }
            if seeds is not None:
                record["seeds"] = encode_masks(seeds)
            self._records.append(record)

    def _predictions(
        self, vol: DatasetVolume, preds: Mapping[int, dict]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted masks and seed masks (None without hysteresis), ``(C, S, H, W)``."""
        num_categories = len(self._target.categories)
        seeds = None
        if self._seed_thresholds is not None:
            seeds = volume_masks(vol, preds, "seeds", num_categories)
        return volume_masks(vol, preds, "masks", num_categories), seeds

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
        volumes = dataset_volumes(self._dataset_name)
        grouped = group_records(records, volumes, self._dataset_name)
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
                    pred, params, enforce_nesting=self._target.nested, seeds=seeds,
                    voxel_ml=vol.voxel_ml,
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
        folder = self._output_dir
        write_table(os.path.join(folder, EVALUATOR_FILES.cases), rows, EVALUATOR_CASES_COLUMNS)
        write_table(
            os.path.join(folder, EVALUATOR_FILES.lesions), lesions, EVALUATOR_LESIONS_COLUMNS
        )
        if self._config_text is not None:
            with PathManager.open(os.path.join(folder, CONFIG_FILE), "w") as f:
                f.write(self._config_text)
            self.summary["run"]["config"] = CONFIG_FILE
        write_summary(os.path.join(folder, EVALUATOR_FILES.summary), self.summary)

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
