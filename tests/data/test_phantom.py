"""Tests for the built-in MRI phantom (brainseg_d2.data.phantom).

Most tests use 2 mm voxels so the whole file runs in seconds; generated cases
are cached per (seed, spacing, p_empty) because generation is deterministic.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from brainseg_d2.data import phantom
from brainseg_d2.labels import CONVENTIONS, raw_to_tissue

pytest.importorskip("nilearn")

REPO = Path(__file__).resolve().parents[2]
FAST = 2.0  # mm
NCR, ED, ET = 1, 2, 4  # BraTS 2021 raw labels
CSF, GM, WM = 1, 2, 3  # PhantomCase.anatomy codes
POOL = range(6)  # seeds of the cached 2 mm cases most tests share


@functools.cache
def _case(seed: int, spacing: float = FAST, p_empty: float = 0.0) -> phantom.PhantomCase:
    return phantom.generate_case(seed, spacing=spacing, p_empty=p_empty)


def _arrays(case: phantom.PhantomCase) -> dict[str, np.ndarray]:
    out = {m: sitk.GetArrayFromImage(img) for m, img in case.images.items()}
    out["seg"] = sitk.GetArrayFromImage(case.seg)
    out["anatomy"] = sitk.GetArrayFromImage(case.anatomy)
    return out


def _full_tumour_seeds() -> list[int]:
    """Seeds of POOL whose case has necrosis, edema and enhancement."""
    found = [s for s in POOL if {NCR, ED, ET} <= set(np.unique(_arrays(_case(s))["seg"]).tolist())]
    assert len(found) >= 2, "most high-grade tumours should have all three labels"
    return found


def test_dataset_has_brats2021_layout_and_case_seeds(tmp_path):
    out = tmp_path / "phantom"
    paths = phantom.generate_dataset(out, 1, seed=9, spacing=FAST, prefix="Demo")
    assert paths == [out / "Demo_00000"]
    assert [p.name for p in out.iterdir()] == ["Demo_00000"]  # no temporary folder left
    cid = "Demo_00000"
    names = {f"{cid}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2", "seg")}
    assert {f.name for f in paths[0].iterdir()} == names
    flair = sitk.ReadImage(str(paths[0] / f"{cid}_flair.nii.gz"))
    seg = sitk.ReadImage(str(paths[0] / f"{cid}_seg.nii.gz"))
    assert flair.GetPixelID() == sitk.sitkFloat32 and seg.GetPixelID() == sitk.sitkUInt8
    # Case i of a dataset is generate_case((seed, i)).
    direct = _arrays(phantom.generate_case((9, 0), spacing=FAST))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), direct["seg"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(flair), direct["flair"])


def test_seg_values_are_brats2021_labels():
    for seed in POOL:
        seg = _arrays(_case(seed))["seg"]
        assert set(np.unique(seg).tolist()) <= {0, NCR, ED, ET}
        raw_to_tissue(seg, CONVENTIONS["brats2021"])  # raises on labels outside the convention


def test_tumour_lies_inside_skull_stripped_brain():
    for seed in POOL:
        a = _arrays(_case(seed))
        tumour = a["seg"] > 0
        assert tumour.any()
        for m in phantom.MODALITIES:
            assert (a[m][tumour] > 0).all(), m  # no label where the images are background
        assert (a["anatomy"][tumour] > 0).all()
        # Skull-stripped: exactly zero outside the brain, positive inside.
        brain = a["anatomy"] > 0
        assert (a["flair"][~brain] == 0).all() and (a["flair"][brain] > 0).all()


def test_necrosis_in_enhancing_rim_in_edema():
    for seed in _full_tumour_seeds():
        seg = _arrays(_case(seed))["seg"]
        ncr, et, wt = seg == NCR, seg == ET, seg > 0
        tc = ncr | et
        assert not (tc & ~ndimage.binary_dilation(wt)).any()
        # Necrosis is walled off by enhancing tumour, barely touching edema.
        # Nearest-neighbour warping can break a one-voxel wall here and there.
        ncr_shell = ndimage.binary_dilation(ncr) & ~ncr
        assert np.mean(seg[ncr_shell] == ED) < 0.1
        assert np.mean(et[ncr_shell]) > 0.7
        # Edema wraps the core (the rest of the shell is CSF or brain surface).
        core_shell = ndimage.binary_dilation(tc) & ~tc
        assert np.mean(seg[core_shell] == ED) > 0.6
        assert (seg == ED).sum() > tc.sum() * 0.5


def _mean(image: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() > 10
    return float(image[mask].mean())


def test_contrasts_look_like_glioma_mri():
    for seed in _full_tumour_seeds():
        a = _arrays(_case(seed))
        far = ~ndimage.binary_dilation(a["seg"] > 0, iterations=3)
        csf, gm, wm = ((a["anatomy"] == t) & far for t in (CSF, GM, WM))
        ed, et, ncr = (a["seg"] == v for v in (ED, ET, NCR))
        t1, t1ce, t2, flair = (a[m] for m in ("t1", "t1ce", "t2", "flair"))

        assert _mean(flair, ed) > 1.3 * _mean(flair, wm)
        assert _mean(t1ce, et) / _mean(t1ce, wm) > 1.4 * _mean(t1, et) / _mean(t1, wm)
        assert _mean(t1ce, ncr) < _mean(t1ce, et)  # dark necrosis in a bright rim
        assert _mean(t1, wm) > _mean(t1, gm) > _mean(t1, csf)
        assert _mean(t1, ncr) < _mean(t1, wm)
        assert _mean(t2, csf) > _mean(t2, gm) > _mean(t2, wm)
        assert _mean(t2, ed) > _mean(t2, wm)
        assert _mean(flair, csf) < _mean(flair, wm) < _mean(flair, gm)


def test_same_seed_gives_identical_arrays():
    first = _arrays(_case(1))
    again = _arrays(phantom.generate_case(1, spacing=FAST, p_empty=0.0))
    for key in first:
        assert first[key].tobytes() == again[key].tobytes(), key


def test_different_seeds_give_different_cases():
    a, b = _arrays(_case(0)), _arrays(_case(1))
    assert not np.array_equal(a["seg"], b["seg"])
    assert not np.array_equal(a["flair"], b["flair"])


def test_p_empty_one_gives_tumour_free_cases():
    case = _case(0, p_empty=1.0)
    a = _arrays(case)
    assert not case.has_tumour and case.kind == "empty"
    assert not a["seg"].any()
    assert (a["t1"] > 0).sum() * FAST**3 > 1_000_000  # still a brain: > 1 litre


def test_empty_fraction_follows_p_empty():
    # Only the first random draw decides; checked without building the volumes.
    draws = [phantom._case_rng((0, i)).random() for i in range(400)]
    assert 0.05 < np.mean(np.array(draws) < 0.1) < 0.15


def test_p_empty_zero_always_has_tumour():
    assert all(_case(seed).has_tumour for seed in POOL)


@pytest.mark.parametrize("spacing", [FAST, 4.0])
def test_geometry_spacing_and_direction(spacing):
    case = _case(0, spacing=spacing)
    ref = case.seg
    for img in [*case.images.values(), case.anatomy]:
        assert img.GetSize() == ref.GetSize()
        assert img.GetOrigin() == ref.GetOrigin()
        assert img.GetDirection() == ref.GetDirection()
        assert img.GetSpacing() == pytest.approx((spacing,) * 3)
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-9)
    assert not np.allclose(direction, np.eye(3))  # template LPS direction kept


def test_written_files_share_geometry(tmp_path):
    path = phantom.write_case(_case(2), tmp_path, "Case_A")
    images = [sitk.ReadImage(str(f)) for f in sorted(path.glob("*.nii.gz"))]
    assert len(images) == 5
    for img in images[1:]:
        assert img.GetSize() == images[0].GetSize()
        np.testing.assert_allclose(img.GetSpacing(), images[0].GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(img.GetOrigin(), images[0].GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), images[0].GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(path / "Case_A_seg.nii.gz"))),
        _arrays(_case(2))["seg"],
    )


def test_write_case_refuses_existing_case_folder(tmp_path):
    phantom.write_case(_case(2), tmp_path, "Case_A")
    with pytest.raises(FileExistsError, match="Case_A"):
        phantom.write_case(_case(2), tmp_path, "Case_A")
    phantom.write_case(_case(3), tmp_path, "Case_A", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Case_A"]


def test_generate_dataset_refuses_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=str(tmp_path)):
        phantom.generate_dataset(tmp_path, 1, spacing=FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "kwargs",
    [{"spacing": 0.5}, {"spacing": 8.0}, {"p_empty": 1.5}, {"p_empty": -0.1}],
)
def test_bad_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        phantom.generate_case(0, **kwargs)


def test_missing_nilearn_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # makes `import nilearn` fail
    with pytest.raises(ImportError, match="pip install nilearn"):
        phantom._template_dir()


def test_cli_writes_cases_and_refuses_non_empty_output(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--num-cases", "1", "--seed", "4", "--spacing", "2"]
    assert phantom.main(args) == 0
    stdout = capsys.readouterr().out
    assert "Phantom_00000" in stdout and "wrote 1 cases" in stdout
    assert (out / "Phantom_00000" / "Phantom_00000_t1ce.nii.gz").is_file()

    assert phantom.main(args) != 0
    err = capsys.readouterr().err
    assert str(out) in err and len(err.strip().splitlines()) == 1

    assert phantom.main([*args, "--overwrite"]) == 0
    assert [p.name for p in out.iterdir()] == ["Phantom_00000"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--num-cases", "1"],  # no --out
        ["--out", "x", "--num-cases", "many"],
        ["--out", "x", "--num-cases", "0"],
        ["--out", "x", "--spacing", "0"],
        ["--out", "x", "--p-empty", "2"],
    ],
)
def test_cli_bad_arguments_one_line_error(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert phantom.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainseg-phantom: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_runs_as_module(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "brainseg_d2.data.phantom",
            "--out",
            str(tmp_path / "o"),
            "--num-cases",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "num_cases" in result.stderr or "n_cases" in result.stderr
