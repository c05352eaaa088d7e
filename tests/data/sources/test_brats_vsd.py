"""BraTS 2013-2015 case folders: each sequence an ``.mha`` in a VSD folder of its own."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.data.convert import ConvertOptions
from brainseg_d2.data.sources import SourceError, detect_layout, find_brats_cases, find_cases

SEQUENCES = {"flair": "Flair", "t1": "T1", "t1ce": "T1c", "t2": "T2"}


def write_vsd_case(case, folder, first_id=54512, year=2015):
    """A BraTS-2021-named case as BraTS 2015 writes one (2013: folders without the
    file's number); half its core becomes 3."""
    for k, (channel, name) in enumerate(SEQUENCES.items()):
        vsd = f"VSD.Brain.XX.O.MR_{name}.{first_id + k}"
        sub = folder / (vsd if year == 2015 else vsd.rsplit(".", 1)[0])
        sub.mkdir(parents=True)
        sitk.WriteImage(sitk.ReadImage(case.channels[channel]), str(sub / f"{vsd}.mha"))
    if case.mask:
        seg = sitk.ReadImage(case.mask)
        labels = sitk.GetArrayFromImage(seg)
        core = np.argwhere(labels == 1)
        labels[tuple(core[: len(core) // 2].T)] = 3  # non-enhancing: NCR as necrosis is
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(seg)
        vsd = f"VSD.Brain_3more.XX.{'O' if year == 2015 else 'XX'}.OT.{first_id + 5}"
        sub = folder / (vsd if year == 2015 else vsd.rsplit(".", 1)[0])
        sub.mkdir()
        sitk.WriteImage(out, str(sub / f"{vsd}.mha"))


def test_2015_cases_read_as_their_2021_copies(tiny_cases, tmp_path):
    brats = find_brats_cases(tiny_cases)
    root = tmp_path / "BRATS2015_Training"
    for k, case in enumerate(brats):
        write_vsd_case(case, root / "HGG" / f"brats_2013_pat000{k + 1}_1")
    assert detect_layout(root) == "brats"
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["brats_2013_pat0001_1", "brats_2013_pat0002_1"]
    assert {c.label_convention for c in cases} == {"brats2015"}
    assert cases[0].channels["t1ce"].endswith("VSD.Brain.XX.O.MR_T1c.54514.mha")
    assert cases[0].mask.endswith("VSD.Brain_3more.XX.O.OT.54517.mha")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(cases[1].mask))
    assert {1, 3} <= set(np.unique(labels).tolist())  # both core labels occur
    options = ConvertOptions().preprocess()
    for case, theirs in zip(cases, brats):
        case.check(list(SEQUENCES))
        ours, ref = case.load(options), theirs.load(options)
        np.testing.assert_array_equal(ours.slices, ref.slices)
        np.testing.assert_array_equal(ours.tissue, ref.tissue)  # 3 is core as 1 is


def test_2013_numbered_cases_take_their_grade_folder(tiny_cases, tmp_path):
    case = find_brats_cases(tiny_cases)[0]
    root = tmp_path / "Image_Data"
    write_vsd_case(case, root / "HG" / "0001", first_id=684, year=2013)
    write_vsd_case(case, root / "LG" / "0001", first_id=700, year=2013)
    for mha in list(root.rglob("*.mha")):  # macOS resource forks beside every file
        (mha.parent / f"._{mha.name}").write_bytes(b"\x00\x05\x16\x07")
    cases = find_brats_cases(root)
    assert [c.case_id for c in cases] == ["HG_0001", "LG_0001"]
    assert cases[0].channels["flair"] == str(
        root / "HG" / "0001" / "VSD.Brain.XX.O.MR_Flair" / "VSD.Brain.XX.O.MR_Flair.684.mha"
    )
    assert cases[0].mask.endswith("VSD.Brain_3more.XX.XX.OT/VSD.Brain_3more.XX.XX.OT.689.mha")
    cases[0].check(list(SEQUENCES))


def test_a_missing_or_doubled_sequence_is_named(tiny_cases, tmp_path):
    case = find_brats_cases(tiny_cases)[0]
    folder = tmp_path / "cases" / "brats_tcia_pat101_0001"
    write_vsd_case(case, folder)
    t2 = next(folder.glob("VSD.Brain.XX.O.MR_T2.*"))
    t2.rename(folder / "VSD.Brain.XX.O.MR_Flair.1")
    with pytest.raises(SourceError, match="two folders of flair"):
        find_brats_cases(tmp_path / "cases")
    (folder / "VSD.Brain.XX.O.MR_Flair.1").rename(tmp_path / "away")
    labels = next(folder.glob("VSD.Brain_3more*"))  # 2013 names: the one .mha inside is read
    labels = labels.rename(folder / "VSD.Brain_3more.XX.XX.OT")
    (labels / "copy.mha").write_bytes(next(labels.glob("*.mha")).read_bytes())
    with pytest.raises(SourceError, match=r"VSD.Brain_3more.XX.XX.OT: holds 2 .mha files"):
        find_brats_cases(tmp_path / "cases")
    (labels / "copy.mha").unlink()
    (found,) = find_brats_cases(tmp_path / "cases")
    with pytest.raises(ValueError, match=r"missing channel 't2' \(.*VSD\.Brain\.XX\.O\.MR_T2\.<n>"):
        found.check(list(SEQUENCES))
