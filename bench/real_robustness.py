#!/usr/bin/env python
"""How a trained model's Dice on real scans moves when their acquisition changes.

For validation on real MRI that must not enter the repository or CI: ``--data``
is a folder of BraTS case folders with ``seg``. Each case is read once, changed
in memory in one way at a time, predicted whole by ``VolumePredictor`` and
scored per BraTS region against its own label map (as ``bench/real_scans.py``
does). The changes are ones scanners and sites make and the phantom randomises:

* ``bias T1ce``: T1ce alone times a smooth field (``exp(s f)``, ``f`` a
  unit-variance random field with a 60 mm correlation length, ``s`` from
  ``--bias-sd``, 0.15), so part of the brain looks brighter on T1ce than on T1
  without any enhancement;
* ``bias shared``: the same field on every sequence (one receive coil);
* ``thick 5 mm``: each sequence averaged over 5 mm across its axial slices, as a
  2D acquisition 5 mm thick resampled to the grid;
* ``blur 2 mm``: in-plane Gaussian blur (sd 0.85 mm, about a 2 mm pixel);
* ``noise 4 %``: Gaussian noise of 4 % of the brain's 99th percentile, brain only;
* ``gamma 0.7`` / ``gamma 1.4``: every sequence's brain intensities, scaled to
  [0, 1] by their 99.5th percentile, raised to that power.

Background (zero) voxels stay zero, as in skull-stripped BraTS volumes. Every
draw is seeded (``--seed``), so two models see the same changed scans.

And the field of view (``field of view 0.7`` ... ``1.5``): the predictor resizes
every slice so that its shorter side is ``INPUT.MIN_SIZE_TEST`` pixels
(Detectron2's ``ResizeShortestEdge``), so the millimetres one model pixel covers
follow the field of view, not the voxel size. Each case and its seg are cropped
(never into the brain) or zero-padded in-plane about the centre to that fraction
of the case's own field of view, physical positions kept. These work on any
BraTS case folders, the demo's held-out phantom cases among them.

    .venv/bin/python bench/real_robustness.py --data /path/to/brats_cases \\
        --config-file output/demo/train/config_tuned.yaml \\
        --weights output/demo/train/model_final.pth \\
        --dataset-info output/demo/datasets/phantom/dataset.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

Change = Callable[[dict[str, np.ndarray], np.ndarray, tuple, np.random.Generator], dict]


BIAS_SD = [0.15]  # set from --bias-sd


def _bias_field(shape: tuple, spacing_zyx: tuple, rng: np.random.Generator) -> np.ndarray:
    from brainseg_d2.data.phantom_fields import smooth_noise

    corr = tuple(60.0 / s for s in spacing_zyx)  # 60 mm in voxels per axis
    return np.exp(BIAS_SD[0] * smooth_noise(rng, shape, corr))


def bias_t1ce(arrays, brain, spacing, rng):
    field = _bias_field(brain.shape, spacing, rng)
    return {**arrays, "t1ce": arrays["t1ce"] * field}


def bias_shared(arrays, brain, spacing, rng):
    field = _bias_field(brain.shape, spacing, rng)
    return {k: v * field for k, v in arrays.items()}


def thick(arrays, brain, spacing, rng, mm: float = 5.0):
    size = max(1, int(round(mm / spacing[0])))
    return {k: ndimage.uniform_filter1d(v, size, axis=0) for k, v in arrays.items()}


def blur(arrays, brain, spacing, rng, sd_mm: float = 0.85):
    sigma = (0.0, sd_mm / spacing[1], sd_mm / spacing[2])
    return {k: ndimage.gaussian_filter(v, sigma) for k, v in arrays.items()}


def noise(arrays, brain, spacing, rng, share: float = 0.04):
    out = {}
    for k, v in arrays.items():
        sd = share * float(np.percentile(v[brain], 99))
        out[k] = v + rng.normal(0.0, sd, v.shape).astype(np.float32)
    return out


def gamma(arrays, brain, spacing, rng, power: float = 1.0):
    out = {}
    for k, v in arrays.items():
        top = float(np.percentile(v[brain], 99.5))
        out[k] = np.clip(v / top, 0.0, None) ** power * top
    return out


CHANGES: dict[str, Change | None] = {
    "none": None,
    "bias T1ce": bias_t1ce,
    "bias shared": bias_shared,
    "thick 5 mm": thick,
    "blur 2 mm": blur,
    "noise 4 %": noise,
    "gamma 0.7": lambda a, b, s, r: gamma(a, b, s, r, 0.7),
    "gamma 1.4": lambda a, b, s, r: gamma(a, b, s, r, 1.4),
}


#: In-plane field of view as a fraction of the case's own (see the module docstring).
FRAMES = {f"field of view {f:g}": f for f in (0.7, 0.85, 1.25, 1.5)}


def reframe(image: sitk.Image, fraction: float, brain_box: tuple[int, int, int, int]) -> sitk.Image:
    """``image`` cropped (fraction < 1) or zero-padded (> 1) in-plane about its centre;
    a crop stops at ``brain_box`` (x0, x1, y0, y1 voxels), so no tumour is lost."""
    size, out = image.GetSize(), image
    for axis in (0, 1):
        change = int(round(size[axis] * fraction)) - size[axis]
        lower, upper = [0, 0, 0], [0, 0, 0]
        if change < 0:
            lower[axis] = min(-change // 2, brain_box[2 * axis])
            upper[axis] = min(-change - lower[axis], size[axis] - brain_box[2 * axis + 1])
            out = sitk.Crop(out, lower, upper)
        elif change > 0:
            lower[axis], upper[axis] = change // 2, change - change // 2
            out = sitk.ConstantPad(out, lower, upper, 0)
    return out


def changed_images(images: dict[str, sitk.Image], change: Change | None, seed: int) -> dict:
    """The case's images with ``change`` applied inside the brain (background stays 0)."""
    if change is None:
        return images
    arrays = {k: sitk.GetArrayFromImage(v).astype(np.float32) for k, v in images.items()}
    brain = np.logical_or.reduce([a != 0 for a in arrays.values()])
    ref = next(iter(images.values()))
    spacing_zyx = tuple(reversed(ref.GetSpacing()))
    out = change(arrays, brain, spacing_zyx, np.random.default_rng(seed))
    result = {}
    for k, a in out.items():
        image = sitk.GetImageFromArray(np.where(brain, np.maximum(a, 0.0), 0.0).astype(np.float32))
        image.CopyInformation(images[k])
        result[k] = image
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of BraTS case folders")
    p.add_argument("--config-file", required=True, help="the model's config (config_tuned.yaml)")
    p.add_argument("--weights", required=True, help="trained weights (.pth)")
    p.add_argument("--dataset-info", required=True, help="dataset.json of the training dataset")
    p.add_argument("--seed", type=int, default=0, help="seed of the random changes")
    p.add_argument("--bias-sd", type=float, default=0.15,
                   help="sd of the log bias field of the two bias changes (default 0.15)")
    names = [*CHANGES, *FRAMES]
    p.add_argument("--changes", nargs="+", default=names, choices=names,
                   metavar="NAME", help=f"which changes (default: all of {names})")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args()
    BIAS_SD[0] = args.bias_sd

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.ground_truth import label_map_masks
    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.data.volume_io import read_image
    from brainseg_d2.evaluation.tuning import region_dice
    from brainseg_d2.inference.volume_predictor import VolumePredictor

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.WEIGHTS", args.weights, "BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS", (),
                         *args.opts])  # this one model, whatever the config records
    cfg.freeze()
    predictor = VolumePredictor(cfg, dataset_info=args.dataset_info)
    scores: dict[str, list[dict]] = {name: [] for name in args.changes}
    for index, case in enumerate(find_brats_cases(args.data)):
        images = {c: read_image(case.channels[c]) for c in predictor.channels}
        seg = read_image(case.mask)
        brain = np.logical_or.reduce([sitk.GetArrayFromImage(v) != 0 for v in images.values()])
        ys, xs = np.nonzero(brain.any(axis=0))  # arrays are (z, y, x)
        box = (int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1)
        for name in args.changes:
            if name in FRAMES:
                shown = {c: reframe(v, FRAMES[name], box) for c, v in images.items()}
                label = reframe(seg, FRAMES[name], box)
            else:
                shown = changed_images(images, CHANGES[name], args.seed + index)
                label = seg
            pred = predictor.predict(shown)
            gt = label_map_masks(label, pred.preprocessed.geometry, predictor.target,
                                 case.label_convention)  # fmt: skip
            row = {"raw": region_dice(pred.masks_raw, gt, predictor.target),
                   "post": region_dice(pred.masks_post, gt, predictor.target)}  # fmt: skip
            scores[name].append(row)
            print(case.case_id, name, {k: {r: round(x, 3) for r, x in v.items()}
                                       for k, v in row.items()}, flush=True)  # fmt: skip
    regions = list(scores[args.changes[0]][0]["raw"])
    print(f"\nmean over {len(scores[args.changes[0]])} cases, raw -> post")
    print("| change | " + " | ".join(regions) + " |")
    print("|---|" + "---|" * len(regions))
    for name, rows in scores.items():
        cells = []
        for r in regions:
            raw = float(np.mean([x["raw"][r] for x in rows]))
            post = float(np.mean([x["post"][r] for x in rows]))
            cells.append(f"{raw:.3f} -> {post:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
