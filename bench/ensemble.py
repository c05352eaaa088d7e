#!/usr/bin/env python
"""Each model alone against their ensemble (``brainseg-predict --weights A B ...``).

Every case of ``--cases`` (BraTS case folders with their label maps) is predicted
whole by ``VolumePredictor`` with each weights file alone and with all of them
as one ensemble, in one process, the variants interleaved case by case so that
a change in the machine's load hits each alike. The label maps (raw and
post-processed) are scored by ``evaluate_folders`` (``brainseg-evaluate``'s
code): mean volume Dice per BraTS region and BraTS 2023 lesion-wise Dice, plus
seconds per case and their ratio to the first model alone.

    .venv/bin/python bench/ensemble.py --cases output/demo/cases/heldout \\
        --config-file output/demo/train/config_tuned.yaml \\
        --weights output/demo/train/model_final.pth output/seed1/train/model_final.pth \\
        --dataset-info output/demo/datasets/phantom/dataset.json \\
        --label-convention brats2021 --work /tmp/ensemble_bench
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of BraTS case folders")
    p.add_argument("--config-file", required=True, help="the models' config (config_tuned.yaml)")
    p.add_argument("--weights", nargs="+", required=True, help="two or more weights files")
    p.add_argument("--dataset-info", required=True, help="dataset.json of the training dataset")
    p.add_argument("--label-convention", help="the references' convention (phantom: brats2021)")
    p.add_argument("--work", type=Path, required=True, help="folder for predictions and scores")
    args = p.parse_args()

    import SimpleITK as sitk

    from brainseg_d2.config import setup_cfg
    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.evaluation.nifti_evaluation import evaluate_folders
    from brainseg_d2.inference.volume_predictor import VolumePredictor

    cfg = setup_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights[0]])
    variants = {f"model {i + 1} alone": [w] for i, w in enumerate(args.weights)}
    variants[f"ensemble of {len(args.weights)}"] = list(args.weights)
    predictors = {
        name: VolumePredictor(cfg, dataset_info=args.dataset_info, weights=weights)
        for name, weights in variants.items()
    }
    seconds = dict.fromkeys(variants, 0.0)
    cases = find_brats_cases(args.cases)
    for case in cases:
        for name, predictor in predictors.items():
            start = time.perf_counter()
            pred = predictor.predict(case)
            seconds[name] += time.perf_counter() - start
            geometry = pred.preprocessed.geometry
            convention = predictor.output_convention(case)
            raw = predictor.masks_to_image(pred.masks_raw, geometry, convention)
            for mode, image in (("raw", raw), ("post", pred.label_image)):
                out = args.work / name.replace(" ", "_") / mode / f"{case.case_id}_pred.nii.gz"
                out.parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(image, str(out), True)
        print(f"{case.case_id}: done", flush=True)
    first = next(iter(variants))
    print("\n| weights | WT raw -> post | TC raw -> post | ET raw -> post "
          "| lesion-wise WT / TC / ET (post) | s/case | time vs model 1 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in variants:
        folder = args.work / name.replace(" ", "_")
        means = {}
        for mode in ("raw", "post"):
            summary = evaluate_folders(
                folder / mode, args.cases, folder / f"scores_{mode}",
                label_convention=args.label_convention, progress=False, report=False,
            )  # fmt: skip
            means[mode] = {e["name"]: e["mean"] for e in summary["names"]
                           if e["group"] == "region"}  # fmt: skip
        cells = [f"{means['raw'][r]['dice']:.3f} -> {means['post'][r]['dice']:.3f}"
                 for r in ("WT", "TC", "ET")]  # fmt: skip
        lesion = " / ".join(f"{means['post'][r]['lesion_dice']:.3f}" for r in ("WT", "TC", "ET"))
        per_case = seconds[name] / len(cases)
        ratio = seconds[name] / seconds[first]
        print(f"| {name} | " + " | ".join(cells) + f" | {lesion} | {per_case:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
