"""Benchmark: seconds per BraTS-size case, brainseg-evaluate vs the official brats-evaluation.

Synthetic BraTS 2023-style cases (240 x 240 x 155 uint8 label maps, 1 mm,
labels 1 NCR, 2 edema, 3 ET) hold a main tumour and two or three satellite
lesions; the prediction is the reference shifted, with ragged borders, one
missed satellite and a false-positive blob. Both tools read the same ``.nii.gz``
files from disk, one case at a time on one process:

* ours: :func:`brainseg_d2.evaluation.nifti_evaluation.evaluate_folders`
  (``workers=1``): WT, TC, ET, NCR and edema, each with Dice, IoU, both HD95
  conventions, sensitivity, specificity, precision, BraTS 2023 lesion-wise
  Dice/HD95 and BraTS 2024+ RQ/SQ/PQ;
* official: ``brats_evaluation.evaluate_single_exam`` with its bundled ``gli``
  config (panoptica; groups WT, TC, ET, NETC, SNFH, RC; instance Dice/NSD/HD95,
  global Dice/NSD/HD95).

The script also checks that the numbers both report agree (global Dice, RQ,
SQ, PQ to 1e-6; pooled HD95 and lesion HD95 to 1e-3 mm).

``brats-evaluation`` pins numpy < 2.3, so it does not install into the
project's ``.venv``; run the script in an environment that has it and sees
this checkout::

    python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install brats-evaluation \\
        SimpleITK tqdm scipy
    PYTHONPATH=. /tmp/refvenv/bin/python bench/evaluate.py [--cases 4] [--repeats 2]

Without ``brats-evaluation`` it times ``brainseg-evaluate`` alone.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainseg_d2.evaluation.nifti_evaluation import CASES_FILE, evaluate_folders

SHAPE = (155, 240, 240)  # numpy (z, y, x)
GROUPS = {"wt": "WT", "tc": "TC", "et": "ET", "netc": "necrotic", "snfh": "edema"}


def _blob(rng, centre, radii, roughness: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 4)
    noise /= noise.std() + 1e-8
    return np.sqrt(r2) + roughness * noise < 1.0


def _tumour(rng, centre, radii) -> np.ndarray:
    """uint8 labels of one tumour: edema 2 around a core whose rim is ET 3, inside NCR 1."""
    wt = _blob(rng, centre, radii, 0.12)
    core = wt & _blob(rng, centre, np.asarray(radii) * 0.6, 0.15)
    et = core & ~ndimage.binary_erosion(core, iterations=3)
    return np.where(et, 3, np.where(core, 1, np.where(wt, 2, 0))).astype(np.uint8)


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) uint8 label maps (z, y, x)."""
    rng = np.random.default_rng(seed)
    centre = np.array(SHAPE) / 2 + rng.uniform(-20, 20, size=3)
    ref = _tumour(rng, centre, rng.uniform(18, 32, size=3))
    satellites = []
    for _ in range(int(rng.integers(2, 4))):
        where = centre + rng.choice([-1, 1], size=3) * rng.uniform(35, 55, size=3)
        sat = _tumour(rng, where, rng.uniform(5, 9, size=3))
        satellites.append(sat > 0)
        ref = np.where(ref == 0, sat, ref)
    shift = tuple(int(s) for s in rng.integers(-2, 3, size=3))
    pred = np.roll(ref, shift, axis=(0, 1, 2))
    pred[np.roll(satellites[0], shift, axis=(0, 1, 2))] = 0  # one satellite missed
    border = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 1.5)
    edge = (pred > 0) ^ ndimage.binary_erosion(pred > 0)
    pred[edge & (border > 0.3)] = 0  # ragged surface
    fp = _blob(rng, centre + np.array([0, 70, -60]), (4, 6, 5), 0.1)
    pred[fp & (pred == 0)] = 2
    return pred, ref


def _write(path: Path, labels: np.ndarray) -> None:
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path))


def _rows(path: Path) -> dict[tuple[str, str], dict]:
    with path.open(newline="") as f:
        return {(r["case_id"], r["name"]): r for r in csv.DictReader(f)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="runs of each tool; the best counts")
    args = p.parse_args()
    try:
        import brats_evaluation
        from panoptica import Panoptica_Evaluator
    except ImportError:
        brats_evaluation = None
        print("brats-evaluation is not installed: timing brainseg-evaluate only")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref_dir, pred_dir = tmp / "ref", tmp / "pred"
        ref_dir.mkdir()
        pred_dir.mkdir()
        ids = [f"BraTS-GLI-{i:05d}-000" for i in range(args.cases)]
        for i, cid in enumerate(ids):
            pred, ref = make_case(i)
            _write(ref_dir / f"{cid}-seg.nii.gz", ref)
            _write(pred_dir / f"{cid}.nii.gz", pred)

        ours = []
        for r in range(args.repeats):
            start = time.perf_counter()
            evaluate_folders(pred_dir, ref_dir, tmp / f"out{r}", progress=False, workers=1,
                             report=False)  # scoring only, as brats-evaluation
            ours.append((time.perf_counter() - start) / args.cases)
        print(f"brainseg-evaluate : {min(ours):.2f} s/case (runs: "
              + ", ".join(f"{t:.2f}" for t in ours) + ")")  # fmt: skip
        if brats_evaluation is None:
            return

        config = str(brats_evaluation.config_path("gli"))
        official, results = [], {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = Panoptica_Evaluator.load_from_config(config)
            for _ in range(args.repeats):
                start = time.perf_counter()
                for cid in ids:
                    results[cid] = brats_evaluation.evaluate_single_exam(
                        str(pred_dir / f"{cid}.nii.gz"),
                        str(ref_dir / f"{cid}-seg.nii.gz"),
                        cid,
                        evaluator,
                    )
                official.append((time.perf_counter() - start) / args.cases)
        print(f"brats-evaluation  : {min(official):.2f} s/case (runs: "
              + ", ".join(f"{t:.2f}" for t in official) + ")")  # fmt: skip
        print(f"official / ours   : {min(official) / min(ours):.2f}x")

        rows = _rows(tmp / "out0" / CASES_FILE)
        worst = {"dice": 0.0, "rq/sq/pq": 0.0, "hd95_pooled": 0.0, "sq_hd95": 0.0}
        for cid in ids:
            for group, name in GROUPS.items():
                theirs, mine = results[cid][group], rows[(cid, name)]
                worst["dice"] = max(
                    worst["dice"], abs(theirs["global_bin_dsc"] - float(mine["dice"]))
                )
                for key, col in (("rq", "rq"), ("sq_dsc", "sq"), ("pq_dsc", "pq")):
                    worst["rq/sq/pq"] = max(worst["rq/sq/pq"], abs(theirs[key] - float(mine[col])))
                for key, col in (("global_bin_hd95", "hd95_pooled"), ("sq_hd95", "sq_hd95")):
                    diff = abs(theirs[key] - float(mine[col]))
                    worst[col] = max(worst[col], diff)
        print("max |difference|  : " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
        print(f"machine           : {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, numpy {np.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
