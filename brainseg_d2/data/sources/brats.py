r"""``brats``: one folder per case, BraTS 2013-2015, 2017-2021 or 2023+ file names.

Case folders are found at any depth (so the HGG/LGG subfolders of BraTS
2018/2019 work), following symbolic links to folders (each real folder is
visited once, so a link back up the tree is no loop). BraTS 2018-2021 name
files ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (convention
``brats2021``); BraTS 2023+ name them ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``
(convention ``brats2023``), mapped to the same logical channel names ``flair,
t1, t1ce, t2`` so that default channels work for both. A case without ``seg``
is unlabelled. The patient id is the case id: BraTS publishes no patient key,
and in 2023+ the ``-NNN`` suffix (time point) is kept so that ids stay
one-to-one with folders. ``patient_pattern`` (``--patient-pattern``) groups
time points into patients, e.g. ``BraTS-GLI-(\d+)-\d+``; so does a CSV manifest.

BraTS 2013-2015 (the VSD names of the SMIR archive) keep each sequence in a folder
of its own, ``<case>/VSD.Brain.XX.O.MR_Flair.<n>/VSD.Brain.XX.O.MR_Flair.<n>.mha``
(``MR_T1``, ``MR_T1c``, ``MR_T2``; 2013 folders lack the ``.<n>``), the label map in
``VSD.Brain_3more.XX.O.OT.<n>/`` (convention ``brats2015``: 1 necrosis, 2 edema,
3 non-enhancing, 4 enhancing). BraTS 2013 numbers its cases ``HG/0001``, ``LG/0001``:
a case folder named by digits alone gets its parent's name in front (``HG_0001``).

``label_convention`` may name any built-in convention whose label maps go with
the files' names (:data:`STYLE_CONVENTIONS`: 2023-style names also carry BraTS
2024's ``brats2024`` and ``brats2024-ped`` maps), or a user's registered one.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from brainseg_d2.data.sources.common import (
    SourceError,
    check_input_dir,
    patient_of,
    sorted_unique,
    walk,
)
from brainseg_d2.data.sources.registry import Layout, SourceQuery
from brainseg_d2.data.sources.volume import Case
from brainseg_d2.labels import CONVENTIONS, get_convention

BRATS_STYLES: dict[str, tuple[str, dict[str, str]]] = {
    # convention -> (separator, file suffix -> logical name)
    "brats2021": ("_", {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}),
    "brats2023": ("-", {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "seg": "seg"}),
}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Built-in label conventions whose maps come with each naming style's files.
STYLE_CONVENTIONS: dict[str, tuple[str, ...]] = {
    "brats2021": ("brats2021",),
    "brats2023": ("brats2023", "brats2024", "brats2024-ped"),
    "brats2015": ("brats2015",),
}
#: A BraTS 2013-2015 sequence folder (group 1: the sequence) and label-map folder.
#: The folder names carry the file's number in 2015, not in 2013.
VSD_SEQUENCE = re.compile(r"VSD\.Brain\.XX\.O\.MR_(Flair|T1|T1c|T2)(?:\.\d+)?", re.I)
VSD_LABELS = re.compile(r"VSD\.Brain_\d+more\.XX\.(?:O|XX)\.OT(?:\.\d+)?", re.I)
VSD_CHANNELS = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}


def brats_case(folder: Path, names: set[str]) -> Case | None:
    """The BraTS case a folder holding files ``names`` is, or None."""
    # A linked case folder may be named otherwise than its files: try the target's name too.
    for case_id in dict.fromkeys([folder.name, Path(os.path.realpath(folder)).name]):
        for convention, (sep, suffixes) in BRATS_STYLES.items():
            found: dict[str, str] = {}
            for suffix, logical in suffixes.items():
                for ext in NIFTI_SUFFIXES:
                    if f"{case_id}{sep}{suffix}{ext}" in names:
                        found[logical] = str(folder / f"{case_id}{sep}{suffix}{ext}")
                        break
            mask = found.pop("seg", None)
            if found:
                expected = {
                    logical: str(folder / f"{case_id}{sep}{suffix}.nii.gz")
                    for suffix, logical in suffixes.items()
                    if logical not in found and logical != "seg"
                }
                return Case(case_id, case_id, found, mask, convention, expected)
    return None


def _vsd_file(folder: Path) -> Path:
    """The ``.mha`` of a VSD folder: ``<folder>.mha`` (2015), else the one ``.mha`` in it.

    Raises:
        SourceError: several ``.mha`` files and none named as the folder.
    """
    named = folder / f"{folder.name}.mha"
    found = sorted(p for p in folder.glob("*.mha") if not p.name.startswith("._"))  # macOS
    if named.exists() or not found:
        return named  # a missing one is named when the case is checked
    if len(found) > 1:
        shown = ", ".join(p.name for p in found[:3])
        raise SourceError(f"{folder}: holds {len(found)} .mha files ({shown}); expected one")
    return found[0]


def vsd_case_id(folder: Path) -> str:
    """A BraTS 2013-2015 case folder's id: its name, or ``HG_0001`` for ``HG/0001``."""
    return f"{folder.parent.name}_{folder.name}" if folder.name.isdigit() else folder.name


def vsd_case(folder: Path, dirnames: list[str]) -> Case | None:
    """The BraTS 2013-2015 case a folder holding folders ``dirnames`` is, or None.

    Raises:
        SourceError: two folders of one sequence, or two label maps.
    """
    found: dict[str, str] = {}
    for name in dirnames:
        seq = VSD_SEQUENCE.fullmatch(name)
        if seq:
            key = VSD_CHANNELS[seq.group(1).lower()]
        elif VSD_LABELS.fullmatch(name):
            key = "seg"
        else:
            continue
        if key in found:
            raise SourceError(f"{folder}: two folders of {key}: {Path(found[key]).parent.name} "
                              f"and {name}")  # fmt: skip
        found[key] = str(_vsd_file(folder / name))
    mask = found.pop("seg", None)
    if not found:
        return None
    case_id = vsd_case_id(folder)
    expected = {
        logical: str(folder / f"VSD.Brain.XX.O.MR_{seq}.<n>")
        for seq, logical in (("Flair", "flair"), ("T1", "t1"), ("T1c", "t1ce"), ("T2", "t2"))
        if logical not in found
    }
    return Case(case_id, case_id, found, mask, "brats2015", expected)


def find_brats_cases(root: str | os.PathLike) -> list[Case]:
    """Find BraTS 2013-2015, 2017-2021 and 2023+ case folders under ``root`` (any depth).

    Args:
        root: folder holding case folders (directly or in HGG/LGG subfolders).

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: missing or empty folder, no case found, duplicate case ids.
    """
    return _scan(root)[0]


def _scan(root: str | os.PathLike) -> tuple[list[Case], list[Path]]:
    """:func:`find_brats_cases`, and the NIfTI files under ``root`` that no case reads."""
    root = Path(root).resolve()
    check_input_dir(root)
    cases, passed_over = [], []
    for dirpath, dirnames, filenames in walk(root):
        case = brats_case(Path(dirpath), set(filenames)) or vsd_case(Path(dirpath), dirnames)
        used = {Path(f).name for f in case.files()} if case is not None else set()
        passed_over += [Path(dirpath) / n for n in filenames
                        if n.lower().endswith(NIFTI_SUFFIXES) and n not in used]  # fmt: skip
        if case is not None:
            cases.append(case)
    if not cases:
        raise SourceError(
            f"no BraTS cases found under {root} (expected <case>/<case>_flair.nii.gz, "
            f"<case>/<case>-t2f.nii.gz or <case>/VSD.Brain.XX.O.MR_Flair.<n>/"
            f"VSD.Brain.XX.O.MR_Flair.<n>.mha); for other data use --layout pairs or csv "
            f"(demo/demo.py: pass the channel files)"
        )
    return sorted_unique(cases), passed_over


def _find(input_path: str | os.PathLike, query: SourceQuery) -> list[Case]:
    """BraTS cases, grouped into patients by ``patient_pattern`` if given.

    A built-in ``label_convention`` must go with the files' naming style
    (:data:`STYLE_CONVENTIONS`); a user's registered one
    (:func:`~brainseg_d2.labels.register_convention`) applies to every case.
    """
    cases, passed_over = _scan(input_path)
    if passed_over:
        root = Path(input_path).resolve()
        shown = ", ".join(str(p.relative_to(root)) for p in passed_over[:3])
        more = f" and {len(passed_over) - 3} more" if len(passed_over) > 3 else ""
        query.warn(
            f"{len(passed_over)} NIfTI file(s) under {root} belong to no BraTS case and were not "
            f"read: {shown}{more} (a case folder <case>/ holds <case>_flair.nii.gz ... "
            "<case>_seg.nii.gz, or <case>-t2f.nii.gz ... <case>-seg.nii.gz)"
        )
    if query.patient_pattern:
        cases = [replace(c, patient_id=patient_of(c.case_id, query.patient_pattern)) for c in cases]
    convention = query.label_convention
    if not convention:
        return cases
    if convention not in CONVENTIONS:
        get_convention(convention)  # a user's own: BraTS-style folders holding other labels
    else:
        for case in cases:
            if convention not in STYLE_CONVENTIONS[case.label_convention]:
                fits = " or ".join(STYLE_CONVENTIONS[case.label_convention])
                raise SourceError(
                    f"--label-convention {convention} does not go with the BraTS file names of "
                    f"case {case.case_id} ({case.label_convention} style: {fits})"
                )
    return [replace(c, label_convention=convention) for c in cases]


def _detect(folder: Path, names) -> bool:
    """A BraTS case folder, or a BraTS 2013-2015 sequence folder holding its ``.mha``."""
    if brats_case(folder, set(names)) is not None:
        return True
    return bool(VSD_SEQUENCE.fullmatch(folder.name)) and any(n.endswith(".mha") for n in names)


#: This layout, registered by the package.
LAYOUT = Layout("brats", _find, detect=_detect)
