"""The one ground-truth reader: label maps as every metric, baseline and picture sees them.

Data path of a case's ground truth::

    original label map file (volumes.json ``source.mask``, or a case's ``seg`` file)
        --SliceGeometry.label_slices--> canonical (S, H, W) raw labels, the converter's
                                        own reorientation (a pure axis permutation/flip)
        --raw_labels_to_tissue(convention)--> tissue codes, every value checked
        --Target.masks_from_tissue--> (C, S, H, W) category masks

Users of it: :class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator` (volume and
lesion metrics, through :class:`GroundTruthReader`), the demo's FLAIR baseline and
pictures (:func:`label_map_masks`), ``demo/demo.py --gt``, and ``brainseg-evaluate``
(:func:`read_label_image`).

Metrics computed on the canonical slices equal those on the original grid: the
reorientation permutes and flips axes only, and spacings follow their axes.

When a converted dataset's original label file is not available any more (data
moved, file replaced by one on another grid), :class:`GroundTruthReader` falls
back to the converter's label PNGs (``sem_seg_file_name``: the tissue codes of
every labelled pixel of the kept slices; val/test keep every labelled slice) and
says so once in the log; datasets written before label PNGs existed fall back
to their annotations' RLE masks.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainseg_d2.data.volume_io import VolumeError, read_image
from brainseg_d2.labels import (
    LabelConvention,
    Target,
    get_convention,
    raw_to_tissue,
    register_dataset_conventions,
)
from brainseg_d2.structures import SliceGeometry

__all__ = [
    "GROUND_TRUTH_SOURCES",
    "GroundTruthReader",
    "label_map_masks",
    "label_map_tissue",
    "read_label_image",
]

logger = logging.getLogger(__name__)

#: Where a volume's ground truth came from (the evaluator's ``gt_source`` column).
GROUND_TRUTH_SOURCES = ("original", "label_png", "annotations", "none")
#: Tolerance (mm, direction cosines) when checking an original file against the
#: geometry recorded at conversion; the converter's own check uses the same.
GEOMETRY_TOL = 1e-4


def read_label_image(path: str | os.PathLike) -> tuple[sitk.Image, np.ndarray]:
    """Read a label map file: the image and its labels as integers.

    Args:
        path: NIfTI (or any file SimpleITK reads, or a DICOM folder).

    Returns:
        ``(image, labels)``: ``labels`` int64 ``(z, y, x)`` (SimpleITK array
        order), every voxel; float files holding whole numbers are accepted.

    Raises:
        VolumeError: unreadable file, non-integer or negative values (the
            message names the file).
    """
    image = read_image(path)
    return image, _integer_labels(sitk.GetArrayFromImage(image), str(path))


def _integer_labels(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            frac = array[rounded != array][0]
            raise VolumeError(f"{where}: label map holds non-integer values (e.g. {frac:g})")
        array = rounded
    if array.size and array.min() < 0:
        raise VolumeError(f"{where}: label map holds negative values")
    return array.astype(np.int64, copy=False)


def _check_geometry(image: sitk.Image, geometry: SliceGeometry, where: str) -> None:
    checks = (
        ("size", image.GetSize(), geometry.size, 0.0),
        ("spacing", image.GetSpacing(), geometry.spacing, GEOMETRY_TOL),
        ("origin", image.GetOrigin(), geometry.origin, GEOMETRY_TOL),
        ("direction", image.GetDirection(), geometry.direction, GEOMETRY_TOL),
    )
    for what, got, want, tol in checks:
        if len(got) != len(want) or not np.allclose(got, want, rtol=0.0, atol=tol):
            raise VolumeError(
                f"{where}: {what} {tuple(round(v, 4) for v in got)} differs from the "
                f"volume's {tuple(round(v, 4) for v in want)}"
            )


def label_map_tissue(
    label: str | os.PathLike | sitk.Image,
    geometry: SliceGeometry,
    convention: str | LabelConvention,
) -> np.ndarray:
    """Tissue codes of an original label map, every voxel, in a volume's canonical slices.

    Args:
        label: the label map file, or the image read already; same voxel grid as
            the volume (size, spacing, origin, direction).
        geometry: the volume's geometry (``PreprocessedVolume.geometry``, or
            ``SliceGeometry.from_json`` of its ``volumes.json`` entry).
        convention: the file's raw label convention (name or convention); a
            ``binary`` 0/255 mask counts as 0/1, as in the converter.

    Returns:
        uint8 ``(S, H, W)`` tissue codes, slices along the geometry's slice axis.

    Raises:
        VolumeError: unreadable file, a grid other than the volume's,
            non-integer values, values outside the convention; the message
            names the file.
    """
    where = "label map" if isinstance(label, sitk.Image) else str(label)
    image = label if isinstance(label, sitk.Image) else read_image(label)
    _check_geometry(image, geometry, where)
    return raw_labels_to_tissue(geometry.label_slices(image), convention, where)


def raw_labels_to_tissue(
    raw: np.ndarray, convention: str | LabelConvention, files: str | Sequence[str]
) -> np.ndarray:
    """Raw label slices -> tissue codes, checking every value (the one place that does).

    A ``binary`` convention's 0/255 masks count as 0/1. Float labels must hold
    whole numbers.

    Args:
        raw: ``(S, H, W)`` raw labels (any integer or float dtype).
        convention: their label convention (name or convention).
        files: the label file, or the file of each slice (2D stacks), named in errors.

    Returns:
        uint8 ``(S, H, W)`` tissue codes.

    Raises:
        VolumeError: non-integer values, or values outside the convention,
            naming the (first bad slice's) file.
    """
    files = [files] if isinstance(files, str) else list(files)

    def where(bad_slices: np.ndarray) -> str:
        return files[int(np.flatnonzero(bad_slices)[0])] if len(files) > 1 else files[0]

    if raw.dtype.kind == "f":
        frac = raw != np.round(raw)
        if frac.any():
            raise VolumeError(
                f"{where(_any_per_slice(frac))}: label map holds non-integer label values "
                f"(e.g. {raw[frac][0]:g})"
            )
        raw = raw.astype(np.int32)
    convention = get_convention(convention)
    if convention.name == "binary":
        raw = np.where(raw == 255, 1, raw)  # 0/255 masks
    tissue = np.zeros(raw.shape, dtype=np.uint8)
    # Only slices holding labels need the lookup; raw_to_tissue validates values.
    rows = np.flatnonzero(_any_per_slice(raw))
    lo, hi = (rows[0], rows[-1] + 1) if rows.size else (0, 1)
    try:
        tissue[lo:hi] = raw_to_tissue(raw[lo:hi], convention)
    except ValueError as exc:
        allowed = np.array(sorted(convention.raw_to_tissue))
        bad = ~np.isin(raw, allowed).reshape(raw.shape[0], -1).all(axis=1)
        also = " (or 0/255 masks)" if convention.name == "binary" else ""
        raise VolumeError(f"{where(bad)}: {exc}{also}") from None
    return tissue


def _any_per_slice(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1).any(axis=1)


def label_map_masks(
    label: str | os.PathLike | sitk.Image,
    geometry: SliceGeometry,
    target: Target,
    convention: str | LabelConvention,
) -> np.ndarray:
    """Category masks of an original label map (:func:`label_map_tissue`).

    Returns:
        bool ``(C, S, H, W)`` in the target's category order, comparable with a
        ``VolumePrediction``'s masks of the same volume.
    """
    return target.masks_from_tissue(label_map_tissue(label, geometry, convention))


def _decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """Bool ``(H, W)`` mask of a COCO segmentation (compressed/uncompressed RLE or polygons)."""
    import pycocotools.mask as mask_util

    if isinstance(segm, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_util.frPyObjects(segm, height, width)
    elif isinstance(segm, dict):
        rle = segm
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return mask_util.decode(rle).astype(bool)


class GroundTruthReader:
    """Ground truth of the volumes of a converted dataset, against the original label maps.

    Each volume's label map is read from the file recorded at conversion
    (``volumes.json``: ``source.mask``, ``geometry``, ``label_convention``) through
    :func:`label_map_tissue`, so metrics count every voxel of the original. A
    volume whose file is not available (moved, unreadable, on another grid) falls
    back to the converter's label PNGs, and the first such volume is logged with
    the reason (once per reader); 2D slice datasets, whose label PNGs are their
    original labels, use them without a message.

    After :meth:`masks` calls, ``sources`` counts the volumes per source
    (:data:`GROUND_TRUTH_SOURCES`).
    """

    def __init__(
        self,
        target: Target,
        volumes: Mapping[str, Mapping] | None = None,
        *,
        name: str = "dataset",
        read_originals: bool = True,
    ) -> None:
        """
        Args:
            target: the dataset's target (category order of the masks).
            volumes: ``volumes.json``'s ``volumes`` mapping (volume id -> record);
                None: no record, label PNGs (or annotations) only.
            name: the dataset's name, for log messages.
            read_originals: False reads the label PNGs only (e.g. for speed).
        """
        self.target = target
        self.volumes = dict(volumes or {})
        self.name = name
        self.read_originals = read_originals
        self.sources: Counter[str] = Counter()
        self._told = False

    @classmethod
    def for_dataset(cls, dataset_name: str, target: Target) -> GroundTruthReader:
        """The reader of a registered dataset: its ``volumes.json``, and the users'
        conventions its ``dataset.json`` defines (registered here)."""
        from detectron2.data import MetadataCatalog

        meta = MetadataCatalog.get(dataset_name)
        volumes_file = getattr(meta, "volumes_file", None)
        volumes = None
        if volumes_file and Path(volumes_file).is_file():
            info_file = Path(volumes_file).with_name("dataset.json")
            try:
                if info_file.is_file():
                    register_dataset_conventions(json.loads(info_file.read_text("utf-8")))
                volumes = json.loads(Path(volumes_file).read_text("utf-8"))["volumes"]
            except (OSError, ValueError, KeyError) as exc:
                logger.warning(
                    "ground truth of %s: cannot read %s (%s); using the label PNGs",
                    dataset_name, volumes_file, exc,
                )  # fmt: skip
        return cls(target, volumes, name=dataset_name)

    def original_tissue(self, volume_id: str) -> tuple[np.ndarray | None, str]:
        """Tissue codes ``(S, H, W)`` from a volume's original label map.

        Returns:
            ``(tissue, "")``, or ``(None, reason)`` when the original is not
            available (the reason is empty when there is none to expect).
        """
        record = self.volumes.get(volume_id)
        if record is None:
            return None, "" if not self.volumes else f"{volume_id} is not in volumes.json"
        if not record.get("labelled", True):
            return None, ""
        path = (record.get("source") or {}).get("mask")
        if not path:
            return None, ""  # 2D slices: the label PNGs are the original labels
        try:
            tissue = label_map_tissue(
                path, SliceGeometry.from_json(record["geometry"]), record["label_convention"]
            )
        except (VolumeError, ValueError, KeyError) as exc:
            return None, str(exc)
        return tissue, ""

    def masks(
        self,
        volume_id: str,
        num_slices: int,
        shape: Sequence[int],
        slices: Mapping[int, Mapping] = (),
    ) -> tuple[np.ndarray, str]:
        """Category masks of one volume.

        Args:
            volume_id: the volume.
            num_slices: S, slices of the whole volume.
            shape: ``(H, W)`` of a slice.
            slices: slice index -> the slice's dataset dict (for the fallbacks:
                ``sem_seg_file_name``, else ``annotations``).

        Returns:
            ``(masks, source)``: bool ``(C, S, H, W)`` and one of
            :data:`GROUND_TRUTH_SOURCES`.

        Raises:
            ValueError: an original label map on another slice grid than the
                dataset's images, or an unreadable label PNG.
        """
        expected = (int(num_slices), *(int(s) for s in shape))
        tissue, reason = (None, "") if not self.read_originals else self.original_tissue(volume_id)
        if tissue is not None:
            if tissue.shape != expected:
                raise ValueError(
                    f"ground truth of volume {volume_id}: the original label map has slices "
                    f"{tissue.shape}, the dataset's images {expected}"
                )
            self.sources["original"] += 1
            return self.target.masks_from_tissue(tissue), "original"
        masks, source = self._fallback(expected, slices)
        if reason and not self._told:
            self._told = True
            logger.warning(
                "ground truth of %s: original label map of volume %s not available (%s); "
                "using the converter's label PNGs for it and any other such volume",
                self.name, volume_id, reason,
            )  # fmt: skip
        self.sources[source] += 1
        return masks, source

    def _fallback(
        self, expected: tuple[int, ...], slices: Mapping[int, Mapping]
    ) -> tuple[np.ndarray, str]:
        gt = np.zeros((len(self.target.categories), *expected), dtype=bool)
        source = "none"
        for s, d in slices.items():
            if "sem_seg_file_name" in d:
                from brainseg_d2.data.dataset_mapper import read_label_png

                gt[:, s] = self.target.masks_from_tissue(read_label_png(d["sem_seg_file_name"]))
                source = "label_png"
                continue
            for ann in d.get("annotations", []):
                mask = _decode_segmentation(ann["segmentation"], *expected[1:])
                gt[ann["category_id"], s] |= mask
                source = "annotations" if source == "none" else source
        return gt, source
