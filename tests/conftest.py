"""Shared fixtures: a small converted phantom dataset, built once per test session."""

from __future__ import annotations

import pytest


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
        ConvertOptions(split=(0.5, 0.25, 0.25), seed=0, empty_ratio=0.5),
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
        ConvertOptions(split=(0.5, 0.25, 0.25), seed=0, empty_ratio=0.5),
        progress=False,
    )
    names = register_brainseg_dataset(dataset, name="eval_phantom")
    return {"root": dataset.parent, "dataset": dataset, "names": names}
