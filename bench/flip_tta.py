#!/usr/bin/env python
"""Left-right flip test-time augmentation of the dense head: held-out Dice and time.

Takes a finished ``make demo`` (or ``tools/run_demo.py``) output folder and its
trained model, and runs the demo's last two model stages twice in one process,
without and with ``BRAINSEG.INFERENCE.FLIP_TTA``: the post-processing tuning on
``phantom_val`` (each way chooses its own, as the demo would) and the held-out
evaluation. Prints volume Dice raw -> post and lesion-wise Dice (post) per
region, and the seconds of both stages, with the ratio to no TTA. Nothing in the
demo folder is changed: the tuned configs and evaluation files go to ``--work``.

    .venv/bin/python bench/flip_tta.py --demo output/demo --work /tmp/tta
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, required=True, help="a finished demo output folder")
    p.add_argument("--work", type=Path, required=True, help="new folder for this bench's files")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args()

    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from brainseg_d2.data.datasets import register_brainseg_dataset
    from brainseg_d2.pipeline import DemoOptions, build_cfg, evaluate, tune

    summary = args.demo / "summary.json"
    weights = args.demo / "train" / "model_final.pth"
    if not summary.is_file() or not weights.is_file():
        raise SystemExit(f"{args.demo} is not a finished demo output (no summary.json or weights)")
    if args.work.exists():
        raise SystemExit(f"{args.work} exists; give a new folder")

    config = json.loads(summary.read_text())["options"]["config"]
    register_brainseg_dataset(args.demo / "datasets/phantom", name="phantom")
    register_brainseg_dataset(args.demo / "datasets/heldout", name="heldout")

    rows = []
    for flip in (False, True):
        opts = DemoOptions(
            config=Path(config),
            output=args.work / ("flip" if flip else "plain"),
            opts=[*args.opts, "BRAINSEG.INFERENCE.FLIP_TTA", str(flip)],
        )
        (opts.output / "train").mkdir(parents=True)
        model = build_model(build_cfg(opts))
        DetectionCheckpointer(model).load(str(weights))
        model.eval()
        t = time.perf_counter()
        tune(opts, model)
        t_tune = time.perf_counter() - t
        t = time.perf_counter()
        flat = evaluate(opts, model)
        t_eval = time.perf_counter() - t
        rows.append((flip, flat, t_tune, t_eval))

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; demo {args.demo}")
    print("| flip TTA | WT raw -> post | TC raw -> post | ET raw -> post "
          "| lesion-wise WT / TC / ET (post) | tune s | evaluate s | time vs no TTA |")
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][2] + rows[0][3]
    for flip, flat, t_tune, t_eval in rows:
        regions = [
            f"{flat[f'volume_dice_{r}_raw']:.3f} -> {flat[f'volume_dice_{r}_post']:.3f}"
            for r in ("WT", "TC", "ET")
        ]
        lesion = " / ".join(f"{flat[f'lesion_dice_{r}_post']:.3f}" for r in ("WT", "TC", "ET"))
        print(f"| {'on' if flip else 'off'} | {' | '.join(regions)} | {lesion} "
              f"| {t_tune:.1f} | {t_eval:.1f} | {(t_tune + t_eval) / base:.2f}x |")


if __name__ == "__main__":
    main()
