"""Pictures of MRI slices with tumour masks, drawn with Detectron2's ``Visualizer``.

Every overlay goes through :class:`detectron2.utils.visualizer.Visualizer`
(``draw_binary_mask`` per category in the category colour of
:data:`brainseg_d2.labels.CATEGORY_COLORS`, ``draw_polygon`` for contours,
``draw_text`` for titles), so the pictures look like every other Detectron2
demo. Array conventions:

* slices are ``(H, W, N)`` uint8, one channel per MRI sequence
  (``PreprocessedVolume.slices[s]``, or a converted PNG read with
  ``data.io.png.read_channel_png``); :func:`display_image` makes the ``(H, W, 3)``
  RGB picture drawn on (one channel in grey by default: FLAIR for BraTS);
* category masks are bool ``(C, H, W)`` for a slice and ``(C, S, H, W)`` for a
  volume, in the target's category order (see :mod:`brainseg_d2.labels`).

Small MRI slices (BraTS: 240 px, the 3 mm phantom: ~60 px) are drawn upscaled
(``scale``; nearest neighbour, so voxels stay visible) so that labels are
readable; :func:`auto_scale` picks a factor.

:func:`render_case` writes the pictures of one volume: side-by-side PNGs
(ground truth | prediction) on a few tumour slices, a montage of tumour slices
and an animated GIF through the volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from detectron2.data import Metadata
from detectron2.utils.visualizer import ColorMode, GenericMask, Visualizer
from pycocotools import mask as mask_util

from brainseg_d2.labels import CATEGORY_COLORS, LabelConvention, Target

__all__ = [
    "CaseRender",
    "auto_scale",
    "category_colors",
    "display_image",
    "draw_dataset_dict",
    "draw_instances",
    "ground_truth_masks",
    "make_metadata",
    "montage",
    "overlay_masks",
    "render_case",
    "render_prediction",
    "side_by_side",
    "tumour_slices",
    "write_gif",
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
    h, w = masks.shape[1:]
    for mask, name, color in zip(masks, names, colors):
        if not mask.any():
            continue
        rgb = tuple(float(v) / 255.0 for v in color)
        mask_u8 = mask.astype(np.uint8)
        vis.draw_binary_mask(mask_u8, color=rgb, alpha=alpha, text=name if labels else None)
        generic = GenericMask(mask_u8, h, w)
        if not generic.has_holes:
            # Visualizer drops polygons of fewer than 3 points, i.e. components of
            # 1-2 pixels, which are common on coarse MRI; draw them as pixel squares.
            for y, x in _tiny_component_pixels(mask_u8):
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
        _draw_title(vis, title)
    if legend:
        _draw_legend(vis, names, colors)
    return vis.get_output().get_image()


def _text_step(vis: Visualizer) -> float:
    """Height of one line of Visualizer text, in input-image pixels."""
    # Text size is font_size * scale points at the figure dpi; divide by scale
    # to get input pixels, and add the box padding.
    return vis._default_font_size * vis.output.dpi / 72.0 * 1.5


def _draw_title(vis: Visualizer, text: str) -> None:
    vis.draw_text(text, (1, 1), color=(1.0, 1.0, 1.0), horizontal_alignment="left")


def _draw_legend(vis: Visualizer, names: Sequence[str], colors: Sequence[Color]) -> None:
    step = _text_step(vis)
    height = vis.output.height
    for i, (name, color) in enumerate(zip(reversed(names), reversed(colors))):
        y = max(height - (i + 1) * step, 0)
        rgb = tuple(float(v) / 255.0 for v in color)
        vis.draw_text(name, (1, y), color=rgb, horizontal_alignment="left")


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
    metadata's ``thing_colors`` (the category colours), with boxes and names.

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
    vis = Visualizer(
        image_rgb, metadata=metadata, scale=scale, instance_mode=ColorMode.SEGMENTATION
    )
    vis.draw_dataset_dict({**record, "annotations": annotations})
    if title:
        _draw_title(vis, title)
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
    (the category colours), with boxes, class names and scores.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        instances: Detectron2 ``Instances`` at the image's size (moved to CPU here).
        metadata: with ``thing_classes`` and ``thing_colors``.
        scale: upscaling of the output.

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 RGB.
    """
    vis = Visualizer(
        image_rgb, metadata=metadata, scale=scale, instance_mode=ColorMode.SEGMENTATION
    )
    return vis.draw_instance_predictions(instances.to("cpu")).get_image()


def _hstack(panels: Sequence[np.ndarray], gap: int) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    parts = []
    for i, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)))
        if i and gap:
            parts.append(np.full((h, gap, 3), GAP_GREY, np.uint8))
        parts.append(p)
    return np.concatenate(parts, axis=1)


def side_by_side(
    image: np.ndarray,
    gt_masks: np.ndarray,
    pred_masks: np.ndarray,
    names: Sequence[str],
    colors: Sequence[Color] | None = None,
    titles: tuple[str, str] = ("ground truth", "prediction"),
    *,
    scale: float = 2.0,
    alpha: float = 0.4,
    contour: bool = True,
    legend: bool = True,
    gap: int = 4,
) -> np.ndarray:
    """Ground truth and prediction on the same slice, next to each other.

    Args:
        image: ``(H, W, 3)`` uint8 RGB slice.
        gt_masks, pred_masks: bool ``(C, H, W)`` each.
        names, colors: as in :func:`overlay_masks`.
        titles: panel titles (left, right).
        scale: upscaling of each panel.
        alpha, contour: as in :func:`overlay_masks`.
        legend: list the category colours in the right panel.
        gap: grey pixels between the panels.

    Returns:
        ``(H', 2 * W' + gap, 3)`` uint8 RGB with ``H', W'`` the scaled size.
    """
    common = dict(alpha=alpha, contour=contour, scale=scale)
    left = overlay_masks(image, gt_masks, names, colors, title=titles[0], **common)
    right = overlay_masks(
        image, pred_masks, names, colors, title=titles[1], legend=legend, **common
    )
    return _hstack([left, right], gap)


def montage(
    images: Sequence[np.ndarray], cols: int, *, gap: int = 2, background: int = GAP_GREY
) -> np.ndarray:
    """Tile images in a grid, row by row.

    Args:
        images: ``N >= 1`` uint8 ``(h_i, w_i, 3)`` images; smaller ones are
            padded (black, bottom/right) to the largest ``(H, W)``.
        cols: tiles per row (``min(cols, N)`` are used).
        gap: pixels between tiles.
        background: grey level of the gaps and of empty trailing tiles.

    Returns:
        ``(rows * H + (rows - 1) * gap, c * W + (c - 1) * gap, 3)`` uint8 with
        ``c = min(cols, N)`` and ``rows = ceil(N / c)``.
    """
    if not images:
        raise ValueError("montage needs at least one image, got none")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {i} must be (H, W, 3), got shape {im.shape}")
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    out = np.full(
        (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), background, np.uint8
    )
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[y : y + h, x : x + w] = 0
        out[y : y + im.shape[0], x : x + im.shape[1]] = im
    return out


def tumour_slices(masks: np.ndarray, k: int, *, mode: str = "spread") -> list[int]:
    """Choose up to ``k`` slices that contain tumour.

    Args:
        masks: bool ``(C, S, H, W)``; a slice has tumour if any category is set.
        k: number of slices wanted (fewer when fewer slices have tumour).
        mode: ``spread``: evenly spaced through the tumour's slices (first and
            last included), for an overview; ``area``: the ``k`` slices with the
            largest tumour area (ties: lower index).

    Returns:
        sorted slice indices; ``[]`` when no slice has tumour or ``k == 0``.
    """
    masks = np.asarray(masks)
    if masks.ndim != 4:
        raise ValueError(f"masks must be (C, S, H, W), got shape {masks.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    area = masks.any(axis=0).reshape(masks.shape[1], -1).sum(axis=1)
    candidates = np.flatnonzero(area)
    if k == 0 or candidates.size == 0:
        return []
    if candidates.size <= k:
        return candidates.tolist()
    if mode == "spread":
        picks = np.round(np.linspace(0, candidates.size - 1, k)).astype(int)
        return sorted(set(candidates[picks].tolist()))
    if mode == "area":
        order = np.argsort(-area[candidates], kind="stable")[:k]
        return sorted(candidates[order].tolist())
    raise ValueError(f"unknown mode {mode!r}; choose 'spread' or 'area'")


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 8.0) -> Path:
    """Write an animated GIF that loops forever (imageio, Pillow plugin).

    Args:
        frames: ``N >= 1`` uint8 ``(H, W, 3)`` RGB frames of one size.
        path: output file (parent folders are created).
        fps: frames per second.

    Returns:
        ``path``. Pillow merges identical consecutive frames (keeping the total
        duration), so read-back frame counts can be lower for repeated frames.
    """
    import imageio.v3 as iio

    if not len(frames):
        raise ValueError("write_gif needs at least one frame, got none")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames must all have one shape, got {sorted(shapes)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    iio.imwrite(path, stack, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)
    return path


@dataclass
class CaseRender:
    """Files written by :func:`render_case`.

    Attributes:
        folder: the case's output folder.
        slices: side-by-side (or overlay) PNG per chosen slice.
        slice_indices: the chosen slice indices, in the order of ``slices``.
        montage: montage PNG of slices with tumour.
        gif: animated GIF through the volume (None when not written).
    """

    folder: Path
    slices: list[Path] = field(default_factory=list)
    slice_indices: list[int] = field(default_factory=list)
    montage: Path | None = None
    gif: Path | None = None


def _write_png(path: Path, image_rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path


def _pick_slices(masks: np.ndarray, slices: np.ndarray, k: int) -> list[int]:
    """Tumour slices, else slices evenly spread through the non-empty images."""
    picked = tumour_slices(masks, k)
    if picked:
        return picked
    nonzero = np.flatnonzero(slices.reshape(slices.shape[0], -1).any(axis=1))
    if nonzero.size == 0:
        nonzero = np.arange(slices.shape[0])
    picks = np.round(np.linspace(0, nonzero.size - 1, min(k, nonzero.size))).astype(int)
    return sorted(set(nonzero[picks].tolist()))


def render_case(
    slices: np.ndarray,
    pred_masks: np.ndarray,
    out_dir: str | Path,
    names: Sequence[str],
    colors: Sequence[Color] | None = None,
    *,
    gt_masks: np.ndarray | None = None,
    display_channel: int | None = 0,
    num_slices: int = 4,
    montage_slices: int = 12,
    montage_cols: int | None = None,
    gif: bool = True,
    fps: float = 8.0,
    max_gif_frames: int = 60,
) -> CaseRender:
    """Write the pictures of one volume into ``out_dir``.

    Files: ``slice_<s:04d>.png`` (ground truth | prediction side by side, or the
    prediction alone without ground truth) on ``num_slices`` tumour slices
    spread through the tumour; ``montage.png``, ``montage_slices`` such panels
    of tumour slices; ``volume.gif``, the same panels through every slice that
    has image content (subsampled to at most ``max_gif_frames``). Tumour slices
    are those with tumour in the ground truth or the prediction; a volume
    without any gets evenly spread slices instead.

    Args:
        slices: ``(S, H, W, N)`` uint8 (``PreprocessedVolume.slices``).
        pred_masks: bool ``(C, S, H, W)`` predicted category masks.
        out_dir: folder for this case (created).
        names: ``C`` category names.
        colors: ``C`` RGB 0-255 colours; default from ``CATEGORY_COLORS``.
        gt_masks: bool ``(C, S, H, W)`` ground truth, or None.
        display_channel: show this image channel in grey (0: the first
            converted channel, FLAIR for BraTS); None shows the first three
            channels as an RGB composite.
        num_slices: number of side-by-side PNGs.
        montage_slices: number of montage panels.
        montage_cols: panels per montage row; default 4, or 3 with ground truth
            (each panel is then two images wide).
        gif: write the GIF.
        fps: GIF frame rate.
        max_gif_frames: GIF frame budget.

    Returns:
        :class:`CaseRender` with the written paths.
    """
    slices = np.asarray(slices)
    pred_masks = np.asarray(pred_masks, dtype=bool)
    if slices.ndim != 4:
        raise ValueError(f"slices must be (S, H, W, N), got shape {slices.shape}")
    if pred_masks.ndim != 4 or pred_masks.shape[1:] != slices.shape[:3]:
        raise ValueError(
            f"pred_masks must be (C, S, H, W) with (S, H, W) = {slices.shape[:3]}, "
            f"got shape {pred_masks.shape}"
        )
    if gt_masks is not None:
        gt_masks = np.asarray(gt_masks, dtype=bool)
        if gt_masks.shape != pred_masks.shape:
            raise ValueError(
                f"gt_masks shape {gt_masks.shape} differs from pred_masks {pred_masks.shape}"
            )
    colors = category_colors(names) if colors is None else colors
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = CaseRender(folder=out)
    n = slices.shape[0]

    def panel(s: int, scale: float, legend: bool = True) -> np.ndarray:
        image = display_image(slices[s], display_channel)
        label = f"slice {s} of {n}"
        if gt_masks is None:
            return overlay_masks(
                image,
                pred_masks[:, s],
                names,
                colors,
                scale=scale,
                title=f"prediction, {label}",
                legend=legend,
            )
        titles = (f"ground truth, {label}", "prediction")
        return side_by_side(
            image,
            gt_masks[:, s],
            pred_masks[:, s],
            names,
            colors,
            titles,
            scale=scale,
            legend=legend,
        )

    union = pred_masks if gt_masks is None else pred_masks | gt_masks
    big = auto_scale(slices.shape[1:3], target=480)
    small = auto_scale(slices.shape[1:3], target=240)
    result.slice_indices = _pick_slices(union, slices, num_slices)
    for s in result.slice_indices:
        result.slices.append(_write_png(out / f"slice_{s:04d}.png", panel(s, big)))
    # One legend per montage (first panel) rather than one per panel.
    picked = _pick_slices(union, slices, montage_slices)
    tiles = [panel(s, small, legend=i == 0) for i, s in enumerate(picked)]
    if tiles:
        cols = montage_cols or (4 if gt_masks is None else 3)
        result.montage = _write_png(out / "montage.png", montage(tiles, cols))
    if gif:
        content = np.flatnonzero(slices.reshape(n, -1).any(axis=1))
        if content.size == 0:
            content = np.arange(n)
        step = max(1, math.ceil(content.size / max_gif_frames))
        frames = [panel(s, small) for s in content[::step]]
        result.gif = write_gif(frames, out / "volume.gif", fps=fps)
    return result


def ground_truth_masks(
    label_image, geometry: dict, target: Target, convention: str | LabelConvention
) -> np.ndarray:
    """Category masks of a ground-truth label map, in a prediction's slice order.

    The evaluator's ground truth, through the one reader
    (:func:`brainseg_d2.data.ground_truth.label_map_masks`): every voxel of the
    original label map.

    Args:
        label_image: the label map (``sitk.Image`` or file) on the volume's voxel
            grid, raw labels in ``convention`` (a ``binary`` 0/255 mask counts as 0/1).
        geometry: ``PreprocessedVolume.geometry`` of the predicted volume.
        target: the model's target (category order).
        convention: raw label convention of the file (name or convention).

    Returns:
        bool ``(C, S, H, W)``, comparable with ``VolumePrediction.masks_post``.

    Raises:
        VolumeError: the label map's grid differs from the volume's, or its
            values are not labels of ``convention``.
    """
    from brainseg_d2.data.ground_truth import label_map_masks

    return label_map_masks(label_image, geometry, target, convention)


def render_prediction(
    prediction,
    out_dir: str | Path,
    *,
    gt_masks: np.ndarray | None = None,
    raw: bool = False,
    **kwargs,
) -> CaseRender:
    """:func:`render_case` for a ``VolumePrediction`` of the volume predictor.

    Args:
        prediction: :class:`~brainseg_d2.inference.volume_predictor.VolumePrediction`.
        out_dir: folder for this case.
        gt_masks: bool ``(C, S, H, W)`` from :func:`ground_truth_masks`, or None.
        raw: draw ``masks_raw`` (score threshold only) instead of ``masks_post``.
        **kwargs: passed on to :func:`render_case`.

    Returns:
        :class:`CaseRender`.
    """
    masks = prediction.masks_raw if raw else prediction.masks_post
    return render_case(
        prediction.preprocessed.slices,
        masks,
        out_dir,
        prediction.category_names,
        gt_masks=gt_masks,
        **kwargs,
    )
