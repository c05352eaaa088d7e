#!/usr/bin/env python
"""How a trained model's Dice moves with the in-plane field of view of its input.

The predictor resizes every slice so that its shorter side is
``INPUT.MIN_SIZE_TEST`` pixels (Detectron2's ``ResizeShortestEdge``), so the
millimetres one model pixel covers follow the field of view, not the voxel
size: a scan cropped closer around the head shows the model larger anatomy
than training did, one with more air around it smaller. Each case of
``--data`` (BraTS case folders with ``seg``: the demo's held-out phantom cases,
or real scans kept outside the repository) is cropped or zero-padded in-plane
about its centre to each ``--fovs`` fraction of its own field of view (the seg
alike, physical positions kept), predicted whole by ``VolumePredictor`` and
scored per BraTS region against its own (cropped or padded) label map.

    .venv/bin/python bench/field_of_view.py --data output/demo/cases/heldout \\
        --config-file output/demo/train/config_tuned.yaml \\
        --weights output/demo/train/model_final.pth \\
        --dataset-info output/demo/datasets/phantom/dataset.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def reframe(image: sitk.Image, fraction: float, brain_box: tuple[int, int, int, int]) -> sitk.Image:
    """``image`` cropped (fraction < 1) or zero-padded (> 1) in-plane about its centre.

    A crop never cuts into ``brain_box`` (x0, x1, y0, y1 voxels), so no tumour is lost.
    """
    size = image.GetSize()
    out = image
    for axis in (0, 1):
        target = int(round(size[axis] * fraction))
        change = target - size[axis]
        if change < 0:
            lo = min(-change // 2, brain_box[2 * axis])
            hi = min(-change - lo, size[axis] - brain_box[2 * axis + 1])
            lower = [0, 0, 0]
            upper = [0, 0, 0]
            lower[axis], upper[axis] = lo, hi
            out = sitk.Crop(out, lower, upper)
        elif change > 0:
            lower = [0, 0, 0]
            upper = [0, 0, 0]
            lower[axis], upper[axis] = change // 2, change - change // 2
            out = sitk.ConstantPad(out, lower, upper, 0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of BraTS case folders")
    p.add_argument("--config-file", required=True, help="the model's config (config_tuned.yaml)")
    p.add_argument("--weights", required=True, help="trained weights (.pth)")
    p.add_argument("--dataset-info", required=True, help="dataset.json of the training dataset")
    p.add_argument("--fovs", type=float, nargs="+", default=[0.7, 0.85, 1.0, 1.25, 1.5],
                   help="fields of view as fractions of each case's own (default 0.7 ... 1.5)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args()
    if min(args.fovs) <= 0:
        p.error("--fovs must be > 0")

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.ground_truth import label_map_masks
    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.data.volume_io import read_image
    from brainseg_d2.evaluation.tuning import region_dice
    from brainseg_d2.inference.volume_predictor import VolumePredictor

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.WEIGHTS", args.weights, *args.opts])
    cfg.freeze()
    predictor = VolumePredictor(cfg, dataset_info=args.dataset_info)
    scores: dict[float, list[dict]] = {f: [] for f in args.fovs}
    for case in find_brats_cases(args.data):
        images = {c: read_image(case.channels[c]) for c in predictor.channels}
        seg = read_image(case.mask)
        brain = np.logical_or.reduce([sitk.GetArrayFromImage(v) != 0 for v in images.values()])
        ys, xs = np.nonzero(brain.any(axis=0))  # array (z, y, x): image x is the last axis
        box = (int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1)
        for fraction in args.fovs:
            shown = {c: reframe(v, fraction, box) for c, v in images.items()}
            pred = predictor.predict(shown)
            gt = label_map_masks(reframe(seg, fraction, box), pred.preprocessed.geometry,
                                 predictor.target, case.label_convention)  # fmt: skip
            row = {"raw": region_dice(pred.masks_raw, gt, predictor.target),
                   "post": region_dice(pred.masks_post, gt, predictor.target),
                   "mm": next(iter(shown.values())).GetSize()[0]
                   * next(iter(shown.values())).GetSpacing()[0]}  # fmt: skip
            scores[fraction].append(row)
            print(case.case_id, fraction, f"{row['mm']:.0f} mm",
                  {k: {r: round(x, 3) for r, x in row[k].items()} for k in ("raw", "post")},
                  flush=True)  # fmt: skip
    regions = list(scores[args.fovs[0]][0]["raw"])
    print(f"\nmean over {len(scores[args.fovs[0]])} cases, raw -> post")
    print("| field of view (of the case's own) | mean width mm | " + " | ".join(regions) + " |")
    print("|---|---|" + "---|" * len(regions))
    for fraction, rows in scores.items():
        cells = []
        for r in regions:
            raw = float(np.mean([x["raw"][r] for x in rows]))
            post = float(np.mean([x["post"][r] for x in rows]))
            cells.append(f"{raw:.3f} -> {post:.3f}")
        width = float(np.mean([x["mm"] for x in rows]))
        print(f"| {fraction:g} | {width:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
