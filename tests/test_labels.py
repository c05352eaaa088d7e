"""Label conventions and targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainseg_d2.labels import (
    CONVENTIONS,
    TARGETS,
    TISSUE_ED,
    TISSUE_ET,
    TISSUE_NCR,
    TISSUE_RC,
    brats_task,
    detect_convention,
    load_convention,
    raw_to_tissue,
    relabel,
    resolve_convention,
    tissue_to_raw,
)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_masks_from_tissue_matches_the_category_codes(name):
    target = TARGETS[name]
    tissue = np.random.default_rng(0).integers(0, 4, size=(3, 5, 6), dtype=np.uint8)
    masks = target.masks_from_tissue(tissue)
    assert masks.shape == (len(target.categories), 3, 5, 6) and masks.dtype == bool
    for mask, codes in zip(masks, target.categories.values()):
        np.testing.assert_array_equal(mask, np.isin(tissue, codes))
    assert target.masks_from_tissue(np.zeros((0, 4), np.int64)).shape == (len(masks), 0, 4)


def test_masks_from_tissue_rejects_unknown_codes():
    with pytest.raises(ValueError, match="tissue codes must be 0-4, got values 0..5"):
        TARGETS["regions"].masks_from_tissue(np.array([[0, 5]]))


# ---------------------------------------------------------------------------
# conventions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_convention_round_trip(name):
    conv = CONVENTIONS[name]
    raw = np.array(conv.values * 3, dtype=np.uint8).reshape(3, -1)
    tissue = raw_to_tissue(raw, conv)
    back = tissue_to_raw(tissue, conv)
    # One raw value per tissue code round-trips exactly; BraTS 2024 PED's two core
    # parts share NCR and come back as the smaller (non-enhancing, 2), as BraTS
    # 2013-2015's necrosis (1) and non-enhancing tumour (3) come back as 1.
    expected = np.vectorize(lambda v: conv.tissue_to_raw[conv.raw_to_tissue[int(v)]])(raw)
    np.testing.assert_array_equal(back, expected)
    if name not in ("brats2024-ped", "brats2015"):
        np.testing.assert_array_equal(back, raw)


def test_decathlon_and_brats_labels_are_rewritten_into_each_other_by_class_name():
    msd = np.array([0, 1, 2, 3])  # edema, non-enhancing (necrotic) core, enhancing
    brats = relabel(msd, CONVENTIONS["msd"], CONVENTIONS["brats2021"])
    np.testing.assert_array_equal(brats, [0, 2, 1, 4])
    np.testing.assert_array_equal(relabel(brats, CONVENTIONS["brats2021"], CONVENTIONS["msd"]),
                                  msd)  # fmt: skip
    np.testing.assert_array_equal(
        relabel(np.array([0, 1, 2, 4]), CONVENTIONS["brats2015"], CONVENTIONS["msd"]), [0, 2, 1, 3]
    )


def test_brats2024_resection_cavity_is_its_own_class_not_a_tumour_region():
    conv = CONVENTIONS["brats2024"]
    assert conv.raw_to_tissue[4] == TISSUE_RC
    assert conv.classes[4] == "resection_cavity"
    assert conv.regions["RC"] == ("resection_cavity",)
    assert "resection_cavity" not in conv.regions["WT"]
    # In the canonical map RC belongs to no category of any target.
    tissue = np.array([[0, 1, 2, 3, 4]])
    for target in TARGETS.values():
        assert not target.masks_from_tissue(tissue)[..., 4].any()
    # 2021-style labels: 4 means ET there, RC here.
    assert raw_to_tissue(np.array([4]), CONVENTIONS["brats2021"])[0] == TISSUE_ET
    assert raw_to_tissue(np.array([4]), conv)[0] == TISSUE_RC


def test_evaluation_names_score_each_mask_once():
    names = CONVENTIONS["brats2024"].evaluation_names()
    assert names == [
        ("region", "WT", (1, 2, 3)),
        ("region", "TC", (1, 3)),
        ("region", "ET", (3,)),
        ("region", "RC", (4,)),
        ("class", "necrotic", (1,)),
        ("class", "edema", (2,)),
    ]
    ped = dict((n, v) for _, n, v in CONVENTIONS["brats2024-ped"].evaluation_names())
    assert ped == {"WT": (1, 2, 3, 4), "TC": (1, 2, 3), "ET": (1,), "non_enhancing": (2,),
                   "cystic": (3,), "edema": (4,)}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "task", "convention"),
    [
        ("BraTS-GLI-00000-000-seg.nii.gz", "GLI", "brats2024"),
        ("BraTS-MET-00001-000.nii.gz", "MET", "brats2023"),
        ("BraTS-MEN-00002-001-seg.nii.gz", "MEN", "brats2023"),
        ("BraTS-PED-00003-000-seg.nii.gz", "PED", "brats2023"),
        ("/data/BraTS-SSA-00004-000/BraTS-SSA-00004-000-seg.nii.gz", "SSA", "brats2023"),
        ("Brats18_2013_2_1_seg.nii.gz", "2021", "brats2021"),
        ("BraTS19_CBICA_AAB_1_seg.nii.gz", "2021", "brats2021"),
        ("BraTS20_Training_001_seg.nii.gz", "2021", "brats2021"),
        ("BraTS2021_00000_seg.nii.gz", "2021", "brats2021"),
        ("case_001.nii.gz", None, None),
        ("BraTS-XYZ-00000-000.nii.gz", None, None),
    ],
)
def test_detect_convention_from_names(name, task, convention):
    assert brats_task(name) == task
    assert detect_convention(name) == convention


def test_user_convention_from_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "lesions.yaml"
    yaml_file.write_text(
        "labels: {0: background, 1: lesion, 2: edema}\n"
        "regions: {all: [lesion, edema], core: lesion}\n"
        "tissue: {lesion: NCR}\n"
    )
    conv = load_convention(yaml_file)
    assert conv.name == "lesions"
    assert conv.classes == {1: "lesion", 2: "edema"}
    assert conv.regions == {"all": ("lesion", "edema"), "core": ("lesion",)}
    assert conv.raw_to_tissue == {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED}  # "edema" by its name
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"name": "mine", "labels": {"1": "spot"}}))
    conv = resolve_convention(str(json_file))
    assert conv.name == "mine" and conv.regions == {}
    assert conv.evaluation_names() == [("class", "spot", (1,))]
    with pytest.raises(ValueError, match=r"classes \['spot'\] .* have no tissue code"):
        raw_to_tissue(np.array([0, 1]), conv)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("regions: {a: [x]}\n", "needs a 'labels' mapping"),
        ("labels: {one: lesion}\n", "label value 'one' is not an integer"),
        ("labels: {1: a, 2: a}\n", "class names repeat"),
        ("labels: {1: a}\nregions: {r: [b]}\n", "region 'r' must be a non-empty list"),
        ("labels: {1: a}\ntissue: {a: XYZ}\n", "tissue 'XYZ' is not one of"),
        ("labels: [1, 2\n", "cannot parse"),
        # Each of these loaded silently before and trained or scored wrong labels.
        ("labels: {10: a, 20: b, 20: c}\n", "key 20 is given twice"),
        ("labels: {10: a, '10': b}\n", "label value 10 is given twice"),
        ("labels: {10: a, 20.9: b}\n", "label value 20.9 is not an integer"),
        ("labels: {1: a, true: b}\n", "keys 1 and True are one key"),
        ("labels: {0: necrotic, 20: edema}\n", "value 0 is background, not 'necrotic'"),
        ("labels: {0: a, 2: b}\nregions: {r: [a, b]}\n", "value 0 is background, not 'a'"),
        ("labels: {1: a}\nregoins: {r: [a]}\n", r"unknown keys \['regoins'\]"),
        ("labels: {10: null}\n", r"label 10 needs a class name \(a text\), got None"),
        ("labels: {10: [a, b]}\n", "label 10 needs a class name"),
        ("labels: {}\n", "'labels' names no class"),
        ("labels: {1000000000000: a}\n", "label value 1000000000000 is outside 0-65535"),
        ("name: brats2021\nlabels: {10: a}\n", "name 'brats2021' is a built-in convention's"),
    ],
    ids=["no_labels", "bad_value", "repeated_class", "unknown_region_class", "bad_tissue", "yaml",
         "value_twice", "value_twice_as_text", "fraction", "boolean", "zero_as_tissue",
         "zero_in_region", "unknown_key", "null_class", "list_class", "empty", "huge",
         "built_in_name"],
)
def test_user_convention_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_convention(path)
    assert str(path) in str(info.value)


def test_a_json_convention_with_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "twice.json"
    path.write_text('{"labels": {"1": "a", "2": "b", "2": "c"}}')
    with pytest.raises(ValueError, match=f"{path}: key '2' is given twice"):
        load_convention(path)


def test_resolve_convention_rejects_unknown_names():
    assert resolve_convention("brats2021") is CONVENTIONS["brats2021"]
    with pytest.raises(ValueError, match="unknown label convention 'brats2030'"):
        resolve_convention("brats2030")


def test_convention_definitions_round_trip_and_register_by_name(tmp_path):
    from brainseg_d2.labels import (
        convention_from_dict,
        convention_to_dict,
        get_convention,
        register_convention,
        register_dataset_conventions,
    )

    for conv in CONVENTIONS.values():
        again = convention_from_dict(convention_to_dict(conv), name=conv.name)
        assert (again.raw_to_tissue, again.classes, again.regions) == (
            conv.raw_to_tissue, conv.classes, conv.regions
        )  # fmt: skip
    own = convention_from_dict({"labels": {7: "ET", 8: "ED"}}, name="test-own-1")
    with pytest.raises(ValueError, match="unknown label convention 'test-own-1'"):
        get_convention("test-own-1")
    assert register_convention(own) is register_convention(own)  # idempotent
    assert get_convention("test-own-1").classes == {7: "ET", 8: "ED"}
    clash = convention_from_dict({"labels": {1: "ET"}}, name="test-own-1")
    with pytest.raises(ValueError, match="already taken"):
        register_convention(clash)
    with pytest.raises(ValueError, match="already taken"):
        register_convention(convention_from_dict({"labels": {9: "ET"}}, name="brats2021"))
    info = {"options": {"label_conventions": {"test-own-2": {"labels": {"3": "lesion"},
                                                             "tissue": {"lesion": "NCR"}}}}}
    register_dataset_conventions(info)
    assert get_convention("test-own-2").raw_to_tissue == {0: 0, 3: TISSUE_NCR}


@pytest.mark.parametrize(
    ("target", "convention", "error"),
    [
        ("labels", "brats2021", None),
        ("labels", "brats2023", None),
        ("regions", "brats2023", None),
        ("labels", "binary", None),
        ("binary", "binary", None),
        ("labels", "brats2024", r"class 'resection_cavity' \(4\)"),
        ("regions", "brats2024-ped", r"class 'cystic' \(3\)"),
        ("binary", "brats2023", r"classes 'necrotic' \(1\), 'enhancing' \(3\)"),
    ],
)
def test_a_model_writes_only_conventions_whose_every_class_it_can_express(
    target, convention, error
):
    from brainseg_d2.labels import check_writable, get_target, prediction_convention

    if error is None:
        check_writable(get_target(target), CONVENTIONS[convention])
        return
    with pytest.raises(ValueError, match=error):
        check_writable(get_target(target), CONVENTIONS[convention])
    # The case's own convention is checked the same way as a requested one.
    with pytest.raises(ValueError, match=error):
        prediction_convention(get_target(target), "brats2021", convention)


def test_a_convention_with_values_past_255_is_written_in_a_wider_type(tmp_path):
    conv_file = tmp_path / "wide.yaml"
    conv_file.write_text("labels: {1000: necrotic, 2000: edema, 3000: enhancing}\n")
    conv = load_convention(conv_file)
    tissue = np.array([[0, TISSUE_NCR], [TISSUE_ED, TISSUE_ET]])
    raw = tissue_to_raw(tissue, conv)
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 1000], [2000, 3000]]
    assert np.array_equal(raw_to_tissue(raw, conv), tissue)
    assert tissue_to_raw(tissue, CONVENTIONS["brats2021"]).dtype == np.uint8
