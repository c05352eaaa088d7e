"""A case made of 2D slices (``tcga_lgg``, ``via``): checking and reading it as one volume.

A stack of 2D slices is one volume with spacing 1 and an identity direction,
cut along ``axial`` (its own plane). 8-bit images are used as they are (they
are windowed for display already; stretching them again would only
re-quantise them); other pixel types go through the same
:func:`~brainseg_d2.data.preprocess.preprocess_volume` as 3D volumes.

Every image and mask is read as a viewer shows it: an EXIF orientation tag
(phone and camera JPEGs) is applied, so pixels, masks and VIA's coordinates
(drawn on the shown image) agree. VIA regions are filled as VIA's browser
canvas fills them: a pixel belongs to a region when its centre lies inside by
the non-zero winding rule (coordinates in pixels, ``(0, 0)`` the top-left corner
of the image); rectangles, circles and ellipses become polygons first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import SimpleITK as sitk
from PIL import Image

from brainseg_d2.data.ground_truth import raw_labels_to_tissue
from brainseg_d2.data.preprocess import PreprocessedVolume, interleave, preprocess_volume
from brainseg_d2.data.volume_io import VolumeError, read_header
from brainseg_d2.labels import TARGETS, Target
from brainseg_d2.structures import PreprocessOptions, SliceGeometry


@dataclass(frozen=True)
class Region:
    """One VIA region as annotated (checked by :meth:`SliceCase.check`).

    Attributes:
        class_name: class from ``region_attributes``; None when it has none.
        shape: ``shape_attributes.name``; one of :data:`AREA_SHAPES` is converted.
        xs, ys: vertex columns and rows in pixels (a rectangle's, circle's or
            ellipse's outline as a polygon).
        problem: why the shape cannot be converted (bad or missing parameters),
            reported by :meth:`SliceCase.check`; None when it can.
    """

    class_name: str | None
    shape: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    problem: str | None = None


#: VIA shapes that enclose an area (``point`` and ``polyline`` do not).
AREA_SHAPES = ("polygon", "rect", "circle", "ellipse")


@dataclass(frozen=True)
class SliceFile:
    """One 2D slice of a :class:`SliceCase`.

    Attributes:
        number: slice number N from the file name (VIA: 0).
        image: image file.
        mask: label image (``tcga_lgg``), else None.
        regions: VIA regions of the image (``via``), else None.
    """

    number: int
    image: str
    mask: str | None = None
    regions: tuple[Region, ...] | None = None


@dataclass(frozen=True)
class SliceCase:
    """A volume made of 2D slices (the 2D counterpart of :class:`~.volume.Case`).

    Attributes:
        case_id: unique id (becomes the ``volume_id``).
        patient_id: patients, not cases, are split into train/val/test.
        layout: ``tcga_lgg`` or ``via``.
        channels: names of the image channels, in the file's R, G, B order.
        slices: the slices in volume order.
        label_convention: convention of the masks (``binary`` for TCGA).
        annotations: the VIA JSON file, else None.
        expected: as in ``Case`` (always empty: all channels are in each file).
    """

    case_id: str
    patient_id: str
    layout: str
    channels: tuple[str, ...]
    slices: tuple[SliceFile, ...]
    label_convention: str = "binary"
    annotations: str | None = None
    expected: Mapping[str, str] = field(default_factory=dict)

    #: Slices can only be cut along their own plane.
    dimensions: ClassVar[int] = 2

    @property
    def labelled(self) -> bool:
        return True  # a TCGA slice without mask, or an image missing from the JSON, is an error

    def channel_names(self) -> list[str]:
        return list(self.channels)

    def files(self) -> list[str]:
        """Images and masks in slice order, then the annotation file."""
        out = [p for s in self.slices for p in (s.image, s.mask) if p]
        return out + ([self.annotations] if self.annotations else [])

    def source_record(self) -> dict:
        """JSON-able description of the inputs, for ``volumes.json``."""
        return {
            "layout": self.layout,
            "annotations": self.annotations,
            "slices": [{"number": s.number, "image": s.image, "mask": s.mask} for s in self.slices],
        }

    def check(
        self, channels: Sequence[str], target: Target | None = None, *, all_files: bool = True
    ) -> None:
        """Pre-flight: files exist, headers read, 2D, one size; VIA regions valid.

        Args:
            channels: channel names the conversion uses.
            target: VIA class names must be its categories (None: not checked).
            all_files: unused (every file of a slice holds every channel).

        Raises:
            VolumeError: naming the case and the file.
        """
        for name in channels:
            if name not in self.channels:
                raise VolumeError(
                    f"case {self.case_id}: no channel '{name}' (have {list(self.channels)})"
                )
        size = None
        for sl in self.slices:
            header = read_header(sl.image)
            if header.GetDimension() != 2:
                raise VolumeError(
                    f"{sl.image}: expected a 2D image, got {header.GetDimension()}D "
                    f"of size {header.GetSize()}"
                )
            shown = shown_size(sl.image, header.GetSize())
            if size is None:
                size, first = shown, sl.image
            elif shown != size:
                raise VolumeError(f"{sl.image}: size {shown} differs from {first} {size}")
            if sl.mask is not None:
                if not os.path.exists(sl.mask):
                    raise VolumeError(f"{sl.image}: no mask ({sl.mask} not found)")
                mask_size = shown_size(sl.mask, read_header(sl.mask).GetSize())
                if mask_size != size:
                    raise VolumeError(f"{sl.mask}: size {mask_size} differs from its image {size}")
            if target is not None:
                self._check_regions(sl, target, size)

    def _check_regions(self, sl: SliceFile, target: Target, size: tuple[int, int]) -> None:
        for i, region in enumerate(sl.regions or ()):
            where = f"{self.annotations}: {Path(sl.image).name}: region {i}"
            if region.shape not in AREA_SHAPES:
                raise VolumeError(f"{where}: shape '{region.shape}' encloses no area "
                                  f"(converted: {', '.join(AREA_SHAPES)})")  # fmt: skip
            if region.problem:
                raise VolumeError(f"{where}: {region.shape}: {region.problem}")
            if len(region.xs) != len(region.ys):
                raise VolumeError(f"{where}: {len(region.xs)} x but {len(region.ys)} y coordinates")
            if len(region.xs) < 3:
                raise VolumeError(f"{where}: polygon with {len(region.xs)} points (need >= 3)")
            if not all(isinstance(v, (int, float)) for v in (*region.xs, *region.ys)):
                raise VolumeError(f"{where}: non-numeric polygon coordinates")
            # VIA draws on the image itself: a point past its edge (by more than the
            # pixel VIA may put on the border) is a polygon of another image or size.
            width, height = size
            outside = [(x, y) for x, y in zip(region.xs, region.ys)
                       if not (-1 <= x <= width + 1 and -1 <= y <= height + 1)]  # fmt: skip
            if outside:
                raise VolumeError(
                    f"{where}: point {outside[0]} lies outside the {width} x {height} image "
                    f"({len(outside)} of {len(region.xs)} points)"
                )
            if not fill_polygon(region.xs, region.ys, (height, width)).any():
                raise VolumeError(f"{where}: {region.shape} covers no pixel centre (zero or "
                                  "sub-pixel area); remove or redraw it")  # fmt: skip
            category_index(region, target, where)

    def load(self, options: PreprocessOptions, target: Target) -> PreprocessedVolume:
        """Read every slice of a checked case as one volume (module docstring).

        Args:
            options: the preprocessing (``slice_axis`` is ``axial``).
            target: for VIA, the categories the polygons are rasterised into.

        Returns:
            the preprocessed volume with its ``tissue``.

        Raises:
            VolumeError: unreadable file, pixel type or size changing between
                slices, bad labels (naming the file).
        """
        channels, labels = self._read(target)
        used = list(options.channels)
        if all(channels[c].dtype == np.uint8 for c in used):
            brain = np.zeros(channels[used[0]].shape, dtype=bool)
            for c in used:
                brain |= channels[c] != 0
            pre = PreprocessedVolume(
                slices=interleave([channels[c] for c in used]),
                brain=brain,
                geometry=SliceGeometry.from_image(
                    sitk.GetImageFromArray(channels[used[0]]), "axial"
                ),
                intensity={c: [0.0, 255.0] for c in used},
            )
        else:
            images = {c: sitk.GetImageFromArray(channels[c]) for c in used}
            pre = preprocess_volume(images, options, case_id=self.case_id)
        if self.layout == "via":
            pre.tissue = labels
        else:
            files = [sl.mask or sl.image for sl in self.slices]
            pre.tissue = raw_labels_to_tissue(labels, self.label_convention, files)
        return pre

    def _read(self, target: Target) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Channel name -> (S, H, W) pixels (the files' type), and (S, H, W) labels:
        tissue codes of the VIA polygons, or the raw values of the mask files."""
        images = [read_slice_image(sl.image, len(self.channels)) for sl in self.slices]
        for sl, image in zip(self.slices, images):
            if image.shape != images[0].shape or image.dtype != images[0].dtype:
                raise VolumeError(
                    f"{sl.image}: {image.dtype} {image.shape[:2]} differs from "
                    f"{self.slices[0].image} {images[0].dtype} {images[0].shape[:2]}"
                )
        stack = np.stack(images)
        channels = {n: np.ascontiguousarray(stack[..., k]) for k, n in enumerate(self.channels)}
        if self.layout == "via":
            shape = stack.shape[1:3]
            labels = np.stack(
                [
                    target.tissue_from_masks(rasterise_regions(sl.regions or (), shape, target))
                    for sl in self.slices
                ]
            )
        else:
            labels = np.stack([read_slice_image(sl.mask, 1)[..., 0] for sl in self.slices])
        return channels, labels


def category_index(region: Region, target: Target, where: str) -> int:
    """Index of a region's class among the target's categories (case-insensitive).

    Raises:
        VolumeError: no class where the target has several, or an unknown class.
    """
    names = target.category_names
    if region.class_name is None:
        if len(names) == 1:
            return 0
        raise VolumeError(f"{where}: region without a class; target '{target.name}' has {names}")
    lower = [n.lower() for n in names]
    if region.class_name.lower() not in lower:
        wanted = region.class_name.lower()
        others = [t.name for t in TARGETS.values()
                  if wanted in (n.lower() for n in t.category_names)]  # fmt: skip
        hint = f"; target '{others[0]}' has it: --target {others[0]}" if others else ""
        raise VolumeError(
            f"{where}: unknown class '{region.class_name}' (target '{target.name}' has "
            f"{names}{hint})"
        )
    return lower.index(region.class_name.lower())


def exif_orientation(path: str | os.PathLike) -> int:
    """The image's EXIF orientation tag (1-8; 1, upright, when it has none)."""
    try:
        with Image.open(path) as image:
            value = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # A format (or a size) Pillow does not read: no EXIF to honour.
        return 1
    return int(value) if value in range(1, 9) else 1


def shown_size(path: str | os.PathLike, size: Sequence[int]) -> tuple[int, int]:
    """(width, height) of a 2D image of header ``size`` as a viewer shows it: swapped
    when its EXIF orientation turns it by 90 degrees (5-8)."""
    width, height = (int(v) for v in size)
    return (height, width) if exif_orientation(path) >= 5 else (width, height)


def read_slice_image(path: str, num_channels: int) -> np.ndarray:
    """Read a 2D image as (H, W, num_channels) in R, G, B order, EXIF orientation applied.

    Args:
        path: image file OpenCV reads (tif, png, jpg, ...).
        num_channels: 3 for RGB (grey images are repeated; alpha is dropped) or 1.

    Raises:
        VolumeError: unreadable file, or colour where one channel is expected.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VolumeError(f"{path}: empty file (0 bytes)")
    # Any bit depth and colour type, EXIF orientation applied (IMREAD_UNCHANGED would
    # ignore it); alpha is dropped.
    image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise VolumeError(f"{path}: cannot read image")
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] >= 3:
        image = image[..., 2::-1]  # BGR -> RGB
    if num_channels == 1 and image.shape[2] != 1:
        if not (image == image[..., :1]).all():
            raise VolumeError(f"{path}: expected one channel, got {image.shape[2]} that differ")
        image = image[..., :1]
    if image.shape[2] != num_channels:
        image = np.repeat(image[..., :1], num_channels, axis=2)
    return image


def fill_polygon(xs: Sequence[float], ys: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside a polygon by the non-zero winding rule.

    That is how a browser canvas (VIA) fills a path, self-intersecting ones
    included: a pentagram's centre is inside (OpenCV's ``fillPoly`` and
    matplotlib's ``contains_points`` leave it out). Vertex ``(x, y)`` is in
    pixels, ``(0, 0)`` the top-left corner of the image, so pixel ``(r, c)`` is
    tested at ``(c + 0.5, r + 0.5)``. Row by row (a scanline fill): the edges
    crossing the row of centres, sorted by where they cross, each add their
    direction (+1 down, -1 up) to the winding of the centres past them.

    Returns:
        bool ``shape`` (H, W).
    """
    height, width = shape
    x0, y0 = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    mask = np.zeros(shape, dtype=bool)
    centres = np.arange(width) + 0.5
    for r in range(max(int(np.floor(y0.min())), 0), min(int(np.ceil(y0.max())), height)):
        y = r + 0.5
        down, up = (y0 <= y) & (y < y1), (y1 <= y) & (y < y0)
        crossing = down | up
        if not crossing.any():
            continue
        e = np.flatnonzero(crossing)
        at = x0[e] + (y - y0[e]) * (x1[e] - x0[e]) / (y1[e] - y0[e])
        order = np.argsort(at, kind="stable")
        winding = np.concatenate([[0], np.cumsum(np.where(down[e], 1, -1)[order])])
        # Centres at or past a crossing (x >= at) have it on their left.
        mask[r] = winding[np.searchsorted(at[order], centres, side="right")] != 0
    return mask


def rasterise_regions(
    regions: Sequence[Region], shape: tuple[int, int], target: Target
) -> np.ndarray:
    """Fill VIA regions into one mask per target category (:func:`fill_polygon`).

    Regions of one class are merged. For targets whose categories are disjoint
    (``labels``), a region drawn later in the file covers earlier ones of other
    classes (as VIA shows them).

    Args:
        regions: checked polygons (:meth:`SliceCase.check`).
        shape: (H, W).
        target: gives the categories.

    Returns:
        (C, H, W) bool, C = number of target categories.
    """
    masks = np.zeros((len(target.categories), *shape), dtype=bool)
    for region in regions:
        c = category_index(region, target, "region")
        drawn = fill_polygon(region.xs, region.ys, shape)
        if not target.nested:
            masks[:, drawn] = False
        masks[c] |= drawn
    return masks
