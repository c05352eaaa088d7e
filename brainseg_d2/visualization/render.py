"""The pictures of one predicted volume: slice PNGs, a montage and a GIF.

:func:`render_case` writes, for ``(S, H, W, N)`` slices and bool ``(C, S, H, W)``
category masks, side-by-side PNGs (ground truth | prediction) on a few tumour
slices, a montage of tumour slices and an animated GIF through the volume;
:func:`render_prediction` does it for a volume predictor's result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from brainseg_d2.visualization.compose import montage, side_by_side, tumour_slices, write_gif
from brainseg_d2.visualization.draw import (
    Color,
    auto_scale,
    category_colors,
    display_image,
    overlay_masks,
)

__all__ = ["CaseRender", "render_case", "render_prediction"]


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

