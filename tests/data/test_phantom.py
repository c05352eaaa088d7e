"""Tests for the built-in MRI phantom (brainseg_d2.data.phantom and its parts).

Rendered cases use 3-4 mm voxels so the whole file runs in seconds; they are
cached per (seed, spacing, p_empty) because generation is deterministic.
Rates and ranges are checked on plans (:func:`phantom.plan_case`), which
draw everything but the images in about a millisecond.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from brainseg_d2.cli import phantom as phantom_cli
from brainseg_d2.data import phantom, phantom_anatomy, phantom_template
from brainseg_d2.data.phantom_contrast import SEQUENCES, TISSUES, ContrastParams
from brainseg_d2.data.phantom_tumour import (
    HIGH_GRADE_PATTERNS,
    LOW_GRADE_PATTERNS,
    TumourParams,
)
from brainseg_d2.labels import CONVENTIONS, raw_to_tissue

pytest.importorskip("nilearn")

REPO = Path(__file__).resolve().parents[2]
FAST = 3.0  # mm
NCR, ED, ET = 1, 2, 4  # BraTS 2021 raw labels
CSF, GM, WM = 1, 2, 3  # PhantomCase.anatomy codes
POOL = range(6)  # seeds of the cached 3 mm cases most tests share
DEFAULTS = phantom.PhantomParams()


def _with(**tumour) -> phantom.PhantomParams:
    return dataclasses.replace(DEFAULTS, tumour=dataclasses.replace(DEFAULTS.tumour, **tumour))


@functools.cache
def _case(seed, spacing: float = FAST, p_empty: float = 0.0, params=None) -> phantom.PhantomCase:
    return phantom.generate_case(seed, spacing=spacing, p_empty=p_empty, params=params)


@functools.cache
def _plans(n: int = 400, p_empty: float = 0.1, params=None) -> list[phantom.CasePlan]:
    return [phantom.plan_case((0, i), p_empty=p_empty, params=params) for i in range(n)]


def _arrays(case: phantom.PhantomCase) -> dict[str, np.ndarray]:
    out = {m: sitk.GetArrayFromImage(img) for m, img in case.images.items()}
    out["seg"] = sitk.GetArrayFromImage(case.seg)
    out["anatomy"] = sitk.GetArrayFromImage(case.anatomy)
    return out


def _ml(mask: np.ndarray, spacing: float) -> float:
    return float(np.count_nonzero(mask)) * spacing**3 / 1000.0


def _binomial_ok(hits: int, n: int, p: float) -> bool:
    """``hits`` of ``n`` is within 4 standard deviations of ``n * p``."""
    return abs(hits - n * p) <= 4 * np.sqrt(n * p * (1 - p)) + 1


# --- layout, labels, geometry -------------------------------------------------


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
        assert (a["anatomy"][tumour] > 0).all()
        # Skull-stripped: exactly zero outside the brain, positive inside.
        brain = a["anatomy"] > 0
        for m in phantom.MODALITIES:
            assert (a[m][~brain] == 0).all() and (a[m][brain] > 0).all(), m


@pytest.mark.parametrize("spacing", [FAST, 4.0])
def test_geometry_spacing_direction_and_field_of_view(spacing):
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
    # Padded to BraTS's 240 x 240 x 155 mm (never cropped).
    extent = np.array(ref.GetSize()) * spacing
    assert (extent >= np.array([240, 240, 155]) - spacing).all()


def test_field_of_view_none_keeps_the_brain_box():
    params = dataclasses.replace(
        DEFAULTS, anatomy=dataclasses.replace(DEFAULTS.anatomy, field_of_view_mm=None)
    )
    small = _case(0, params=params)
    big = _case(0)
    assert np.prod(small.seg.GetSize()) < np.prod(big.seg.GetSize())
    # Same content, only background added around it.
    np.testing.assert_array_equal(
        np.sort(_arrays(small)["t2"][_arrays(small)["anatomy"] > 0]),
        np.sort(_arrays(big)["t2"][_arrays(big)["anatomy"] > 0]),
    )


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


def test_every_generated_case_converts(tmp_path):
    from brainseg_d2.data.convert import ConvertOptions, convert_dataset
    from brainseg_d2.data.sources import find_brats_cases

    phantom.generate_dataset(tmp_path / "cases", 6, seed=3, spacing=4.0, p_empty=0.2)
    info = convert_dataset(
        find_brats_cases(tmp_path / "cases"),
        tmp_path / "ds",
        ConvertOptions(split=(0.5, 0.25, 0.25), seed=0),
        progress=False,
    )
    assert sum(c["volumes"] for c in info["counts"].values()) == 6
    assert not info["skipped"]


# --- determinism ----------------------------------------------------------------


def test_same_seed_gives_identical_arrays():
    first = _arrays(_case(1))
    again = _arrays(phantom.generate_case(1, spacing=FAST, p_empty=0.0))
    for key in first:
        assert first[key].tobytes() == again[key].tobytes(), key


def test_worker_processes_write_the_same_files_in_order(tmp_path):
    one = phantom.generate_dataset(tmp_path / "one", 3, seed=5, spacing=4.0, p_empty=0.3)
    seen = []
    two = phantom.generate_dataset(
        tmp_path / "two", 3, seed=5, spacing=4.0, p_empty=0.3, workers=2,
        on_case=lambda path, case: seen.append((path.name, case.kind)),
    )  # fmt: skip
    assert [p.name for p in two] == [p.name for p in one] == [name for name, _ in seen]
    assert [kind for _, kind in seen] == [phantom.generate_case((5, i), spacing=4.0,
                                          p_empty=0.3).kind for i in range(3)]  # fmt: skip
    files = sorted(f.relative_to(tmp_path / "one") for f in (tmp_path / "one").rglob("*.nii.gz"))
    assert len(files) == 3 * 5
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_count_raises_value_error(workers, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        phantom.generate_dataset(tmp_path, 1, spacing=FAST, workers=workers)
    assert not any(tmp_path.iterdir())


def test_different_seeds_give_different_cases():
    a, b = _arrays(_case(0)), _arrays(_case(1))
    assert not np.array_equal(a["seg"], b["seg"])
    for m in phantom.MODALITIES:
        assert not np.array_equal(a[m], b[m])


def test_plan_is_the_same_at_every_spacing():
    plan = phantom.plan_case(4, p_empty=0.0)
    assert _case(4).plan == plan
    assert _case(4, spacing=4.0).plan == plan


def test_rates_move_only_their_own_decisions():
    # Turning mass effect off leaves the rest of the plan as it was.
    with_mass, without = (
        _plans(60, 0.0, _with(p_mass_effect=1.0)),
        _plans(60, 0.0, _with(p_mass_effect=0.0)),
    )
    for a, b in zip(with_mass, without):
        assert a.tumour.kind == b.tumour.kind and a.appearance == b.appearance
        assert [x.volume_ml for x in a.tumour.lesions] == [x.volume_ml for x in b.tumour.lesions]
        assert all(x.mass_effect > 0 for x in a.tumour.lesions)
        assert all(x.mass_effect == 0 for x in b.tumour.lesions)


# --- tumour-free cases ------------------------------------------------------------


def test_p_empty_one_gives_tumour_free_cases():
    case = _case(0, p_empty=1.0)
    a = _arrays(case)
    assert not case.has_tumour and case.kind == "empty"
    assert not a["seg"].any()
    assert (a["t1"] > 0).sum() * FAST**3 > 1_000_000  # still a brain: > 1 litre


def test_empty_fraction_follows_p_empty():
    plans = _plans(400, 0.1)
    empty = sum(p.kind == "empty" for p in plans)
    assert _binomial_ok(empty, 400, 0.1)


def test_p_empty_zero_always_has_tumour():
    assert all(_case(seed).has_tumour for seed in POOL)


# --- morphology -----------------------------------------------------------------


@pytest.mark.parametrize("p_multifocal, p_mass_effect", [(0.15, 0.7), (0.5, 0.3)])
def test_multifocal_and_mass_effect_occur_at_their_rates(p_multifocal, p_mass_effect):
    params = _with(p_multifocal=p_multifocal, p_mass_effect=p_mass_effect)
    plans = [p.tumour for p in _plans(400, 0.0, params)]
    assert _binomial_ok(sum(p.multifocal for p in plans), 400, p_multifocal)
    assert _binomial_ok(sum(p.mass_effect for p in plans), 400, p_mass_effect)
    assert _binomial_ok(sum(p.kind == "low_grade" for p in plans), 400, params.tumour.p_low_grade)
    lo, hi = params.tumour.satellites
    assert all(lo + 1 <= len(p.lesions) <= hi + 1 for p in plans if p.multifocal)


def test_planned_sizes_span_the_configured_range():
    volumes = np.array([p.tumour.volume_ml for p in _plans(400, 0.0)])
    lo, hi = DEFAULTS.tumour.volume_ml
    assert volumes.min() >= lo and volumes.max() <= hi
    assert volumes.min() < 3.0 and volumes.max() > 150.0
    assert 0.05 < np.mean(volumes < 5.0) and 0.15 < np.mean(volumes > 100.0)


def test_edema_draws_span_their_configured_ranges():
    lesions = [lesion for p in _plans(400, 0.0) for lesion in p.tumour.lesions]
    for name in ("edema_wm_preference", "edema_irregularity", "edema_border_mm", "edema_fade"):
        lo, hi = getattr(DEFAULTS.tumour, name)
        values = np.array([getattr(lesion, name) for lesion in lesions])
        assert lo <= values.min() and values.max() <= hi, name
        assert values.max() - values.min() > 0.8 * (hi - lo), name


@pytest.mark.parametrize("volume_ml", [4.0, 120.0])
def test_rendered_volume_matches_the_plan(volume_ml):
    params = _with(volume_ml=(volume_ml, volume_ml), p_multifocal=0.0)
    for seed in range(3):
        case = _case(seed, params=params)
        wt = _ml(_arrays(case)["seg"] > 0, FAST)
        # Edema confined to brain (not CSF) and islands dropped cost a little.
        assert 0.6 * volume_ml <= wt <= 1.25 * volume_ml, (seed, wt)


def test_locations_and_patterns_cover_their_choices():
    plans = [p.tumour for p in _plans(400, 0.0)]
    lesions = [lesion for p in plans for lesion in p.lesions]
    assert {x.location for x in lesions} == {"lobar", "periventricular", "cortical", "satellite"}
    high = {x.pattern for p in plans if p.kind == "high_grade" for x in p.lesions}
    low = {x.pattern for p in plans if p.kind == "low_grade" for x in p.lesions}
    assert high == set(HIGH_GRADE_PATTERNS) and low == set(LOW_GRADE_PATTERNS)


def test_sites_lie_where_their_names_say():
    tpl = phantom_template.load_template(phantom_template.SITE_SPACING)
    sites = phantom_template.sites()
    for name, points in sites.items():
        idx = np.round(phantom_template.grid_index(tpl.reference, points)).astype(int).T
        depth, vent = tpl.depth[tuple(idx)], tpl.ventricle_distance[tuple(idx)]
        if name == "periventricular":
            assert (vent < 8.5).all() and (vent > 0).all()
        elif name == "cortical":
            assert (depth < 14.5).all()
        else:
            assert (depth > 14.5).all() and (vent > 7.5).all()


@pytest.mark.parametrize(
    "pattern, expect",
    [
        ("thick_rim", {NCR, ET}),  # necrotic centre walled by enhancing tumour
        ("nodular", {NCR, ET}),  # enhancing nodules in non-enhancing tumour
        ("solid", {ET}),
    ],
)
def test_enhancement_patterns(pattern, expect):
    params = _with(patterns=((pattern, 1.0),), p_low_grade=0.0, p_multifocal=0.0)
    params = dataclasses.replace(
        params, tumour=dataclasses.replace(params.tumour, volume_ml=(60.0, 60.0))
    )
    seg = _arrays(_case(0, params=params))["seg"]
    core = set(np.unique(seg[(seg == NCR) | (seg == ET)]).tolist())
    assert core == expect
    if pattern == "thick_rim":
        ncr, et = seg == NCR, seg == ET
        shell = ndimage.binary_dilation(ncr) & ~ncr
        assert np.mean(et[shell]) > 0.7  # necrosis barely touches edema
        assert ncr.sum() > 0.2 * (ncr | et).sum()


def test_low_grade_tumours_do_not_enhance():
    params = _with(p_low_grade=1.0, p_low_grade_enhancement=0.0)
    for seed in range(3):
        seg = _arrays(_case(seed, params=params))["seg"]
        assert (seg == NCR).any() and not (seg == ET).any()


def test_multifocal_cases_have_separate_lesions():
    params = _with(p_multifocal=1.0, satellites=(1, 1), satellite_fraction=(0.4, 0.5))
    parts = []
    for seed in range(4):
        seg = _arrays(_case(seed, params=params))["seg"]
        _, n = ndimage.label((seg == NCR) | (seg == ET))
        parts.append(n)
    assert sum(n >= 2 for n in parts) >= 3  # satellites may touch the main lesion


def _thin_share(mask: np.ndarray) -> float:
    """Share of ``mask`` an opening with a one-voxel (3 mm) ball removes."""
    opened = ndimage.binary_opening(mask, ndimage.generate_binary_structure(3, 1))
    return 1.0 - opened.sum() / mask.sum()


def test_edema_follows_white_matter_at_its_scale():
    # Following the white matter voxel by voxel (the default) threads edema into
    # thin strands; at a 3 mm scale the whole tumour is more compact, case by
    # case, and the draws are the same.
    fine = _with(volume_ml=(120.0, 120.0), p_multifocal=0.0)
    broad = _with(volume_ml=(120.0, 120.0), p_multifocal=0.0, edema_wm_scale_mm=3.0)
    assert fine.tumour.edema_wm_scale_mm == 0.0
    shares = []
    for seed in range(4):
        a, b = _case(seed, params=fine), _case(seed, params=broad)
        unscaled = [dataclasses.replace(x, edema_wm_scale_mm=0.0) for x in b.plan.tumour.lesions]
        assert unscaled == list(a.plan.tumour.lesions)
        shares.append((_thin_share(_arrays(a)["seg"] > 0), _thin_share(_arrays(b)["seg"] > 0)))
    assert all(s_broad < s_fine for s_fine, s_broad in shares), shares
    assert np.mean([b for _, b in shares]) < 0.8 * np.mean([f for f, _ in shares]), shares


def _outline_share(case: phantom.PhantomCase) -> float:
    """FLAIR in the whole tumour's outermost voxels, as a share of the edema's contrast."""
    arrays = _arrays(case)
    flair, seg, brain = arrays["flair"], arrays["seg"], arrays["anatomy"] > 0
    wt = seg > 0
    inside = ndimage.distance_transform_edt(wt)
    outside = ndimage.distance_transform_edt(~wt)
    healthy = np.median(flair[brain & (outside > 4)])
    deep = np.median(flair[(seg == ED) & (inside > 2)])
    return float((np.median(flair[inside == 1]) - healthy) / (deep - healthy))


def test_edema_fade_puts_the_outline_on_the_faint_edge():
    # The same tumours and labels; a larger fade exponent leaves the outline's
    # voxels with less of the edema's contrast, case by case.
    sharp = _with(volume_ml=(120.0, 120.0), p_multifocal=0.0, edema_fade=(1.0, 1.0))
    faint = _with(volume_ml=(120.0, 120.0), p_multifocal=0.0, edema_fade=(3.0, 3.0))
    shares = []
    for seed in range(4):
        a, b = _case(seed, params=sharp), _case(seed, params=faint)
        refaded = [dataclasses.replace(x, edema_fade=1.0) for x in b.plan.tumour.lesions]
        assert refaded == list(a.plan.tumour.lesions)
        np.testing.assert_array_equal(_arrays(a)["seg"], _arrays(b)["seg"])
        shares.append((_outline_share(a), _outline_share(b)))
    assert all(s_faint < s_sharp for s_sharp, s_faint in shares), shares
    assert np.mean([s - f for s, f in shares]) > 0.08, shares


def test_mass_effect_displaces_tissue():
    # Pushing tissue aside rather than replacing it: the brain grows by the
    # displaced share of the core, the tumour keeps its planned size.
    on, off = _with(p_mass_effect=1.0, p_multifocal=0.0), _with(p_mass_effect=0.0, p_multifocal=0.0)
    for seed in range(3):
        a, b = _case(seed, params=on), _case(seed, params=off)
        lesion = a.plan.tumour.lesions[0]
        grown = _ml(_arrays(a)["anatomy"] > 0, FAST) - _ml(_arrays(b)["anatomy"] > 0, FAST)
        expected = lesion.mass_effect * lesion.core_ml
        assert 0.5 * expected < grown < 1.5 * expected + 2.0, (seed, grown, expected)
        core_a = _ml(np.isin(_arrays(a)["seg"], [NCR, ET]), FAST)
        assert 0.6 * lesion.core_ml < core_a < 1.4 * lesion.core_ml


def test_mass_effect_map_keeps_volume_outside_and_pushes_away():
    rng = np.random.default_rng(0)
    centre, radius, m = np.zeros(3), 10.0, 0.5
    far = rng.normal(size=(500, 3))
    far *= rng.uniform(12.0, 40.0, (500, 1)) / np.linalg.norm(far, axis=1, keepdims=True)
    pulled = phantom_anatomy.mass_effect(far, centre, radius, m)
    r, r0 = np.linalg.norm(far, axis=1), np.linalg.norm(pulled, axis=1)
    assert (r0 < r).all()  # template content appears further out: pushed away
    np.testing.assert_allclose(r**3 - r0**3, m * radius**3, rtol=1e-9)  # shells keep volume


# --- anatomy --------------------------------------------------------------------


def test_head_size_follows_the_draw():
    tpl = phantom_template.load_template(FAST)
    template_ml = _ml(tpl.anatomy > 0, FAST)
    lo, hi = DEFAULTS.anatomy.brain_scale
    scales = [p.anatomy.brain_scale for p in _plans(200, 0.1)]
    assert lo <= min(scales) and max(scales) <= hi and max(scales) - min(scales) > 0.1
    for seed in range(3):
        case = _case(seed, p_empty=1.0)
        brain_ml = _ml(_arrays(case)["anatomy"] > 0, FAST)
        expected = template_ml / case.plan.anatomy.volume_scale
        assert abs(brain_ml / expected - 1.0) < 0.05, (seed, brain_ml, expected)


def test_ventricle_dilation_adds_csf():
    def csf_ml(mm: float) -> float:
        params = dataclasses.replace(
            DEFAULTS,
            anatomy=dataclasses.replace(DEFAULTS.anatomy, ventricle_dilation_mm=(mm, mm)),
        )
        return _ml(_arrays(_case(0, p_empty=1.0, params=params))["anatomy"] == CSF, FAST)

    assert csf_ml(4.0) > csf_ml(0.0) + 10.0 and csf_ml(-1.0) <= csf_ml(0.0)


# --- appearance -----------------------------------------------------------------


def test_appearance_draws_lie_in_the_configured_ranges():
    c: ContrastParams = DEFAULTS.contrast
    for plan in _plans(200, 0.1):
        look = plan.appearance
        assert set(look) == set(SEQUENCES)
        for seq, a in look.items():
            assert set(a.means) == set(TISSUES) and a.means["wm"] == 1.0
            for tissue, value in a.means.items():
                if seq == "t1ce" and tissue in ("et", "nec", "net"):
                    continue
                if tissue in c.core_vs_edema.get(seq, {}):
                    # the core is drawn relative to the case's edema
                    lo, hi = c.core_vs_edema[seq][tissue]
                    assert lo <= value / a.means["ed"] <= hi, (seq, tissue, value)
                elif tissue != "wm":
                    lo, hi = c.means[seq][tissue]
                    if tissue in c.lesion_contrast.get(seq, {}):
                        hi = max(1.0, a.means["gm"]) * c.lesion_contrast[seq][tissue][1]
                    assert lo <= value <= max(hi, c.means[seq][tissue][1]), (seq, tissue, value)
            for tissue, (lo, _) in c.lesion_contrast.get(seq, {}).items():
                # the lesion is visible against the brighter normal tissue
                normal = max(1.0, a.means["gm"])
                assert a.means[tissue] >= lo * normal, (seq, tissue, a.means)
            assert c.gamma[0] <= a.gamma <= c.gamma[1]
            assert c.noise_sd[0] <= a.noise_sd <= c.noise_sd[1]
            assert c.bias_sd[0] <= a.bias_sd <= c.bias_sd[1]
            assert c.gain[0] <= a.gain <= c.gain[1]
            assert a.slice_axis is None or c.slice_mm[0] <= a.slice_mm <= c.slice_mm[1]
        t1, t1ce = look["t1"].means, look["t1ce"].means
        assert c.enhancement[0] <= t1ce["et"] / t1["et"]
        for tissue, r in (("nec", c.t1ce_nec), ("net", c.t1ce_net)):
            # no contrast uptake: T1ce follows the tissue's own T1 signal
            assert r[0] <= t1ce[tissue] / t1[tissue] <= r[1]
            assert t1ce[tissue] < t1ce["et"]
        assert t1ce["et"] > t1["et"]  # enhancement
        assert t1ce["nec"] < t1ce["et"]  # dark necrosis in a bright rim
        for tissue in ("nec", "net"):  # the core against its edema
            assert look["t2"].means[tissue] > look["t2"].means["ed"]
            assert t1[tissue] <= t1["ed"]


def test_thick_slices_occur_at_their_rate_per_sequence():
    plans = _plans(300, 0.1)
    for seq in SEQUENCES:
        looks = [p.appearance[seq] for p in plans]
        thick = sum(a.slice_axis is not None for a in looks)
        assert _binomial_ok(thick, len(looks), DEFAULTS.contrast.thick_slice_probability(seq))
        assert {a.slice_axis for a in looks} == {None, 0, 1, 2}
    # T1ce is acquired in 3D more often than the other sequences (BraTS protocols)
    c = DEFAULTS.contrast
    assert c.thick_slice_probability("t1ce") < c.thick_slice_probability("t2")


def test_thick_slice_rate_per_sequence_can_be_set():
    params = dataclasses.replace(
        DEFAULTS,
        contrast=ContrastParams(p_thick_slices=0.0, p_thick_slices_by_sequence={"flair": 1.0}),
    )
    for plan in _plans(20, 0.1, params):
        assert plan.appearance["flair"].slice_axis is not None
        assert all(plan.appearance[s].slice_axis is None for s in ("t1", "t1ce", "t2"))


def _mean(image: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() > 5
    return float(image[mask].mean())


def test_rendered_contrasts_follow_the_draws():
    ratios, cores = [], 0
    for seed in POOL:
        a = _arrays(_case(seed))
        seg, anatomy = a["seg"], a["anatomy"]
        far = ~ndimage.binary_dilation(seg > 0, iterations=2)
        inner = ndimage.binary_erosion(anatomy > 0, iterations=2)
        wm, et, ed = (anatomy == WM) & far & inner, seg == ET, seg == ED
        gm = (anatomy == GM) & far & inner
        # Edema hyperintense on FLAIR and T2 against white and grey matter alike,
        # inside the tumour's outermost voxels (the outline lies on the faint edge).
        ed_inner = ed & ndimage.binary_erosion(seg > 0)
        for seq in ("flair", "t2"):
            bright = _mean(a[seq], ed_inner)
            assert bright > max(_mean(a[seq], wm), _mean(a[seq], gm)), (seed, seq)
        if et.sum() > 5:  # enhancing tumour brighter than any normal tissue on T1ce
            assert _mean(a["t1ce"], et) > max(_mean(a["t1ce"], wm), _mean(a["t1ce"], gm))
        core = seg == NCR
        if core.sum() > 5 and ed.sum() > 5:  # the necrotic core brighter than edema on T2
            cores += 1
            assert _mean(a["t2"], core) > _mean(a["t2"], ed), seed
        if et.sum() > 5:
            ratios.append(
                (_mean(a["t1ce"], et) / _mean(a["t1ce"], wm))
                / (_mean(a["t1"], et) / _mean(a["t1"], wm))
            )
    # Enhancing tumour is brighter, relative to white matter, on T1ce than on T1.
    assert len(ratios) >= 2 and min(ratios) > 1.0 and np.mean(ratios) > 1.2
    assert cores >= 2


# --- parameters, errors, CLI -----------------------------------------------------


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


@pytest.mark.parametrize(
    "make",
    [
        lambda: TumourParams(p_multifocal=1.5),
        lambda: TumourParams(volume_ml=(50.0, 10.0)),
        lambda: TumourParams(mass_effect=(0.2, 1.0)),
        lambda: TumourParams(patterns=(("ring", 1.0),)),
        lambda: TumourParams(p_periventricular=0.7, p_cortical=0.6),
        lambda: TumourParams(edema_wm_scale_mm=-1.0),
        lambda: TumourParams(edema_fade=(0.0, 2.0)),
        lambda: ContrastParams(gamma=(0.0, 1.0)),
        lambda: ContrastParams(means={"t1": {}}),
        lambda: ContrastParams(core_vs_edema={"t1ce": {"nec": (0.9, 1.1)}}),
        lambda: ContrastParams(core_vs_edema={"t2": {"ed": (0.9, 1.1)}}),
        lambda: ContrastParams(core_vs_edema={"t2": {"nec": (1.2, 1.1)}}),
        lambda: ContrastParams(core_vs_edema={}),  # then means must give nec and net
        lambda: ContrastParams(
            means={**ContrastParams().means, "t2": {**ContrastParams().means["t2"], "nec": (1, 2)}}
        ),
        lambda: ContrastParams(p_thick_slices_by_sequence={"t1c": 0.2}),
        lambda: ContrastParams(p_thick_slices_by_sequence={"t1ce": 1.5}),
        lambda: phantom_anatomy.AnatomyParams(brain_scale=(0.0, 1.0)),
    ],
)
def test_bad_params_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("seed", [-1, 1.5, "3", [], True])
def test_bad_seed_raises_value_error(seed):
    with pytest.raises(ValueError, match="seed"):
        phantom.plan_case(seed)


def test_missing_nilearn_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # makes `import nilearn` fail
    with pytest.raises(ImportError, match="pip install nilearn"):
        phantom_template.template_dir()


def test_cli_writes_cases_and_refuses_non_empty_output(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--output", str(out), "--num-cases", "1", "--seed", "4", "--spacing", "3"]
    assert phantom_cli.main(args) == 0
    stdout = capsys.readouterr().out
    assert "Phantom_00000" in stdout and "wrote 1 cases" in stdout
    assert (out / "Phantom_00000" / "Phantom_00000_t1ce.nii.gz").is_file()

    assert phantom_cli.main(args) != 0
    err = capsys.readouterr().err
    assert str(out) in err and len(err.strip().splitlines()) == 1

    assert phantom_cli.main([*args, "--overwrite"]) == 0
    assert [p.name for p in out.iterdir()] == ["Phantom_00000"]


def test_cli_p_low_grade_writes_low_grade_tumours_only(tmp_path, capsys):
    out = tmp_path / "low"
    args = ["--output", str(out), "--num-cases", "3", "--spacing", "4", "--p-empty", "0"]
    assert phantom_cli.main([*args, "--p-low-grade", "1"]) == 0
    kinds = [line.split()[1] for line in capsys.readouterr().out.splitlines()[:3]]
    assert kinds == ["low_grade"] * 3
    # The same seeds at the default share draw a high-grade tumour among them.
    assert phantom_cli.main(["--output", str(tmp_path / "any"), *args[2:]]) == 0
    kinds = [line.split()[1] for line in capsys.readouterr().out.splitlines()[:3]]
    assert "high_grade" in kinds


def test_cli_workers_report_every_case_in_order(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--output", str(out), "--num-cases", "3", "--spacing", "4", "--workers", "2"]
    assert phantom_cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:3]] == [
        str(out / f"Phantom_{i:05d}") for i in range(3)
    ]
    assert all((out / f"Phantom_{i:05d}" / phantom_cli.CLI_MARKER).is_file() for i in range(3))


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--num-cases", "1"], "--output"),  # no --output
        (["--output", "x", "--num-cases", "many"], "--num-cases"),
        (["--output", "x", "--num-cases", "0"], "--num-cases must be >= 1, got 0"),
        (["--output", "x", "--spacing", "0"], "--spacing must be between"),
        (["--output", "x", "--p-empty", "2"], "--p-empty must be between 0 and 1, got 2.0"),
        (["--output", "x", "--p-low-grade", "1.5"], "--p-low-grade must be between 0 and 1"),
        (["--output", "x", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["--output", "x", "--seed", "-1"], "--seed must be >= 0, got -1"),
    ],
)
def test_cli_bad_arguments_one_line_error(argv, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert phantom_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainseg-phantom: error:") and len(err.splitlines()) == 1
    assert named in err  # the option, as the user typed it
    assert not (tmp_path / "x").exists()


def test_cli_interrupted_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(phantom_cli, "generate_dataset", stop)
    assert phantom_cli.main(["--output", str(tmp_path / "o"), "--num-cases", "1"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainseg-phantom: interrupted;") and len(err.splitlines()) == 1


def test_cases_workers_finish_after_an_interrupt_are_marked_and_overwritable(
    tmp_path, capsys, monkeypatch
):
    """Ctrl-C stops the parent while workers finish their cases: each finished folder holds
    its marker (written before the folder appears), so --overwrite replaces them all."""
    out = tmp_path / "o"
    args = ["--output", str(out), "--num-cases", "4", "--spacing", "4", "--workers", "2"]
    printed = []

    def interrupted_print(*a, **k):
        printed.append(a)
        if str(a[0]).startswith(str(out)):  # the first finished case's line
            raise KeyboardInterrupt

    monkeypatch.setattr(phantom_cli, "print", interrupted_print, raising=False)
    assert phantom_cli.main(args) == 130
    monkeypatch.undo()
    finished = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    assert finished and all((p / phantom_cli.CLI_MARKER).is_file() for p in finished)
    assert phantom_cli.main([*args, "--overwrite"]) == 0
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == 4


def test_runs_as_module(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "brainseg_d2.cli.phantom",
            "--output",
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
    assert "--num-cases must be >= 1, got 0" in result.stderr


def test_cli_old_out_spelling_still_works(tmp_path, capsys):
    out = tmp_path / "old"
    assert phantom_cli.main(["--out", str(out), "--num-cases", "1", "--spacing", "4"]) == 0
    err = capsys.readouterr().err
    assert "brainseg-phantom: warning: --out is deprecated, use --output" in err
    assert (out / "Phantom_00000").is_dir()
