"""Whole-volume prediction: MRI channels in, a 3D label map on the input's voxel grid out.

The straight line per case::

    channel files -> preprocess_volume (the converter's function, with the options
    recorded in the training dataset's dataset.json) -> brain slices as the model
    saw them in training (detectron2 image format + test-time ResizeShortestEdge)
    -> model, a batch of slices per forward pass -> category masks (score
    threshold) -> postprocess_volume -> tissue codes -> raw label convention
    -> SliceGeometry.slices_to_image (bit-exact original geometry)

Beside it: :mod:`~brainseg_d2.inference.volume_inputs` (what counts as a volume,
which convention a case is written in), :mod:`~brainseg_d2.inference.slice_inputs`
(model inputs built exactly as the test-time mapper builds them),
:mod:`~brainseg_d2.inference.score_threshold` (the detection threshold pushed into
the model), :mod:`~brainseg_d2.inference.batching` (batches on CPU threads).

The raw label convention is the input case's own, told by its BraTS file names
(2018-2021 names: ET = 4; 2023+ names: ET = 3), else the training dataset's,
unless ``label_convention`` asks for one; a convention with a class the model
cannot write is an error (:func:`~brainseg_d2.labels.prediction_convention`).

Slices without brain voxels are not run through the model: they are predicted
empty (the converter drops them too, so the model never saw such slices).

While it predicts, the model drops detections below the post-processing score
threshold itself (:func:`score_threshold_pushed_down`: the same kept detections,
less mask-head work); on CPU, several batches run at once, each on one torch
thread (``BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES``, :func:`run_in_order`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from brainseg_d2.data.dataset_mapper import slice_channels
from brainseg_d2.data.preprocess import PreprocessedVolume, preprocess_volume
from brainseg_d2.data.sources import Case
from brainseg_d2.inference.batching import batch_workers, run_in_order
from brainseg_d2.inference.dataset_info import dataset_info_from_cfg, field_of_view_warning
from brainseg_d2.inference.ensemble import build_inference_model
from brainseg_d2.inference.score_threshold import ModelFn, score_threshold_pushed_down
from brainseg_d2.inference.slice_inputs import brain_slices, inference_resize, slice_model_inputs
from brainseg_d2.inference.volume_inputs import VolumeInput, case_convention, find_case
from brainseg_d2.labels import (
    LabelConvention,
    check_nothing_lost,
    get_convention,
    get_target,
    prediction_convention,
    register_dataset_conventions,
    tissue_to_raw,
)
from brainseg_d2.modeling.meta_arch import dense_head_only
from brainseg_d2.postprocessing import (
    PostprocessParams,
    masks_and_seeds_from_output,
    postprocess_volume,
)
from brainseg_d2.structures import DatasetInfo, SliceGeometry, stack_slice_masks

__all__ = ["VolumePrediction", "VolumePredictor"]

logger = logging.getLogger(__name__)


@dataclass
class VolumePrediction:
    """Prediction for one volume.

    Attributes:
        label_image: uint8 label map in ``label_convention`` (the input case's own
            unless one was requested: BraTS 2021 0/1/2/4, BraTS 2023+ 0/1/2/3), size,
            spacing, origin and direction identical to the input's.
        masks_raw: bool (C, S, H, W) category masks after the score threshold only,
            slices in canonical order (see ``preprocessed.geometry``).
        masks_post: bool (C, S, H, W) after the cfg's post-processing.
        preprocessed: the model's view of the volume: (S, H, W, N) uint8
            slices, brain mask and geometry (for overlays).
        category_names: C names, in category order.
        label_convention: name of ``label_image``'s convention.
    """

    label_image: sitk.Image
    masks_raw: np.ndarray
    masks_post: np.ndarray
    preprocessed: PreprocessedVolume
    category_names: list[str]
    label_convention: str = ""


class VolumePredictor:
    """Predict whole volumes with a Mask R-CNN trained on converted slices.

    Example::

        cfg = setup_cfg("configs/brats/mask_rcnn_R_50_FPN_bs16_20k.yaml", ["MODEL.WEIGHTS", ...])
        predictor = VolumePredictor(cfg, dataset_info="datasets/brats/dataset.json")
        pred = predictor.predict("BraTS2021_00000/")
        sitk.WriteImage(pred.label_image, "BraTS2021_00000_pred.nii.gz")
    """

    def __init__(
        self,
        cfg,
        *,
        dataset_info: DatasetInfo | Mapping | str | Path | None = None,
        model: ModelFn | None = None,
        batch_size: int | None = None,
        concurrent_batches: int | None = None,
        label_convention: str | os.PathLike | LabelConvention | None = None,
        weights: Sequence[str | os.PathLike] | None = None,
    ):
        """
        Args:
            cfg: frozen brainseg config (:func:`brainseg_d2.config.setup_cfg`).
            dataset_info: the training dataset's ``dataset.json`` (path, contents or
                :class:`~brainseg_d2.structures.DatasetInfo`)
                with the preprocessing options, channels, target, label convention. Default:
                ``<dataset_root>/dataset.json`` of the registered ``cfg.DATASETS.TRAIN[0]``.
            model: callable taking a list of Detectron2 input dicts (``image`` CHW
                uint8 tensor, ``height``, ``width``, plus ``slice_index``) and returning
                one ``{"instances": Instances}`` per input with ``pred_masks`` (N, H, W),
                ``scores`` and ``pred_classes``. Default: ``build_model(cfg)`` with
                ``weights`` loaded, eval mode, on ``cfg.MODEL.DEVICE``.
            batch_size: slices per forward pass; default ``cfg.BRAINSEG.INFERENCE.BATCH_SIZE``.
            concurrent_batches: on CPU (``cfg.MODEL.DEVICE``), forward passes run at
                once on threads, each with one torch thread; 0: ``torch.get_num_threads()``;
                1: one at a time. Default ``cfg.BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES``.
                Masks do not depend on it (a test checks).
            label_convention: write every prediction in this convention (a name
                or a ``.json``/``.yaml`` file); None writes each case in its own
                (from its BraTS file names: ET = 3 for 2023+ names, 4 for 2018-2021
                ones; inputs without names in the training dataset's).
            weights: weights files of ``cfg``'s model (default: the config's, an ensemble
                it records or ``MODEL.WEIGHTS``); several are an ensemble, their dense
                heads' probabilities averaged (:mod:`~brainseg_d2.inference.ensemble`).

        Raises:
            ValueError: bad dataset info, batch size, post-processing config, a
                model whose ``NUM_CLASSES`` differs from the dataset's categories, or
                a ``label_convention`` with a class the model cannot write, or without
                one it writes (:func:`~brainseg_d2.labels.check_writable`,
                :func:`~brainseg_d2.labels.check_nothing_lost`); a missing or unfitting
                weights file (:func:`~brainseg_d2.inference.ensemble.build_inference_model`).
        """
        self.cfg = cfg
        if dataset_info is None:
            info = dataset_info_from_cfg(cfg)
        else:
            info = DatasetInfo.load(dataset_info)
        self.dataset_info = info
        self.options = info.preprocess_options
        self.target = get_target(info.target)
        self.category_names = self.target.category_names
        # The training dataset's convention, for inputs whose names tell none; users'
        # conventions travel in dataset.json.
        register_dataset_conventions(info.to_json())
        self.label_convention: str = info.label_convention
        if self.label_convention != "mixed":
            get_convention(self.label_convention)
        self.requested_convention: LabelConvention | None = None
        if label_convention is not None:
            self.requested_convention = prediction_convention(
                self.target, self._default_convention(), label_convention
            )
            check_nothing_lost(self.target, self.label_convention, self.requested_convention)
        if batch_size is None:
            batch_size = cfg.BRAINSEG.INFERENCE.BATCH_SIZE
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if concurrent_batches is None:
            concurrent_batches = cfg.BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES
        if int(concurrent_batches) < 0:
            raise ValueError(f"concurrent_batches must be >= 0, got {concurrent_batches}")
        self.concurrent_batches = int(concurrent_batches)
        self.postprocess = PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS)
        self.postprocess.check_categories(len(self.category_names))  # before any case
        self.mask_source: str = cfg.BRAINSEG.MASK_SOURCE
        self.context_slices: int = cfg.BRAINSEG.INPUT.CONTEXT_SLICES
        if slice_channels(cfg) != len(self.options.channels):
            per = (f" per slice, {2 * self.context_slices + 1} slices (BRAINSEG.INPUT."
                   f"CONTEXT_SLICES {self.context_slices})" if self.context_slices else "")
            raise ValueError(
                f"the model takes {slice_channels(cfg)} channels (MODEL.PIXEL_MEAN){per} but "
                f"the dataset has {len(self.options.channels)} ({list(self.options.channels)})"
            )
        # Same augmentation as DefaultPredictor and the test-time mapper.
        self.resize = inference_resize(cfg)
        if model is None:
            model = build_inference_model(cfg, self.target.name, self.category_names, weights)
        elif weights is not None:
            raise ValueError("give a model or its weights, not both")
        self.model: ModelFn = model

    @property
    def channels(self) -> list[str]:
        """Source channels the model needs, in the order a sequence of paths must follow."""
        return list(self.options.channels)

    # ------------------------------------------------------------------ inputs
    def find_case(self, images: VolumeInput) -> Case:
        """Turn any accepted input into a :class:`Case` with every channel the model needs.

        See :func:`~brainseg_d2.inference.volume_inputs.find_case` (``images``:
        a case, a BraTS case folder, a mapping channel -> path or image, or a
        sequence in :attr:`channels` order).
        """
        return find_case(images, self.channels, self._default_convention())

    def _default_convention(self) -> str:
        return "brats2021" if self.label_convention == "mixed" else self.label_convention

    def output_convention(self, case: Case) -> LabelConvention:
        """The convention a case's prediction is written in (:func:`prediction_convention`):
        the requested one, else the case's own (:func:`case_convention`).

        Raises:
            ValueError: the model cannot write a class of it (one line).
        """
        own = case_convention(case, self.label_convention)
        return prediction_convention(self.target, own, self.requested_convention)

    # --------------------------------------------------------------- predicting
    def predict(self, images: VolumeInput) -> VolumePrediction:
        """Predict one volume.

        Args:
            images: see :meth:`find_case`.

        Returns:
            :class:`VolumePrediction`; ``label_image`` has the input's geometry.

        Raises:
            VolumeError: missing channel, unreadable file, geometry mismatch between
                channels, empty or constant channel (messages name case and file).
            ValueError: the model cannot write a class of the case's convention.
        """
        case = self.find_case(images)
        convention = self.output_convention(case)  # before the model: a bad one fails fast
        volumes = case.read_channels([c for c in case.channels if c in self.channels])
        pre = preprocess_volume(
            volumes, self.options, case_id=case.case_id, sources=case.sources()
        )
        del volumes
        warning = field_of_view_warning(self.dataset_info, case.case_id, pre.geometry)
        if warning:
            logger.warning(warning)
        masks_raw, seeds = self._predict(pre)
        masks_post = postprocess_volume(
            masks_raw, self.postprocess, enforce_nesting=self.target.nested, seeds=seeds,
            voxel_ml=pre.geometry.voxel_ml,
        )
        label_image = self.masks_to_image(masks_post, pre.geometry, convention)
        return VolumePrediction(
            label_image=label_image,
            masks_raw=masks_raw,
            masks_post=masks_post,
            preprocessed=pre,
            category_names=list(self.category_names),
            label_convention=convention.name,
        )

    def brain_slices(self, pre: PreprocessedVolume) -> np.ndarray:
        """Indices (canonical order) of the slices that hold brain voxels.

        See :func:`~brainseg_d2.inference.slice_inputs.brain_slices`.
        """
        return brain_slices(pre)

    def model_inputs(self, pre: PreprocessedVolume, indices: Sequence[int]) -> list[dict]:
        """Detectron2 input dicts of some slices, as the test-time mapper makes them.

        See :func:`~brainseg_d2.inference.slice_inputs.slice_model_inputs` (with
        this predictor's resize and ``CONTEXT_SLICES``).
        """
        return slice_model_inputs(pre, indices, self.resize, self.context_slices)

    def predict_masks(self, pre: PreprocessedVolume) -> np.ndarray:
        """Run the model over the brain slices of a volume.

        Args:
            pre: preprocessed volume with S slices of (H, W).

        Returns:
            bool (C, S, H, W): per category, the union of instance masks scoring
            ``>= POSTPROCESS.SCORE_THRESH``; slices without brain are empty.
        """
        return self._predict(pre)[0]

    def _predict(self, pre: PreprocessedVolume) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_masks` plus the seed masks of ``COMPONENT_SCORE_THRESH`` (or None)."""
        num_slices, height, width = pre.brain.shape
        num_categories = len(self.category_names)
        threshold = self.postprocess.lowest_score_threshold
        hysteresis = self.postprocess.component_thresholds(num_categories) is not None
        slice_masks, slice_seeds = [], []
        indices = self.brain_slices(pre)
        batches = [
            indices[start : start + self.batch_size]
            for start in range(0, len(indices), self.batch_size)
        ]
        # Instance scores below the threshold never enter the masks; a dense head's
        # masks do not depend on the detections at all.
        # (A BrainSegRCNN then skips its instance branch altogether.)
        pushdown = (
            score_threshold_pushed_down(self.model, threshold)
            if self.mask_source == "instances"
            else dense_head_only(self.model)
        )
        with torch.inference_mode(), pushdown:
            for chunk, outputs in self._forward(pre, batches):
                if len(outputs) != len(chunk):
                    raise ValueError(
                        f"model returned {len(outputs)} outputs for {len(chunk)} inputs"
                    )
                for s, output in zip(chunk, outputs):
                    masks, seeds = masks_and_seeds_from_output(
                        output, num_categories, self.postprocess, self.mask_source
                    )
                    if masks.shape[1:] != (height, width):
                        raise ValueError(
                            f"model returned masks of shape {tuple(masks.shape[1:])} "
                            f"for slice {s} of shape {(height, width)}"
                        )
                    slice_masks.append((s, masks))
                    if hysteresis:
                        slice_seeds.append((s, seeds))
        shape = (num_slices, height, width)
        masks = stack_slice_masks(slice_masks, shape, num_categories)
        seeds = stack_slice_masks(slice_seeds, shape, num_categories) if hysteresis else None
        return masks, seeds

    def _forward(
        self, pre: PreprocessedVolume, batches: Sequence[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, list[dict]]]:
        """Model outputs of each batch of slice indices, in order (see ``concurrent_batches``)."""

        def run(chunk: np.ndarray) -> tuple[np.ndarray, list[dict]]:
            with torch.inference_mode():  # thread-local: entered in each worker
                return chunk, self.model(self.model_inputs(pre, chunk))

        workers = batch_workers(self.concurrent_batches, self.cfg.MODEL.DEVICE)
        yield from run_in_order(run, batches, workers=workers)

    def masks_to_image(
        self,
        masks: np.ndarray,
        geometry: SliceGeometry,
        convention: LabelConvention | None = None,
    ) -> sitk.Image:
        """Category masks -> label map in the raw convention, on the original grid.

        Args:
            masks: bool (C, S, H, W) in canonical slice order.
            geometry: ``PreprocessedVolume.geometry`` of the volume.
            convention: raw convention; default the dataset's.

        Returns:
            integer image (uint8 unless the convention's values need more) with the
            original size, spacing, origin and direction.
        """
        if convention is None:
            convention = get_convention(self._default_convention())
        tissue = self.target.tissue_from_masks(masks)
        return geometry.slices_to_image(tissue_to_raw(tissue, convention))
