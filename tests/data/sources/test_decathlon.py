"""The ``decathlon`` layout: Decathlon task folders (4D images) and nnU-Net raw datasets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.data.convert import ConvertOptions
from brainseg_d2.data.sources import SourceError, detect_layout, find_brats_cases, find_cases
from brainseg_d2.data.volume_io import VolumeError

ORDER = ("flair", "t1", "t1ce", "t2")


@pytest.mark.parametrize("form", ["msd", "v1", "v2"])
def test_each_form_reads_the_same_cases_as_the_brats_folders(
    form, write_task, tiny_cases, tmp_path
):
    task = write_task(tiny_cases, tmp_path / "Task01_BrainTumour", form)
    assert detect_layout(task) == "decathlon"
    cases = find_cases(task)
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"]
    assert [c.labelled for c in cases] == [True, False]
    assert {c.label_convention for c in cases} == {"msd"}
    assert sorted(cases[0].channels) == sorted(ORDER)
    if form == "msd":  # one 4D file, the sequences in dataset.json's order
        assert cases[0].files() == [str(task / "imagesTr" / "BRATS_001.nii.gz"),
                                    str(task / "labelsTr" / "BRATS_001.nii.gz")]  # fmt: skip
        assert dict(cases[0].frames) == {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    else:
        assert cases[0].channels["t1ce"] == str(task / "imagesTr" / "BRATS_001_0002.nii.gz")
    options = ConvertOptions().preprocess()
    for case, brats in zip(cases, find_brats_cases(tiny_cases)):
        case.check(list(ORDER))
        ours, theirs = case.load(options), brats.load(options)
        np.testing.assert_array_equal(ours.slices, theirs.slices)  # every channel's pixels
        assert ours.geometry == theirs.geometry
        if case.labelled:  # the same tissue from 1/2/3 as from BraTS 2021's 1/2/4
            assert np.unique(theirs.tissue).size >= 3  # edema and a core tissue at least
            np.testing.assert_array_equal(ours.tissue, theirs.tissue)
    # The image folders narrow the cases.
    assert [c.case_id for c in find_cases(task / "imagesTs")] == ["BRATS_002"]
    assert [c.case_id for c in find_cases(task / "imagesTr", "decathlon")] == ["BRATS_001"]


def test_a_task_converts_with_its_unlabelled_cases_apart(write_task, tiny_cases, tmp_path):
    from brainseg_d2.data.convert import convert_dataset

    task = write_task(tiny_cases, tmp_path / "task", test_cases=1)
    out = tmp_path / "converted"
    info = convert_dataset(find_cases(task), out, ConvertOptions(split=(1.0, 0.0, 0.0)),
                           progress=False)  # fmt: skip
    assert info["label_convention"] == "msd"
    volumes = json.loads((out / "volumes.json").read_text())
    by_id = volumes["volumes"]
    assert by_id["BRATS_001"]["split"] == "train" and by_id["BRATS_002"]["split"] == "unlabelled"
    source = by_id["BRATS_001"]["source"]
    assert source["frames"] == {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}


def _spec(task):
    return json.loads((task / "dataset.json").read_text())


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda s: s.update(labels={"0": "background", "1": "tumour"}),
            "are not a built-in convention's",
        ),
        (
            lambda s: s.update(modality={"0": "FLAIR", "2": "T2w"}),
            "must map 0, 1, ... to sequence names",
        ),
        (
            lambda s: s.update(modality={"0": "T1", "1": "T1w"}),
            "give channel names ['t1', 't1'], which must differ",
        ),
        (lambda s: s["training"].append({"image": 7}), "a training case lists {'image': 7}"),
        (lambda s: s.update(training=[], test=[]), "dataset.json lists none"),
        (lambda s: s["modality"].update({"3": True}), "must map 0, 1, ... to sequence names"),
        (lambda s: s["training"].append("./imagesTr/BRATS_009.nii.gz"),
         """a training case lists './imagesTr/BRATS_009.nii.gz'; expected {"image": ..."""),
    ],
    ids=["other-labels", "gap-in-sequences", "same-channel-twice", "not-a-path", "no-cases",
         "a-boolean-sequence", "a-training-case-without-its-label"],
)
def test_a_bad_dataset_json_is_named(change, expected, write_task, tiny_cases, tmp_path):
    task = write_task(tiny_cases, tmp_path / "task")
    spec = _spec(task)
    change(spec)
    (task / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(SourceError, match=re.escape(expected)):
        find_cases(task, "decathlon")


def test_other_labels_take_a_convention_file(write_task, tiny_cases, tmp_path):
    from brainseg_d2.labels import register_convention, resolve_convention

    task = write_task(tiny_cases, tmp_path / "task")
    spec = _spec(task)
    spec["labels"] = {"0": "background", "1": "oedema", "2": "core", "3": "active"}
    (task / "dataset.json").write_text(json.dumps(spec))
    conv = tmp_path / "task_labels.yaml"
    conv.write_text("labels: {1: oedema, 2: core, 3: active}\n"
                    "tissue: {oedema: ED, core: NCR, active: ET}\n")  # fmt: skip
    register_convention(resolve_convention(str(conv)))
    cases = find_cases(task, label_convention="task_labels")
    assert {c.label_convention for c in cases} == {"task_labels"}


def test_a_4d_image_short_of_a_sequence_is_named(write_task, tiny_cases, tmp_path):
    task = write_task(tiny_cases, tmp_path / "task")
    path = task / "imagesTr" / "BRATS_001.nii.gz"
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(image[:, :, :, :3], str(path))
    case = find_cases(task)[0]
    with pytest.raises(VolumeError, match=f"{path}: holds 3 volumes, but 4 sequences are named"):
        case.check(list(ORDER))
    with pytest.raises(VolumeError, match="holds 3 volumes, so it has no volume 3"):
        case.load(ConvertOptions().preprocess())
    sitk.WriteImage(image[:, :, :, 0], str(path))  # a 3D file where a 4D one belongs
    with pytest.raises(VolumeError, match=r"expected a 4D image \(one volume per sequence\)"):
        find_cases(task)[0].check(list(ORDER))


def test_a_nan_in_any_volume_of_a_4d_image_is_named(write_task, tiny_cases, tmp_path):
    task = write_task(tiny_cases, tmp_path / "task")
    path = task / "imagesTr" / "BRATS_001.nii.gz"
    image = sitk.ReadImage(str(path))
    volumes = [sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, k]) for k in range(4)]
    array = sitk.GetArrayFromImage(volumes[3])
    array[1, 2, 3] = np.nan  # T2, the last volume
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(volumes[3])
    sitk.WriteImage(sitk.JoinSeries([*volumes[:3], bad]), str(path))
    case = find_cases(task)[0]
    case.check(list(ORDER))  # headers are fine
    with pytest.raises(VolumeError, match=f"{path}: contains NaN or Inf voxels"):
        case.load(ConvertOptions().preprocess())


def test_linked_files_keep_their_listed_names(write_task, tiny_cases, tmp_path):
    # A DataLad / git-annex dataset: every file a link to a storage key.
    task = write_task(tiny_cases, tmp_path / "task")
    store = tmp_path / "annex"
    store.mkdir()
    for path in [*task.glob("imagesT*/BRATS_*"), *task.glob("labelsTr/*")]:
        key = store / f"MD5E-s{path.stat().st_size}--{path.parent.name}{path.name}"
        path.rename(key)
        path.symlink_to(key)
    assert [c.case_id for c in find_cases(task)] == ["BRATS_001", "BRATS_002"]
    assert [c.case_id for c in find_cases(task / "imagesTr")] == ["BRATS_001"]
    linked = tmp_path / "elsewhere" / "imagesTs"  # an image folder linked into the task
    linked.parent.mkdir()
    (task / "imagesTs").rename(linked)
    (task / "imagesTs").symlink_to(linked)
    assert [c.case_id for c in find_cases(task / "imagesTs")] == ["BRATS_002"]


@pytest.mark.parametrize("sequences", [3, 5], ids=["fewer-named", "more-named"])
def test_a_4d_image_must_hold_one_volume_per_named_sequence(
    sequences, write_task, tiny_cases, tmp_path
):
    task = write_task(tiny_cases, tmp_path / "task")
    spec = _spec(task)
    names = ["FLAIR", "T1w", "t1gd", "T2w", "ADC"][:sequences]
    spec["modality"] = {str(i): n for i, n in enumerate(names)}
    (task / "dataset.json").write_text(json.dumps(spec))
    path = task / "imagesTr" / "BRATS_001.nii.gz"
    with pytest.raises(VolumeError, match=re.escape(f"{path}: holds 4 volumes, but {sequences} ")):
        find_cases(task)[0].check(["flair", "t1"])


def test_nnunet_v1_brats_labels_and_test_entries_as_pairs(write_task, tiny_cases, tmp_path):
    task = write_task(tiny_cases, tmp_path / "task", "v1")
    spec = _spec(task)  # as nnU-Net v1's BraTS conversions write them
    spec["labels"] = {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}
    spec["test"] = [{"image": t, "label": t} for t in spec["test"]]
    (task / "dataset.json").write_text(json.dumps(spec))
    cases = find_cases(task)
    assert [(c.case_id, c.labelled, c.label_convention) for c in cases] == [
        ("BRATS_001", True, "msd"), ("BRATS_002", False, "msd")]  # fmt: skip
    spec["test"].append(spec["training"][0]["image"])  # a training case listed again
    (task / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(
        SourceError, match=r"BRATS_001.nii.gz is listed twice \(training and test\)"
    ):
        find_cases(task)


def test_nnunet_v2_names_what_it_passes_over(write_task, tiny_cases, tmp_path):
    task = write_task(tiny_cases, tmp_path / "task", "v2", test_cases=0)
    (task / "labelsTr" / "BRATS_002.nii.gz").rename(task / "labelsTr" / "BRATS_099.nii.gz")
    warnings = []
    cases = find_cases(task, on_warning=warnings.append)
    assert [(c.case_id, c.labelled) for c in cases] == [("BRATS_001", True), ("BRATS_002", False)]
    assert warnings == [
        f"{task}: 1 imagesTr case(s) without labelsTr/<case>.nii.gz, read as unlabelled: BRATS_002",
        f"{task}: 1 labelsTr file(s) of no imagesTr case, not read: BRATS_099.nii.gz",
    ]


def test_the_folder_to_give_is_named(write_task, tiny_cases, tmp_path):
    task = write_task(tiny_cases, tmp_path / "data" / "Task01_BrainTumour")
    with pytest.raises(
        SourceError, match=f"holds the task's label maps; give the task folder {task}"
    ):
        find_cases(task / "labelsTr")
    with pytest.raises(SourceError, match=f"a task folder lies below it: {task}"):
        find_cases(tmp_path / "data", "decathlon")


@pytest.mark.parametrize(
    "labels, convention",
    [
        ({"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}, "brats2023"),
        ({"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}, "brats2024"),
        ({"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}, "msd"),
        ({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3],
          "enhancing tumor": [3]}, "brats2023"),
        ({"background": 0, "whole tumor": [1, 2, 4], "tumor core": [1, 4],
          "enhancing tumor": [4]}, "brats2021"),
        ({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
          "enhancing tumor": [2]}, None),  # no built-in has ET = 2
        ({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3]}, None),
        ({"background": 0, "necrosis": 1, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
          "enhancing tumor": [3]}, None),  # values and regions mixed: 1 is which?
        ({"background": 0, "edema": True, "non-enhancing tumor": 2, "enhancing tumour": 3},
         None),
        ({"background": 0, "whole tumor": [1.0, 2.0, 3.0], "tumor core": [2.0, 3.0],
          "enhancing tumor": [3.0]}, None),
    ],
    ids=["2023-names", "2024-names", "msd-names", "2023-regions", "2021-regions",
         "regions-of-no-built-in", "regions-without-et", "values-and-regions", "a-boolean",
         "fractions"],
)  # fmt: skip
def test_nnunet_v2_labels_name_their_convention(labels, convention, write_task, tiny_cases,
                                                tmp_path):  # fmt: skip
    task = write_task(tiny_cases, tmp_path / "task", "v2")
    spec = _spec(task)
    spec["labels"] = labels
    (task / "dataset.json").write_text(json.dumps(spec))
    if convention is None:
        with pytest.raises(SourceError, match="are not a built-in convention's"):
            find_cases(task)
    else:
        assert {c.label_convention for c in find_cases(task)} == {convention}


def test_a_named_convention_that_reads_the_labels_otherwise_is_warned(
    write_task, tiny_cases, tmp_path
):
    task = write_task(tiny_cases, tmp_path / "task")
    warnings = []
    cases = find_cases(task, label_convention="brats2023", on_warning=warnings.append)
    assert {c.label_convention for c in cases} == {"brats2023"}  # as asked
    assert warnings == [f"{task / 'dataset.json'}: its labels are convention msd's; "
                        "--label-convention brats2023 reads them otherwise"]  # fmt: skip
