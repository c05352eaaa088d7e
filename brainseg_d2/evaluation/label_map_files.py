"""Finding label maps in two folders and pairing prediction with reference by case id.

Case ids: BraTS names give the id wherever they sit in a file name
(``BraTS-GLI-00000-000``, ``BraTS2021_00000``, ``Brats18_2013_2_1``, ...); other
names give their stem less a trailing ``_seg``/``-seg``/``_pred``-like suffix; a
a file named only ``seg``/``pred``/... takes its folder's name; ``pattern``
(searched in the file name, then in its path below the folder) overrides them.
Reference folders may be BraTS-layout case folders:
image files (``_flair``, ``-t2f``, ...) are skipped when the name is a BraTS one
or a label map of the same case sits beside them (``<id>_seg``), as in the
phantom's case folders and other BraTS-layout datasets with ids of their own.
BraTS 2013-2015 case folders (SMIR's VSD names) hold each file in a folder of its
own: the label map is the ``.mha`` in ``VSD.Brain_3more.XX.O.OT.<n>/``, its id
the case folder's, as the converter names the case; the sequence folders
(``VSD.Brain.XX.O.MR_Flair.<n>/``...) are skipped.

Label maps are files of the single-file volume formats the converter reads
(:data:`~brainseg_d2.data.volume_io.VOLUME_SUFFIXES`: NIfTI, MetaImage, NRRD).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from brainseg_d2.data.sources.brats import VSD_LABELS, VSD_SEQUENCE, vsd_case_id
from brainseg_d2.data.sources.common import walk
from brainseg_d2.data.volume_io import VOLUME_SUFFIXES
from brainseg_d2.labels import BRATS2021_CASE, BRATS2023_CASE, brats_task, detect_convention

__all__ = ["LABEL_MAP_SUFFIXES", "CasePair", "EvaluationError", "case_id", "find_label_maps",
           "match_cases", "reference_convention", "unlabelled_case_folders"]  # fmt: skip

#: File endings read as label maps (MetaImage and NRRD headers read their data files).
LABEL_MAP_SUFFIXES = VOLUME_SUFFIXES
#: Trailing parts of a file stem that are not part of the case id (3D Slicer: ``x.seg.nrrd``).
_ID_SUFFIX = re.compile(r"[_.-](seg|pred|prediction|label|labels|mask|segmentation)$", re.I)
#: Suffixes that make a file the label map of the file named without them.
_LABEL_SUFFIX = re.compile(r"[_.-](seg|label|labels|segmentation)", re.I)
#: BraTS image files (not label maps) inside case folders.
_IMAGE_SUFFIX = re.compile(r"[_-](flair|t1|t1ce|t2|t1n|t1c|t2w|t2f|t1w|t1gd|dwi|adc)$", re.I)


class EvaluationError(ValueError):
    """Bad input to the evaluation: folders, names, geometry, labels (one-line message)."""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in LABEL_MAP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id(
    path: str | os.PathLike,
    pattern: re.Pattern | None = None,
    root: str | os.PathLike | None = None,
) -> str | None:
    """Case id of a label-map file (module docstring); None if ``pattern`` misses.

    ``pattern`` is searched in the file name, then in the path below ``root``
    (so ids may come from case folders). A file named only ``seg``, ``pred``,
    ... (``<case>/seg.nii.gz``) takes its folder's name.
    """
    path = Path(path)
    stem = _stem(path)
    if pattern is None and VSD_LABELS.fullmatch(path.parent.name):
        return vsd_case_id(path.parent.parent)
    if pattern is not None:
        m = pattern.search(path.name)
        if m is None and root is not None:
            m = pattern.search(path.relative_to(root).as_posix())
        if m is None:
            return None
        if "id" in pattern.groupindex:
            return m.group("id")
        return m.group(1) if pattern.groups else m.group(0)
    if _ID_SUFFIX.fullmatch("_" + stem) and path.parent.name:
        stem = path.parent.name
    m = BRATS2023_CASE.search(stem)
    if m:
        return m.group(0)
    m = BRATS2021_CASE.search(stem)
    if m:
        return _ID_SUFFIX.sub("", m.group(0))
    return _ID_SUFFIX.sub("", stem)


def _is_image(path: Path, names: set[str], beside_label: bool) -> bool:
    """An image, not a label map: a sequence suffix with a BraTS name or a label map
    beside it, or (``beside_label``) a file beside its own label map (``x``, ``x_seg``).

    ``names``: the file names in ``path``'s folder.
    """
    if VSD_SEQUENCE.fullmatch(path.parent.name):
        return True
    stem = _stem(path)
    # 3D Slicer's "case01.nrrd" beside "case01.seg.nrrd" (or "_seg", "_label", ...).
    if beside_label and _ID_SUFFIX.search(stem) is None and any(
        _LABEL_SUFFIX.fullmatch(_stem(Path(n))[len(stem) :])
        for n in names
        if n != path.name and n.startswith(stem) and n.lower().endswith(LABEL_MAP_SUFFIXES)
    ):
        return True
    m = _IMAGE_SUFFIX.search(stem)
    if m is None:
        return False
    if brats_task(stem) is not None:
        return True
    prefix = stem[: m.start()]
    return any(
        _ID_SUFFIX.fullmatch(_stem(Path(n))[len(prefix):]) is not None
        for n in names
        if n.startswith(prefix) and n.lower().endswith(LABEL_MAP_SUFFIXES)
    )


def find_label_maps(
    folder: str | os.PathLike, pattern: re.Pattern | None = None, *, role: str = "folder"
) -> dict[str, Path]:
    """Label maps under ``folder`` (any depth, following folder links) by case id.

    Case folders linked in from shared storage are found, as the converter and
    ``brainseg-predict`` find them (:func:`~brainseg_d2.data.sources.common.walk`).
    ``role`` names the folder in errors; ``--ref`` without a ``pattern`` also skips a
    file beside its own label map as an image (``x.nrrd`` by ``x.seg.nrrd``).

    Raises:
        EvaluationError: missing folder, no label-map file, or two files with one id
            (the message names both).
    """
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationError(f"{role} {root} is not a folder")
    found: dict[str, Path] = {}
    entries = []  # (path, the names in its folder), one set per folder
    for d, _, files in walk(root):
        names = set(files)
        entries += [(Path(d) / f, names) for f in files]
    for path, names in sorted(entries, key=lambda entry: entry[0]):
        if path.name.startswith("._"):  # a macOS resource fork (Decathlon archives hold them)
            continue
        if not path.name.lower().endswith(LABEL_MAP_SUFFIXES) or not path.is_file():
            continue
        # References only: in a prediction folder "x" beside "x_seg" may be the prediction
        # beside a copy of its reference, and a pattern names its files itself.
        if _is_image(path, names, beside_label=role == "--ref" and pattern is None):
            continue
        cid = case_id(path, pattern, root)
        if cid is None:
            continue
        if cid in found:
            raise EvaluationError(
                f"{role}: {found[cid]} and {path} have the same case id {cid!r}; "
                "use --pattern to tell them apart"
            )
        found[cid] = path
    if not found:
        what = (
            f"label map ({', '.join(LABEL_MAP_SUFFIXES)})"
            if pattern is None
            else f"label map matching {pattern.pattern!r}"
        )
        raise EvaluationError(f"{role} {root} holds no {what}")
    return found


def unlabelled_case_folders(folder: str | os.PathLike) -> list[Path]:
    """Case folders under ``folder`` that hold images but no label map, sorted.

    An incomplete download, or cases without a reference: they are not scored, and
    their predictions show only as predictions without reference. A case folder is the
    folder of its files, or of its BraTS 2013-2015 VSD folders.
    """
    with_images, with_labels = set(), set()
    for d, _, files in walk(Path(folder)):
        names = set(files)
        for name in files:
            path = Path(d) / name
            if name.startswith("._") or not name.lower().endswith(LABEL_MAP_SUFFIXES):
                continue
            in_vsd = VSD_SEQUENCE.fullmatch(path.parent.name) or VSD_LABELS.fullmatch(
                path.parent.name
            )
            case = path.parent.parent if in_vsd else path.parent
            image = _is_image(path, names, beside_label=True)
            (with_images if image else with_labels).add(case)
    return sorted(with_images - with_labels)


def reference_convention(path: str | os.PathLike) -> str | None:
    """The built-in label convention a reference's name implies, or None.

    BraTS names give theirs (:func:`~brainseg_d2.labels.detect_convention`); a label
    map in a BraTS 2013-2015 ``VSD.Brain_3more.XX.O.OT.<n>`` folder is ``brats2015``.
    """
    path = Path(path)
    if VSD_LABELS.fullmatch(path.parent.name):
        return "brats2015"
    return detect_convention(path.name)


@dataclass(frozen=True)
class CasePair:
    """One reference and its prediction (None when missing)."""

    case_id: str
    ref: Path
    pred: Path | None


def match_cases(
    pred_dir: str | os.PathLike, ref_dir: str | os.PathLike, pattern: re.Pattern | None = None
) -> tuple[list[CasePair], list[Path]]:
    """Pair references with predictions by case id.

    Returns:
        ``(pairs, unmatched)``: one pair per reference, sorted by id (``pred`` None
        when missing), and the predictions without reference.

    Raises:
        EvaluationError: bad folders, duplicate ids, or no prediction matching any
            reference (names an id of each side, which usually means a wrong
            ``--pattern``).
    """
    for role, folder in (("--pred", pred_dir), ("--ref", ref_dir)):  # before any long walk
        if not Path(folder).is_dir():
            raise EvaluationError(f"{role} {folder} is not a folder")
    refs = find_label_maps(ref_dir, pattern, role="--ref")
    preds = find_label_maps(pred_dir, pattern, role="--pred")
    if not set(refs) & set(preds):
        raise EvaluationError(
            f"no prediction in {pred_dir} matches a reference in {ref_dir} (ids like "
            f"{next(iter(preds))!r} and {next(iter(refs))!r}); use --pattern"
        )
    pairs = [CasePair(cid, refs[cid], preds.get(cid)) for cid in sorted(refs)]
    unmatched = [preds[cid] for cid in sorted(set(preds) - set(refs))]
    return pairs, unmatched
