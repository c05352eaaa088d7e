"""Whole-volume prediction speed: VolumePredictor against a loop of DefaultPredictor.

One phantom volume (``generate_case``, 1 mm: 163 axial slices of 198 x 161), one
random-initialised model from the phantom CPU config (``torch.manual_seed``), shared
by every run so the weights are the same. Runs, each timed over the same volume:

* ``DefaultPredictor, all slices``: what a user gets by looping Detectron2's
  ``DefaultPredictor`` over every slice (``(H, W, N)`` arrays in the model's channel
  order), each result turned into category masks from ``BRAINSEG.MASK_SOURCE``;
* ``DefaultPredictor, brain slices``: the same loop over the slices with brain
  voxels only (isolates the gain from skipping);
* ``model loop, no_grad`` / ``model loop, inference_mode``: the model called one
  slice at a time on the predictor's prepared inputs (isolates inference_mode);
* ``VolumePredictor, batch 1`` and ``batch N, one at a time``: ``predict_masks``
  (input building, model, mask union) with ``concurrent_batches=1``, i.e.
  skipping + inference_mode + the score cut, then batching on top;
* ``VolumePredictor, batch N``: the default, on CPU ``torch.get_num_threads()``
  batches at once, each on one torch thread.

Also reported: ``VolumePredictor.predict`` end to end (preprocessing, model,
post-processing, 3D label map) and whether the masks agree with the baseline.
With random weights the detections depend on ``SCORE_THRESH_TEST``: at the
config's 0.05 every slice has ``DETECTIONS_PER_IMAGE`` detections (mask head
bound); with ``--score-thresh-test 0.5`` none (backbone + RPN + box head, like a
trained model on tumour-free slices). A trained model lies in between: pass its
``--config``, ``--weights`` and training ``--dataset-info`` (e.g. those of a
``make demo`` run) to measure it. Every run keeps the detections scoring
``>= BRAINSEG.POSTPROCESS.SCORE_THRESH``.

Run: ``python bench/predict.py [--spacing 1] [--batch-size 8] [--repeats 2]
[--score-thresh-test 0.5] [--threads 2] [--config CFG --weights W --dataset-info J]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from detectron2.engine import DefaultPredictor

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.phantom import generate_case
from brainseg_d2.data.preprocess import preprocess_volume
from brainseg_d2.inference import VolumePredictor
from brainseg_d2.postprocessing import masks_and_seeds_from_output
from brainseg_d2.structures.dataset import BRATS_CHANNELS

CONFIG = "configs/phantom/mask_rcnn_R_18_FPN_cpu_instant_test.yaml"
DATASET_INFO = {  # the four sequences, as the phantom configs' PIXEL_MEAN expects
    "channels": list(BRATS_CHANNELS),
    "slice_axis": "axial",
    "target": "labels",
    "label_convention": "brats2021",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=1.0, help="phantom voxel size (mm)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--score-thresh-test", type=float, help="MODEL.ROI_HEADS.SCORE_THRESH_TEST")
    parser.add_argument("--seed", type=int, default=0, help="phantom case seed")
    parser.add_argument("--config", default=CONFIG, help="model config (default: %(default)s)")
    parser.add_argument("--weights", default="", help="trained weights (default: random init)")
    parser.add_argument("--dataset-info", help="training dataset.json (default: labels target)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(args.config, allow_unsafe=False)
    cfg.MODEL.WEIGHTS = args.weights
    if args.score_thresh_test is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_thresh_test
    cfg.freeze()
    torch.manual_seed(args.seed)
    # DefaultPredictor builds the model (random init: MODEL.WEIGHTS is empty); every
    # run below uses this one model, so the weights are identical.
    default = DefaultPredictor(cfg)  # loads MODEL.WEIGHTS (none: random init)
    model = default.model
    info = args.dataset_info or DATASET_INFO
    predictors = {
        "batch 1": VolumePredictor(
            cfg, dataset_info=info, model=model, batch_size=1, concurrent_batches=1
        ),
        f"batch {args.batch_size}, one at a time": VolumePredictor(
            cfg, dataset_info=info, model=model, batch_size=args.batch_size, concurrent_batches=1
        ),
        f"batch {args.batch_size}": VolumePredictor(
            cfg, dataset_info=info, model=model, batch_size=args.batch_size
        ),
    }
    vp = predictors["batch 1"]

    case = generate_case(args.seed, spacing=args.spacing, p_empty=0.0)
    pre = preprocess_volume(case.images, vp.options)  # what predict() does first
    num_slices = pre.brain.shape[0]
    brain = vp.brain_slices(pre)
    num_categories = len(vp.category_names)
    threshold = vp.postprocess.score_threshold

    def default_loop(indices) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            masks = np.zeros((num_categories, *pre.brain.shape), bool)
            for s in indices:
                # (H, W, N) in the model's channel order, as the mapper feeds it (with
                # INPUT.FORMAT "BGR" DefaultPredictor passes it on unchanged). The whole
                # model runs; the masks come from the configured source, as in
                # VolumePredictor.
                output = default(pre.slices[s])
                masks[:, s] = masks_and_seeds_from_output(
                    output, num_categories, vp.postprocess, vp.mask_source
                )[0]
            return masks

        return run

    inputs = vp.model_inputs(pre, brain)

    def model_loop(context) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with context():
                for x in inputs:
                    model([x])
            return np.zeros(0)

        return run

    detections, kept = [], []  # also warms up (oneDNN builds kernels on first use of a shape)
    with torch.inference_mode():
        for x in inputs[:: max(1, len(inputs) // 10)]:
            scores = model([x])[0]["instances"].scores
            detections.append(len(scores))
            kept.append(int((scores >= threshold).sum()))

    runs = {
        "DefaultPredictor, all slices": default_loop(range(num_slices)),
        "DefaultPredictor, brain slices": default_loop(brain),
        "model loop, no_grad": model_loop(torch.no_grad),  # no score cut: DefaultPredictor's work
        "model loop, inference_mode": model_loop(torch.inference_mode),
    }
    for label, predictor in predictors.items():
        runs[f"VolumePredictor, {label}"] = lambda p=predictor: p.predict_masks(pre)

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {cfg.MODEL.DEVICE}"
    )
    print(
        f"volume: phantom seed {args.seed} at {args.spacing:g} mm, {num_slices} slices of "
        f"{tuple(pre.brain.shape[1:])}, {len(brain)} with brain; model input "
        f"{tuple(inputs[0]['image'].shape[1:])}; SCORE_THRESH_TEST "
        f"{cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST}: {np.mean(detections):.1f} detections/slice, "
        f"{np.mean(kept):.1f} scoring >= {threshold:g}"
    )
    print(f"repeats: {args.repeats}, runs interleaved (median shown, then each repeat)")
    print(
        f"{'run':44s} {'s/volume':>9s} {'volume slices/s':>16s} {'brain slices/s':>15s} "
        f"{'speed-up':>9s}"
    )
    # Round robin: on a shared machine, load changes affect every run alike.
    # CPU seconds of this process: with one thread, what other jobs on a shared
    # machine change least (with more threads, OpenMP spin-waits count too).
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    for label, table in (("wall", times), ("CPU", cpu)):
        print(f"-- {label} time")
        base = statistics.median(table["DefaultPredictor, all slices"])
        for name, values in table.items():
            t = statistics.median(values)
            print(
                f"{name:44s} {t:9.2f} {num_slices / t:16.2f} {len(brain) / t:15.2f} "
                f"{base / t:8.2f}x   [{', '.join(f'{v:.2f}' for v in values)}]"
            )
    reference = results["DefaultPredictor, all slices"]
    if vp.mask_source != "instances":
        print(f"BRAINSEG.MASK_SOURCE is {vp.mask_source!r}: both read the dense head's masks; "
              "VolumePredictor skips the RPN and ROI heads, the DefaultPredictor loop runs them")
    resized = tuple(inputs[0]["image"].shape[1:]) != tuple(pre.brain.shape[1:])
    if resized and pre.slices.shape[-1] == 4:
        # PIL resizes a 4-channel uint8 image as RGBA, premultiplying the first three
        # channels by the fourth; the mapper and VolumePredictor resize channel by channel.
        print("slices are resized: DefaultPredictor resizes the 4 channels as one RGBA image "
              "(PIL premultiplies by the 4th channel), so its inputs and masks differ")
    for label in predictors:
        ours = results[f"VolumePredictor, {label}"]
        print(
            f"{label} vs DefaultPredictor: {int((ours != reference).sum())} of "
            f"{reference.size} mask voxels differ ({int(reference.sum())} set)"
        )
    start = time.perf_counter()
    predictors[f"batch {args.batch_size}"].predict(case.images)
    print(
        f"VolumePredictor.predict end to end (batch {args.batch_size}, preprocessing and "
        f"post-processing included): {time.perf_counter() - start:.2f} s"
    )


if __name__ == "__main__":
    main()
