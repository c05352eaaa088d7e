"""Converting a Decathlon task (4D images) against the same cases in BraTS files.

Writes the BraTS cases under ``--data`` (default: phantom cases generated here) as a
Medical Segmentation Decathlon task in a temporary folder: one 4D NIfTI per case,
its volumes FLAIR, T1w, t1gd, T2w in ``--dtype``, labels 1 edema, 2 non-enhancing,
3 enhancing. Then converts both with ``convert_dataset`` (one worker, every empty
slice kept, so both keep the same slices), rounds interleaved, and reports

* seconds per case for each and their ratio (median over rounds);
* whether the two datasets hold identical slice images and annotations (the case
  ids differ; they are matched in order).

Run: ``python bench/decathlon_convert.py [--data /path/to/brats_cases] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainseg_d2.data.convert import ConvertOptions, convert_dataset
from brainseg_d2.data.phantom import generate_dataset
from brainseg_d2.data.sources import find_brats_cases, find_cases

SEQUENCES = ("flair", "t1", "t1ce", "t2")
DTYPES = {"float32": sitk.sitkFloat32, "int16": sitk.sitkInt16}


def write_task(cases, out: Path, dtype: str) -> dict[str, str]:
    """The cases as a Decathlon task at ``out``; returns BraTS id -> task id."""
    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True)
    ids, training = {}, []
    for i, case in enumerate(cases):
        name = f"BRATS_{i + 1:03d}"
        ids[case.case_id] = name
        volumes = [sitk.Cast(sitk.ReadImage(case.channels[c]), DTYPES[dtype]) for c in SEQUENCES]
        sitk.WriteImage(sitk.JoinSeries(volumes), str(out / "imagesTr" / f"{name}.nii.gz"))
        seg = sitk.ReadImage(case.mask)
        raw = sitk.GetArrayFromImage(seg)
        labels = sitk.GetImageFromArray(np.select([raw == 2, raw == 1, raw == 4], [1, 2, 3], 0)
                                        .astype(np.uint8))  # fmt: skip
        labels.CopyInformation(seg)
        sitk.WriteImage(labels, str(out / "labelsTr" / f"{name}.nii.gz"))
        training.append(
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
        )
    spec = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                   "3": "enhancing tumour"},
        "training": training, "test": [],
    }  # fmt: skip
    (out / "dataset.json").write_text(json.dumps(spec))
    return ids


def contents(dataset: Path, rename: dict[str, str]) -> tuple[dict, list]:
    """Slice images (bytes by renamed path) and annotations (by renamed file name)."""
    images = {}
    for path in sorted((dataset / "images").rglob("*.png")):
        key = str(path.relative_to(dataset))
        for old, new in rename.items():
            key = key.replace(old, new)
        images[key] = path.read_bytes()
    coco = json.loads((dataset / "annotations" / "instances_train.json").read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    annotations = []
    for a in coco["annotations"]:
        name = names[a["image_id"]]
        for old, new in rename.items():
            name = name.replace(old, new)
        annotations.append((name, a["category_id"], json.dumps(a["segmentation"]), a["bbox"]))
    return images, sorted(annotations)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="BraTS case folders (default: 4 phantom cases)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            data = tmp / "cases"
            generate_dataset(data, 4, seed=0, spacing=1.0, p_empty=0.0)
        brats = find_brats_cases(data)
        rename = write_task(brats, tmp / "task", args.dtype)
        task = find_cases(tmp / "task", "decathlon")
        options = ConvertOptions(split=(1.0, 0.0, 0.0), empty_ratio=1.0)
        seconds: dict[str, list[float]] = {"BraTS files": [], "Decathlon 4D": []}
        for r in range(args.rounds):
            for label, cases in (("BraTS files", brats), ("Decathlon 4D", task)):
                out = tmp / f"{label.split()[0]}_{r}"
                start = time.perf_counter()
                convert_dataset(cases, out, options, progress=False)
                seconds[label].append((time.perf_counter() - start) / len(cases))
        ours = contents(tmp / f"BraTS_{args.rounds - 1}", rename)
        theirs = contents(tmp / f"Decathlon_{args.rounds - 1}", {})
    base = statistics.median(seconds["BraTS files"])
    print(f"{len(brats)} cases from {data if args.data else 'the phantom (1 mm)'}; "
          f"Decathlon volumes stored as {args.dtype}")  # fmt: skip
    for label, values in seconds.items():
        med = statistics.median(values)
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label:>13}: {rounds} s/case, median {med:.2f} ({med / base:.2f}x)")
    print(
        f"identical slice images: {ours[0] == theirs[0]} ({len(ours[0])}), "
        f"identical annotations: {ours[1] == theirs[1]} ({len(ours[1])})"
    )


if __name__ == "__main__":
    main()
