"""Composing drawn slices: side-by-side panels, montages, and GIFs through a volume.

Pictures are ``(H, W, 3)`` uint8 RGB, as :mod:`~brainseg_d2.visualization.draw`
makes them; category masks of a volume are bool ``(C, S, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainseg_d2.visualization.draw import (
    GAP_GREY,
    Color,
    overlay_masks,
)

__all__ = ["montage", "side_by_side", "tumour_slices", "write_gif"]


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
