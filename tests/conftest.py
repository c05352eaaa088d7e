"""Shared fixtures: a small converted phantom dataset, built once per test session."""

from __future__ import annotations

import os

import pytest


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may use
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pytest_configure(config):
    """Under pytest-xdist (``make test``), each worker gets its share of the cores.

    Torch and OpenMP would otherwise start one thread per core in every worker and in
    every subprocess a test starts, and the workers' threads would contend: the
    training tests took as long on two workers as on one (BENCHMARKS.md, "Test suite").
    Set before any test module imports torch; an OMP_NUM_THREADS already set wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        threads = max(1, _cores() // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory):
    """A converted phantom dataset (6 cases at 3 mm, labels target) and its raw cases.

    Returns:
        dict with ``root`` (a DETECTRON2_DATASETS folder holding ``phantom/``),
        ``dataset`` (the converted folder) and ``cases`` (the BraTS-layout input).
    """
    from brainseg_d2.data.convert import ConvertOptions, convert_dataset
    from brainseg_d2.data.phantom import generate_dataset
    from brainseg_d2.data.sources import find_brats_cases

    base = tmp_path_factory.mktemp("phantom")
    cases_dir = base / "cases"
    generate_dataset(cases_dir, 6, seed=0, spacing=3.0, p_empty=0.0)
    root = base / "datasets"
    dataset = root / "phantom"
    convert_dataset(
        find_brats_cases(cases_dir),
        dataset,
        ConvertOptions(split=(0.5, 0.25, 0.25), seed=0, empty_ratio=0.5, target="labels"),
        progress=False,
    )
    return {"root": root, "dataset": dataset, "cases": cases_dir}


@pytest.fixture(scope="session")
def eval_phantom_dataset(tmp_path_factory):
    """Converted phantom (4 cases at 3 mm, labels target), registered as ``eval_phantom_*``.

    Returns:
        dict with ``root`` (a DETECTRON2_DATASETS folder), ``dataset`` (the
        converted folder) and ``names`` (registered ``eval_phantom_<split>``;
        train 2 volumes, val 1, test 1).
    """
    from brainseg_d2.data.convert import ConvertOptions, convert_dataset
    from brainseg_d2.data.datasets import register_brainseg_dataset
    from brainseg_d2.data.phantom import generate_dataset
    from brainseg_d2.data.sources import find_brats_cases

    base = tmp_path_factory.mktemp("eval_phantom")
    generate_dataset(base / "cases", 4, seed=0, spacing=3.0, p_empty=0.0)
    dataset = base / "datasets" / "eval_phantom"
    convert_dataset(
        find_brats_cases(base / "cases"),
        dataset,
        ConvertOptions(split=(0.5, 0.25, 0.25), seed=0, empty_ratio=0.5, target="labels"),
        progress=False,
    )
    names = register_brainseg_dataset(dataset, name="eval_phantom")
    return {"root": dataset.parent, "dataset": dataset, "names": names}


@pytest.fixture(scope="session")
def weights_files(tmp_path_factory):
    """Checkpoints for the instant-test config made small, and ones that do not fit it.

    Returns:
        dict with ``config`` (YAML), ``opts`` (the overrides that make the model
        small: pass them with any of the weights), and weight files ``good`` (a
        randomly initialised model of that config), ``five`` (box/mask heads for
        5 classes instead of 3), ``nores5`` (no ``res5`` stage) and ``truncated``
        (the first 64 KiB of ``good``).
    """
    from pathlib import Path

    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from brainseg_d2.config import get_brainseg_cfg

    config = str(
        Path(__file__).resolve().parents[1]
        / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"
    )  # fmt: skip
    opts = [
        "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "256", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "128", "TEST.DETECTIONS_PER_IMAGE", "5",
    ]  # fmt: skip
    folder = tmp_path_factory.mktemp("weights")
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(config, allow_unsafe=False)
    cfg.merge_from_list(opts)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("good")
    good = folder / "good.pth"
    state = torch.load(good, map_location="cpu", weights_only=False)
    model = state["model"]
    five = {
        k: torch.zeros((6 if "cls_score" in k else 20 if "bbox_pred" in k else 5, *v.shape[1:]))
        if "box_predictor" in k or "mask_head.predictor" in k
        else v
        for k, v in model.items()
    }
    torch.save({"model": five}, folder / "five.pth")
    torch.save({"model": {k: v for k, v in model.items() if ".res5." not in k}},
               folder / "nores5.pth")  # fmt: skip
    (folder / "truncated.pth").write_bytes(good.read_bytes()[: 64 * 1024])
    return {
        "config": config,
        "opts": opts,
        **{name: folder / f"{name}.pth" for name in ("good", "five", "nores5", "truncated")},
    }


@pytest.fixture(scope="session")
def tiny_cases(phantom_dataset, tmp_path_factory):
    """Two BraTS case folders ``Tiny_A``, ``Tiny_B``: phantom cases cut to 4 axial slices.

    Returns:
        the folder holding them (fast to predict with the ``weights_files`` model).
    """
    import SimpleITK as sitk

    from brainseg_d2.data.sources import find_brats_cases

    out = tmp_path_factory.mktemp("tiny_cases")
    for name, case in zip(("Tiny_A", "Tiny_B"), find_brats_cases(phantom_dataset["cases"])):
        folder = out / name
        folder.mkdir()
        for channel, path in [*case.channels.items(), ("seg", case.mask)]:
            image = sitk.ReadImage(str(path))
            mid = image.GetSize()[2] // 2
            cut = image[:, :, mid - 2 : mid + 2]
            sitk.WriteImage(cut, str(folder / f"{name}_{channel}.nii.gz"))
    return out


@pytest.fixture(scope="session")
def oblique_dataset(tmp_path_factory):
    """Two phantom cases (3 mm, labels 1, 2 and 4) re-headered onto a permuted, flipped,
    anisotropic and slightly rotated grid, converted into val and test with the default
    ``min_area`` (10 px, training annotations only) and registered as ``oblique_*``.

    Returns:
        dict with ``cases`` (the BraTS-layout input), ``dataset`` (the converted
        folder) and ``names`` (``oblique_val``, ``oblique_test``: one volume each).
    """
    import numpy as np
    import SimpleITK as sitk

    from brainseg_d2.data.convert import ConvertOptions, convert_dataset
    from brainseg_d2.data.datasets import register_brainseg_dataset
    from brainseg_d2.data.phantom import PhantomCase, generate_case, write_case
    from brainseg_d2.data.sources import find_brats_cases

    rot = np.array([[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]])
    direction = tuple((np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]) @ rot).ravel())

    def reheader(image):
        out = sitk.Image(image)
        out.SetSpacing((1.0, 1.3, 2.5))
        out.SetOrigin((12.5, -40.0, 7.25))
        out.SetDirection(direction)
        return out

    base = tmp_path_factory.mktemp("oblique")
    found = 0
    for seed in range(1, 60):
        case = generate_case(seed, spacing=3.0, p_empty=0.0)
        if set(np.unique(sitk.GetArrayViewFromImage(case.seg))) != {0, 1, 2, 4}:
            continue
        oblique = PhantomCase(
            images={k: reheader(v) for k, v in case.images.items()},
            seg=reheader(case.seg),
            has_tumour=case.has_tumour,
            kind=case.kind,
            anatomy=reheader(case.anatomy),
        )
        found += 1
        write_case(oblique, base / "cases", f"Obl_{found:03d}")
        if found == 2:
            break
    dataset = base / "datasets" / "oblique"
    convert_dataset(
        find_brats_cases(base / "cases"),
        dataset,
        ConvertOptions(split=(0.0, 0.5, 0.5), seed=0, target="labels"),
        progress=False,
    )
    names = register_brainseg_dataset(dataset, name="oblique")
    return {"cases": base / "cases", "dataset": dataset, "names": names}


# --- Decathlon / nnU-Net task folders written from BraTS case folders -------------
_SEQUENCES = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
_MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor",
               "3": "enhancing tumour"}  # fmt: skip


def _msd_labels(seg):
    """BraTS 2021 labels (1 NCR, 2 ED, 4 ET) as the Decathlon's (1 ED, 2 NCR, 3 ET)."""
    import numpy as np
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(seg)
    out = np.select([array == 1, array == 2, array == 4], [2, 1, 3], 0).astype(np.uint8)
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(seg)
    return image


def _write_task(brats_root, out, form="msd", test_cases=1):
    """Write the BraTS cases under ``brats_root`` as a task folder ``out``.

    ``form``: ``msd`` (4D images, case lists), ``v1`` (a file per sequence, case
    lists) or ``v2`` (a file per sequence, ``channel_names``, region labels). The
    last ``test_cases`` cases go to imagesTs without labels.
    """
    import json

    import SimpleITK as sitk

    from brainseg_d2.data.sources import find_brats_cases

    cases = find_brats_cases(brats_root)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (out / folder).mkdir(parents=True)
    training, test = [], []
    for i, case in enumerate(cases):
        name = f"BRATS_{i + 1:03d}"
        labelled = i < len(cases) - test_cases
        folder = out / ("imagesTr" if labelled else "imagesTs")
        volumes = [sitk.ReadImage(case.channels[c]) for c in ("flair", "t1", "t1ce", "t2")]
        if form == "msd":
            sitk.WriteImage(sitk.JoinSeries(volumes), str(folder / f"{name}.nii.gz"))
        else:
            for k, volume in enumerate(volumes):
                sitk.WriteImage(volume, str(folder / f"{name}_{k:04d}.nii.gz"))
        if labelled:
            seg = _msd_labels(sitk.ReadImage(case.mask))
            sitk.WriteImage(seg, str(out / "labelsTr" / f"{name}.nii.gz"))
            training.append({"image": f"./imagesTr/{name}.nii.gz",
                             "label": f"./labelsTr/{name}.nii.gz"})  # fmt: skip
        else:
            test.append(f"./imagesTs/{name}.nii.gz")
    if form == "v2":
        spec = {"channel_names": _SEQUENCES, "file_ending": ".nii.gz",
                "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                           "enhancing tumor": [3]},
                "regions_class_order": [1, 2, 3], "numTraining": len(training)}  # fmt: skip
    else:
        spec = {"name": "BRATS", "modality": _SEQUENCES, "labels": _MSD_LABELS,
                "training": training, "test": test}  # fmt: skip
    (out / "dataset.json").write_text(json.dumps(spec))
    # The Decathlon's archive holds macOS resource forks beside the images.
    (out / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 not an image")
    return out


@pytest.fixture
def write_task():
    """``write_task(brats_root, out, form="msd", test_cases=1)``: the BraTS cases under
    ``brats_root`` as a Decathlon (``msd``) or nnU-Net (``v1``, ``v2``) task folder."""
    return _write_task
