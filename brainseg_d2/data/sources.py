"""Finding cases (co-registered channels + optional label map) on disk.

Three 3D layouts (the 2D ones, ``tcga_lgg`` and ``via``, are in
:mod:`brainseg_d2.data.sources_2d`; :func:`find_cases` dispatches to all):

* ``brats``: one folder per case, found at any depth (so the HGG/LGG subfolders
  of BraTS 2018/2019 work), following symbolic links to folders (each real
  folder is visited once, so a link back up the tree is no loop). BraTS 2018-2021 name files
  ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (convention ``brats2021``);
  BraTS 2023+ name them ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``
  (convention ``brats2023``), mapped to the same logical channel names
  ``flair, t1, t1ce, t2`` so that default channels work for both. A case without
  ``seg`` is unlabelled. The patient id is the case id: BraTS publishes no
  patient key, and in 2023+ the ``-NNN`` suffix (time point) is kept so that ids
  stay one-to-one with folders; use a CSV manifest to group time points.
* ``pairs``: one glob per channel (``[name=]glob``, relative to the input
  folder) and an optional mask glob. The text matched by the wildcards is the
  case key that pairs files across channels and masks.
* ``csv``: a manifest with columns ``image`` or ``image_<channel>`` (one or more
  channels), optional ``mask``, ``case_id``, ``patient_id`` and
  ``label_convention``; other columns are ignored; relative paths are relative
  to the CSV's folder; an empty ``mask`` cell means unlabelled.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from brainseg_d2.labels import CONVENTIONS, get_convention


class SourceError(ValueError):
    """Input folder or manifest cannot be turned into a list of cases."""


@dataclass(frozen=True)
class Case:
    """One volume to convert.

    Attributes:
        case_id: unique id (becomes the ``volume_id``).
        patient_id: patients, not cases, are split into train/val/test.
        channels: channel name -> file or DICOM folder.
        mask: label map file, or None for an unlabelled case.
        label_convention: name in ``brainseg_d2.labels.CONVENTIONS``.
        expected: channel name -> where a channel missing from ``channels`` was
            looked for (for error messages).
    """

    case_id: str
    patient_id: str
    channels: Mapping[str, str]
    mask: str | None
    label_convention: str
    expected: Mapping[str, str] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return self.mask is not None

    def files(self) -> list[str]:
        """All input files of the case, channels first (sorted by name), then mask."""
        out = [self.channels[c] for c in sorted(self.channels)]
        return out + ([self.mask] if self.mask else [])


BRATS_STYLES: dict[str, tuple[str, dict[str, str]]] = {
    # convention -> (separator, file suffix -> logical name)
    "brats2021": ("_", {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}),
    "brats2023": ("-", {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "seg": "seg"}),
}
_NIFTI = (".nii.gz", ".nii")


def _check_input_dir(root: Path) -> None:
    if not root.exists():
        raise SourceError(f"input folder {root} does not exist")
    if not root.is_dir():
        raise SourceError(f"input {root} is not a folder")
    if not any(root.iterdir()):
        raise SourceError(f"input folder {root} is empty")


def walk(root: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` in sorted order, following folder links, each real folder once.

    Datasets often live in shared storage with case folders linked in; a link
    that points back up the tree (or twice to one folder) is visited once.

    Args:
        root: folder to walk.

    Yields:
        ``(dirpath, dirnames, filenames)`` as ``os.walk``, names sorted.
    """
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        yield dirpath, dirnames, sorted(filenames)


def _brats_case(folder: Path, names: set[str]) -> Case | None:
    # A linked case folder may be named otherwise than its files: try the target's name too.
    for case_id in dict.fromkeys([folder.name, Path(os.path.realpath(folder)).name]):
        for convention, (sep, suffixes) in BRATS_STYLES.items():
            found: dict[str, str] = {}
            for suffix, logical in suffixes.items():
                for ext in _NIFTI:
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


def find_brats_cases(root: str | os.PathLike) -> list[Case]:
    """Find BraTS 2018-2021 and 2023+ case folders under ``root`` (any depth).

    Args:
        root: folder holding case folders (directly or in HGG/LGG subfolders).

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: missing or empty folder, no case found, duplicate case ids.
    """
    root = Path(root).resolve()
    _check_input_dir(root)
    cases = []
    for dirpath, _, filenames in walk(root):
        case = _brats_case(Path(dirpath), set(filenames))
        if case is not None:
            cases.append(case)
    if not cases:
        raise SourceError(
            f"no BraTS cases found under {root} (expected <case>/<case>_flair.nii.gz or "
            f"<case>/<case>-t2f.nii.gz); for other data use --layout pairs or csv"
        )
    return _sorted_unique(cases)


def _sorted_unique(cases: Sequence[Case]) -> list[Case]:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            first = seen[case.case_id]
            raise SourceError(
                f"duplicate case id '{case.case_id}': {first.files()[0]} and {case.files()[0]}"
            )
        seen[case.case_id] = case
    return [seen[k] for k in sorted(seen)]


def _glob_regex(pattern: str) -> re.Pattern:
    """Regex matching what ``Path.glob(pattern)`` matches, wildcards as groups."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:(.*)/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _match_glob(root: Path, pattern: str) -> dict[str, str]:
    """Files under ``root`` matching ``pattern`` keyed by the wildcard text."""
    if Path(pattern).is_absolute():
        raise SourceError(f"glob {pattern!r} must be relative to the input folder {root}")
    regex = _glob_regex(pattern)
    found: dict[str, str] = {}
    for path in sorted(root.glob(pattern)):
        rel = path.relative_to(root).as_posix()
        match = regex.fullmatch(rel)
        groups = [g for g in (match.groups() if match else ()) if g]
        key = "_".join(groups).replace("/", "_") or path.name.split(".")[0]
        if key in found:
            raise SourceError(
                f"duplicate case id '{key}': {found[key]} and {path} both match {pattern!r}"
            )
        found[key] = str(path)
    return found


def _patient_of(case_id: str, patient_pattern: str | None) -> str:
    if not patient_pattern:
        return case_id
    match = re.search(patient_pattern, case_id)
    if not match:
        raise SourceError(f"case id '{case_id}' does not match patient pattern {patient_pattern!r}")
    return match.group(1) if match.groups() else match.group(0)


def parse_channel_globs(specs: Sequence[str]) -> dict[str, str]:
    """``["flair=a/*_flair.nii.gz", ...]`` -> {name: glob}; unnamed: ``image`` or ``c0, c1..``."""
    out: dict[str, str] = {}
    for i, spec in enumerate(specs):
        name, sep, pattern = spec.partition("=")
        if not sep:
            name, pattern = ("image" if len(specs) == 1 else f"c{i}"), spec
        if not name or not pattern or name in out:
            raise SourceError(f"bad or repeated image glob {spec!r} (use NAME=GLOB)")
        out[name] = pattern
    return out


def find_pair_cases(
    root: str | os.PathLike,
    image_globs: Sequence[str],
    mask_glob: str | None = None,
    *,
    label_convention: str = "binary",
    patient_pattern: str | None = None,
) -> list[Case]:
    """Pair image and mask files by the text their globs' wildcards match.

    Args:
        root: input folder; globs are relative to it (``**`` recurses).
        image_globs: one ``[name=]glob`` per channel.
        mask_glob: glob of label maps, or None (all cases unlabelled).
        label_convention: convention of the masks.
        patient_pattern: regex on the case id; its first group (or the whole
            match) is the patient id. Default: patient id = case id.

    Returns:
        cases sorted by case id; images without a mask are unlabelled.

    Raises:
        SourceError: empty folder, nothing matched, a mask without images.
    """
    root = Path(root).resolve()
    _check_input_dir(root)
    get_convention(label_convention)
    globs = parse_channel_globs(image_globs)
    if not globs:
        raise SourceError("layout 'pairs' needs at least one --images glob")
    per_channel = {name: _match_glob(root, g) for name, g in globs.items()}
    masks = _match_glob(root, mask_glob) if mask_glob else {}
    keys = sorted(set().union(*per_channel.values()))
    if not keys:
        raise SourceError(f"no files under {root} match {sorted(globs.values())}")
    orphans = sorted(set(masks) - set(keys))
    if orphans:
        raise SourceError(f"mask {masks[orphans[0]]} has no matching image (case '{orphans[0]}')")
    cases = []
    for key in keys:
        channels = {n: files[key] for n, files in per_channel.items() if key in files}
        expected = {n: f"no file matches {globs[n]!r}" for n in globs if n not in channels}
        patient = _patient_of(key, patient_pattern)
        cases.append(Case(key, patient, channels, masks.get(key), label_convention, expected))
    return cases


MANIFEST_RESERVED = ("case_id", "patient_id", "mask", "label_convention")


def read_manifest(
    path: str | os.PathLike,
    *,
    label_convention: str = "binary",
    patient_pattern: str | None = None,
) -> list[Case]:
    """Read cases from a CSV manifest (see module docstring for the columns).

    Args:
        path: CSV file with a header row.
        label_convention: default for rows without a ``label_convention`` cell.
        patient_pattern: as in :func:`find_pair_cases`, when ``patient_id`` is empty.

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: missing/empty file, no image column, duplicate case ids.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise SourceError(f"manifest {path} not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    image_cols = {
        c: ("image" if c == "image" else c[len("image_") :])
        for c in columns
        if c == "image" or (c.startswith("image_") and len(c) > len("image_"))
    }
    if not rows:
        raise SourceError(f"manifest {path} has no rows")
    if not image_cols:
        raise SourceError(f"manifest {path} has no 'image' or 'image_<channel>' column")
    cases = []
    for line, row in enumerate(rows, start=2):
        channels, expected = {}, {}
        for col, name in image_cols.items():
            cell = (row.get(col) or "").strip()
            if cell:
                channels[name] = str((path.parent / cell).resolve())
            else:
                expected[name] = f"empty cell in column '{col}' of {path} line {line}"
        first = next(iter(channels.values()), None)
        case_id = (row.get("case_id") or "").strip()
        if not case_id:
            if first is None:
                raise SourceError(f"{path} line {line}: no case_id and no image")
            case_id = Path(first).name.split(".")[0]
        mask = (row.get("mask") or "").strip()
        convention = (row.get("label_convention") or "").strip() or label_convention
        get_convention(convention)
        patient = (row.get("patient_id") or "").strip() or _patient_of(case_id, patient_pattern)
        mask_path = str((path.parent / mask).resolve()) if mask else None
        cases.append(Case(case_id, patient, channels, mask_path, convention, expected))
    return _sorted_unique(cases)


#: Layouts :func:`find_cases` knows; ``tcga_lgg`` and ``via`` (2D slices) are in
#: :mod:`brainseg_d2.data.sources_2d`.
LAYOUTS = ("brats", "pairs", "csv", "tcga_lgg", "via")


def detect_layout(input_path: str | os.PathLike) -> str:
    """The folder layout of ``input_path`` among ``brats``, ``tcga_lgg`` and ``via``.

    Args:
        input_path: input folder (a ``.json`` file counts as ``via``).

    Returns:
        the one layout found (``brats`` when none is, so that its finder
        reports what it expected).

    Raises:
        SourceError: the folder holds more than one layout.
    """
    from brainseg_d2.data.sources_2d import is_tcga_mask_name, is_via_file

    root = Path(input_path)
    if root.suffix.lower() == ".json":
        return "via"
    found = set()
    for dirpath, _, filenames in walk(root) if root.is_dir() else ():
        if _brats_case(Path(dirpath), set(filenames)) is not None:
            found.add("brats")
        if any(is_tcga_mask_name(f) for f in filenames):
            found.add("tcga_lgg")
        if any(is_via_file(Path(dirpath) / f) for f in filenames if f.lower().endswith(".json")):
            found.add("via")
    if len(found) > 1:
        raise SourceError(
            f"input {root} holds several layouts ({', '.join(sorted(found))}); pass --layout"
        )
    return found.pop() if found else "brats"


def find_cases(
    input_path: str | os.PathLike,
    layout: str = "auto",
    *,
    image_globs: Sequence[str] = (),
    mask_glob: str | None = None,
    manifest: str | os.PathLike | None = None,
    label_convention: str | None = None,
    patient_pattern: str | None = None,
) -> list[Case]:
    """Discover cases with the given layout.

    Args:
        input_path: input folder (or the CSV file itself for ``csv``).
        layout: ``auto`` (csv if a manifest or a .csv input is given, pairs if
            image globs are given, else :func:`detect_layout`) or one of
            :data:`LAYOUTS`.
        image_globs, mask_glob: for ``pairs``.
        manifest: CSV path for ``csv`` (default: ``input_path``).
        label_convention: for ``pairs``/``csv``/``tcga_lgg`` (default
            ``binary``); for ``brats`` it is detected per case and a built-in
            name must be None or match, while a user's registered convention
            (:func:`~brainseg_d2.labels.register_convention`) applies to every
            case; for ``via`` see ``sources_2d.find_via_cases``.
        patient_pattern: regex giving the patient id from the case id.

    Returns:
        cases sorted by case id (``sources_2d.SliceCase`` for 2D layouts).
    """
    if layout == "auto":
        if manifest or str(input_path).lower().endswith(".csv"):
            layout = "csv"
        elif image_globs:
            layout = "pairs"
        else:
            layout = detect_layout(input_path)
    if layout in ("tcga_lgg", "via"):
        from brainseg_d2.data import sources_2d

        if layout == "via":
            return sources_2d.find_via_cases(
                input_path, label_convention=label_convention, patient_pattern=patient_pattern
            )
        return sources_2d.find_tcga_lgg_cases(
            input_path,
            label_convention=label_convention or "binary",
            patient_pattern=patient_pattern,
        )
    if layout == "brats":
        cases = find_brats_cases(input_path)
        if label_convention and label_convention not in CONVENTIONS:
            # A user's own convention: BraTS-style folders holding other labels.
            get_convention(label_convention)
            return [replace(c, label_convention=label_convention) for c in cases]
        if label_convention:
            other = sorted({c.label_convention for c in cases} - {label_convention})
            if other:
                raise SourceError(
                    f"--label-convention {label_convention} but BraTS files look like {other}"
                )
        return cases
    convention = label_convention or "binary"
    if layout == "pairs":
        return find_pair_cases(
            input_path,
            image_globs,
            mask_glob,
            label_convention=convention,
            patient_pattern=patient_pattern,
        )
    if layout == "csv":
        return read_manifest(
            manifest or input_path, label_convention=convention, patient_pattern=patient_pattern
        )
    raise SourceError(f"unknown layout {layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
