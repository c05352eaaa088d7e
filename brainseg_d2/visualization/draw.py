"""Drawing tumour masks on MRI slices with Detectron2's ``Visualizer``.

Every overlay goes through :class:`detectron2.utils.visualizer.Visualizer`
(``draw_binary_mask`` per category in the category colour of
:data:`brainseg_d2.labels.CATEGORY_COLORS`, ``draw_polygon`` for contours,
``draw_text`` for titles), so the pictures look like every other Detectron2
demo. Array conventions:

* slices are ``(H, W, N)`` uint8, one channel per MRI sequence (a preprocessed
  volume's ``slices[s]``, or a converted PNG read with
  ``data.io.png.read_channel_png``); :func:`display_image` makes the ``(H, W, 3)``
  RGB picture drawn on (one channel in grey by default: FLAIR for BraTS);
* category masks are bool ``(C, H, W)`` for a slice, in the target's category
  order (see :mod:`brainseg_d2.labels`).

Small MRI slices (BraTS: 240 px, the 3 mm phantom: ~60 px) are drawn upscaled
(``scale``; nearest neighbour, so voxels stay visible) so that labels are
readable; :func:`auto_scale` picks a factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.data import Metadata
from detectron2.utils.visualizer import ColorMode, GenericMask, Visualizer
from pycocotools import mask as mask_util

from brainseg_d2.labels import CATEGORY_COLORS

__all__ = [
    "FALLBACK_COLOR",
    "GAP_GREY",
    "CategoryColourVisualizer",
    "Color",
    "auto_scale",
    "category_colors",
    "display_image",
    "draw_dataset_dict",
    "draw_instances",
    "draw_legend",
    "draw_title",
    "make_metadata",
    "overlay_masks",
]
Color = Sequence[float]  # RGB 0-255

#: Colour of categories without an entry in CATEGORY_COLORS (RGB 0-255).
FALLBACK_COLOR = (255, 255, 255)
#: Grey of the gaps between montage tiles and side-by-side panels.
GAP_GREY = 48


def category_colors(names: Sequence[str]) -> list[tuple[int, int, int]]:
    """Display colour (RGB 0-255) of each category name, from ``CATEGORY_COLORS``."""
    return [tuple(CATEGORY_COLORS.get(n, FALLBACK_COLOR)) for n in names]


def make_metadata(names: Sequence[str], colors: Sequence[Color] | None = None) -> Metadata:
    """Unregistered Detectron2 ``Metadata`` with ``thing_classes`` and ``thing_colors``.

    For images that belong to no registered dataset (the demo on loose files).
    """
    colors = category_colors(names) if colors is None else colors
    return Metadata(
        name="brainseg_display",
        thing_classes=list(names),
        thing_colors=[[int(v) for v in c] for c in colors],
    )


def auto_scale(shape: Sequence[int], target: int = 480, max_scale: int = 4) -> int:
    """Integer upscaling factor so that the longer side of ``shape`` is about ``target`` px.

    Args:
        shape: ``(H, W, ...)`` of the image.
        target: wanted length of the longer side in pixels.
        max_scale: largest factor returned.

    Returns:
        ``clip(round(target / max(H, W)), 1, max_scale)``.
    """
    longest = max(int(shape[0]), int(shape[1]), 1)
    return int(np.clip(round(target / longest), 1, max_scale))


def display_image(
    image: np.ndarray, channel: int | None = None, composite: Sequence[int] | None = None
) -> np.ndarray:
    """Image to draw on: one channel as greyscale, or three channels as an RGB composite.

    Args:
        image: ``(H, W, N)`` or ``(H, W)`` uint8.
        channel: show channel ``k`` in grey (0 = FLAIR for BraTS conversions).
        composite: with ``channel`` None, the channels shown as R, G, B (default
            the first three, or the only one repeated).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, N), got shape {image.shape}")
    n = image.shape[2]
    if channel is not None:
        if not 0 <= channel < n:
            raise ValueError(f"channel {channel} out of range for an image of {n} channels")
        picks = [channel] * 3
    else:
        picks = list(composite) if composite is not None else [min(i, n - 1) for i in range(3)]
        if len(picks) != 3 or not all(0 <= c < n for c in picks):
            raise ValueError(f"composite must name 3 of the {n} channels, got {picks}")
    return np.ascontiguousarray(image[..., picks]).astype(np.uint8, copy=False)


def _check_image_masks(image: np.ndarray, masks: np.ndarray, names: Sequence[str]) -> np.ndarray:
    image = np.asarray(image)
    masks = np.asarray(masks)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        )
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"masks must be (C, H, W) with (H, W) = {image.shape[:2]}, got shape {masks.shape}"
        )
    if len(names) != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {len(names)} names: {list(names)}")
    return masks.astype(bool, copy=False)


def _draw_masks(
    vis: Visualizer,
    masks: np.ndarray,
    names: Sequence[str],
    colors: Sequence[Color],
    *,
    alpha: float,
    contour: bool,
    labels: bool,
) -> None:
    """Draw category masks onto a Visualizer in category order (later ones on top)."""
    for mask, name, color in zip(masks, names, colors):
        if mask.any():
            rgb = tuple(float(v) / 255.0 for v in color)
            _draw_mask(vis, mask.astype(np.uint8), rgb, alpha=alpha, contour=contour,
                       text=name if labels else None)  # fmt: skip


def _draw_mask(
    vis: Visualizer, mask: np.ndarray, rgb, *, alpha: float, contour: bool, text: str | None = None
) -> None:
    """One uint8 mask, its holes left open, in colour ``rgb`` (0-1 floats)."""
    vis.draw_binary_mask(mask, color=rgb, alpha=alpha, text=text)
    generic = GenericMask(mask, *mask.shape)
    if not generic.has_holes:
        # Visualizer drops polygons of fewer than 3 points, i.e. components of
        # 1-2 pixels, which are common on coarse MRI; draw them as pixel squares.
        for y, x in _tiny_component_pixels(mask):
            square = np.array([[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]], float)
            vis.draw_polygon(square, color=rgb, edge_color=rgb, alpha=alpha)
    if contour:
        # draw_binary_mask outlines simple masks but not masks with holes
        # (an enhancing rim); outline every component and hole the same way.
        for segment in generic.polygons:
            vis.draw_polygon(segment.reshape(-1, 2), color=rgb, edge_color=rgb, alpha=0.0)


def _tiny_component_pixels(mask: np.ndarray, max_area: int = 2) -> list[tuple[int, int]]:
    """(row, col) of the pixels of 8-connected components of at most ``max_area`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    tiny = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] <= max_area)
    tiny = tiny[tiny > 0]
    if tiny.size == 0:
        return []
    rows, cols = np.nonzero(np.isin(labels, tiny))
    return list(zip(rows.tolist(), cols.tolist()))


def overlay_masks(
    image_rgb: np.ndarray,
    masks: np.ndarray,
    names: Sequence[str],
    colors: Sequence[Color] | None = None,
    *,
    alpha: float = 0.4,
    contour: bool = True,
    labels: bool = False,
    scale: float = 1.0,
    title: str | None = None,
    legend: bool = False,
) -> np.ndarray:
    """Draw category masks on an image with Detectron2's ``Visualizer``.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        masks: bool ``(C, H, W)``; an empty mask is skipped.
        names: ``C`` category names (used for labels and default colours).
        colors: ``C`` RGB 0-255 colours; default from ``CATEGORY_COLORS``.
        alpha: fill opacity.
        contour: outline every component (and hole) in the category colour.
        labels: write the category name on its largest component.
        scale: output is ``scale`` times larger (nearest-neighbour pixels).
        title: text in the top-left corner.
        legend: list the category names, in their colours, bottom-left.

    Returns:
        ``(round(H * scale), round(W * scale), 3)`` uint8 RGB. Pixels away from
        every mask keep their value.
    """
    masks = _check_image_masks(image_rgb, masks, names)
    colors = category_colors(names) if colors is None else colors
    if len(colors) != len(names):
        raise ValueError(f"{len(names)} names but {len(colors)} colors")
    vis = Visualizer(image_rgb, metadata=make_metadata(names, colors), scale=scale)
    _draw_masks(vis, masks, names, colors, alpha=alpha, contour=contour, labels=labels)
    if title:
        draw_title(vis, title)
    if legend:
        draw_legend(vis, names, colors)
    return vis.get_output().get_image()


def _text_step(vis: Visualizer) -> float:
    """Height of one line of Visualizer text, in input-image pixels."""
    # Text size is font_size * scale points at the figure dpi; divide by scale
    # to get input pixels, and add the box padding.
    return vis._default_font_size * vis.output.dpi / 72.0 * 1.5


def draw_title(vis: Visualizer, text: str) -> None:
    """Write ``text`` in white at the top left of the picture."""
    vis.draw_text(text, (1, 1), color=(1.0, 1.0, 1.0), horizontal_alignment="left")


def draw_legend(vis: Visualizer, names: Sequence[str], colors: Sequence[Color]) -> None:
    """Write each category name in its colour, bottom left, the first name on top."""
    step = _text_step(vis)
    height = vis.output.height
    for i, (name, color) in enumerate(zip(reversed(names), reversed(colors))):
        y = max(height - (i + 1) * step, 0)
        rgb = tuple(float(v) / 255.0 for v in color)
        vis.draw_text(name, (1, y), color=rgb, horizontal_alignment="left")


class CategoryColourVisualizer(Visualizer):
    """Detectron2's ``Visualizer`` drawing each instance in its category's exact colour.

    In ``ColorMode.SEGMENTATION`` Detectron2 shifts every instance's colour by a
    random amount (``_jitter``) to tell instances apart, so the same class came out
    in a different shade on every run and differed from the legend and the volume
    pictures. Here the category colour is kept as it is.
    """

    def _jitter(self, color):
        return tuple(color)

    def overlay_instances(self, *, boxes=None, masks=None, assigned_colors=None, alpha=0.5,
                          **kwargs):  # fmt: skip
        """Detectron2's, but each mask keeps its holes (an enhancing rim around necrosis):
        Detectron2 fills every polygon of a mask, a hole's too. Masks are drawn largest
        box first, as Detectron2 orders them; boxes and labels as Detectron2 draws them."""
        if masks is not None and boxes is not None and assigned_colors is not None:
            boxes = self._convert_boxes(boxes)
            if boxes.shape[1] == 4:
                masks = self._convert_masks(masks)
                for k in np.argsort(-np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), kind="stable"):
                    _draw_mask(self, masks[k].mask.astype(np.uint8), assigned_colors[k],
                               alpha=alpha, contour=True)  # fmt: skip
                masks = None
        return super().overlay_instances(
            boxes=boxes, masks=masks, assigned_colors=assigned_colors, alpha=alpha, **kwargs
        )


def draw_dataset_dict(
    image_rgb: np.ndarray,
    record: dict,
    metadata: Metadata,
    *,
    scale: float = 1.0,
    title: str | None = None,
) -> np.ndarray:
    """Ground-truth annotations of one Detectron2 dataset dict, Detectron2 style.

    RLE segmentations are decoded with pycocotools, then drawn by
    ``Visualizer.draw_dataset_dict`` in ``ColorMode.SEGMENTATION``, i.e. in the
    metadata's ``thing_colors`` (the category colours, exactly: no per-instance
    shift), with boxes and names.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB image of the record.
        record: dataset dict (``annotations`` with ``bbox``, ``bbox_mode``,
            ``segmentation`` as RLE or polygons, 0-based ``category_id``).
        metadata: with ``thing_classes`` and ``thing_colors``.
        scale: upscaling of the output.
        title: text in the top-left corner.

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 RGB.
    """
    annotations = []
    for ann in record.get("annotations", []):
        ann = dict(ann)
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            if isinstance(seg["counts"], list):  # uncompressed RLE
                seg = mask_util.frPyObjects(seg, *seg["size"])
            ann["segmentation"] = mask_util.decode(seg).astype(np.uint8)
        annotations.append(ann)
    vis = CategoryColourVisualizer(
        image_rgb, metadata=metadata, scale=scale, instance_mode=ColorMode.SEGMENTATION
    )
    vis.draw_dataset_dict({**record, "annotations": annotations})
    if title:
        draw_title(vis, title)
    return vis.get_output().get_image()


def draw_instances(
    image_rgb: np.ndarray,
    instances,
    metadata: Metadata,
    *,
    scale: float = 1.0,
) -> np.ndarray:
    """Model predictions on one image: ``Visualizer.draw_instance_predictions``.

    Drawn in ``ColorMode.SEGMENTATION``, i.e. in the metadata's ``thing_colors``
    (the category colours, exactly: no per-instance shift), with boxes, class names
    and scores.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        instances: Detectron2 ``Instances`` at the image's size (moved to CPU here).
        metadata: with ``thing_classes`` and ``thing_colors``.
        scale: upscaling of the output.

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 RGB.
    """
    vis = CategoryColourVisualizer(
        image_rgb, metadata=metadata, scale=scale, instance_mode=ColorMode.SEGMENTATION
    )
    return vis.draw_instance_predictions(instances.to("cpu")).get_image()


