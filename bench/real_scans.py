#!/usr/bin/env python
"""A trained model on real BraTS scans beside the FLAIR-threshold baseline (volume Dice).

For validation on real MRI that must not enter the repository or CI: point
``--data`` at a folder of BraTS case folders (2018-2021 or 2023+ names, with
``seg``). Each case is predicted whole by ``VolumePredictor`` (the model's own
preprocessing and post-processing) and scored per BraTS region against its
label map (read through ``data/ground_truth.py``), raw and post-processed; the
baseline thresholds the case's own FLAIR intensities (before the model's
normalisation) at the brain's mean + 2 SD (no cleaning).

    .venv/bin/python bench/real_scans.py --data /path/to/brats_cases \\
        --config-file output/demo/train/config_tuned.yaml \\
        --weights output/demo/train/model_final.pth \\
        --dataset-info output/demo/datasets/phantom/dataset.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of BraTS case folders")
    p.add_argument("--config-file", required=True,
                   help="the model's config (e.g. config_tuned.yaml)")
    p.add_argument("--weights", required=True, help="trained weights (.pth)")
    p.add_argument("--dataset-info", required=True, help="dataset.json of the training dataset")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args()

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.ground_truth import label_map_masks
    from brainseg_d2.data.preprocess import source_intensities
    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.data.volume_io import read_image
    from brainseg_d2.evaluation.tuning import region_dice
    from brainseg_d2.inference.volume_predictor import VolumePredictor
    from brainseg_d2.labels import TISSUE_ED

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.WEIGHTS", args.weights, "BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS", (),
                         *args.opts])  # this one model, whatever the config records
    cfg.freeze()
    predictor = VolumePredictor(cfg, dataset_info=args.dataset_info)
    target = predictor.target
    rows = []
    for case in find_brats_cases(args.data):
        pred = predictor.predict(case)
        pre = pred.preprocessed
        gt = label_map_masks(case.mask, pre.geometry, target, case.label_convention)
        flair = source_intensities(read_image(case.channels["flair"]), pre)
        values = flair[pre.brain].astype(np.float64)
        wt = (flair > values.mean() + 2 * values.std()) & pre.brain
        baseline = target.masks_from_tissue(np.where(wt, TISSUE_ED, 0).astype(np.uint8))
        row = {
            "case": case.case_id,
            "raw": region_dice(pred.masks_raw, gt, target),
            "post": region_dice(pred.masks_post, gt, target),
            "baseline": region_dice(baseline, gt, target),
        }
        rows.append(row)
        print(case.case_id, {k: {r: round(v, 3) for r, v in row[k].items()}
                             for k in ("raw", "post", "baseline")}, flush=True)  # fmt: skip
    regions = list(rows[0]["raw"])
    head = " | ".join(f"{r} raw -> post" for r in regions)
    print(f"\n| case | {head} | FLAIR baseline WT |")
    print("|---|" + "---|" * (len(regions) + 1))
    for row in rows + [{"case": "mean", **{
        k: {r: float(np.mean([x[k][r] for x in rows])) for r in regions}
        for k in ("raw", "post", "baseline")
    }}]:  # fmt: skip
        cells = [f"{row['raw'][r]:.3f} -> {row['post'][r]:.3f}" for r in regions]
        print(f"| {row['case']} | " + " | ".join(cells) + f" | {row['baseline']['WT']:.3f} |")


if __name__ == "__main__":
    main()
