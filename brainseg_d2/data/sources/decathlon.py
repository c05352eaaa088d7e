r"""``decathlon``: a Medical Segmentation Decathlon task folder, or an nnU-Net raw dataset.

A task folder holds ``dataset.json``, ``imagesTr/``, ``labelsTr/`` and ``imagesTs/``.
Three ways of storing a case's sequences are read, as ``dataset.json`` says:

- the Decathlon's own (``Task01_BrainTumour``): one 4D NIfTI per case,
  ``imagesTr/BRATS_001.nii.gz``, its volumes the sequences in ``modality`` order;
  the cases are those listed under ``training`` (with ``label``) and ``test``;
- nnU-Net v1 (``Task500_Name``): the same ``dataset.json``, each sequence in a file of
  its own, ``imagesTr/BRATS_001_0000.nii.gz`` ... ``_0003``;
- nnU-Net v2 (``Dataset500_Name``): ``channel_names`` and ``file_ending`` instead of
  case lists: every ``imagesTr/<case>_0000<ending>`` is a case, labelled by
  ``labelsTr/<case><ending>`` when that exists; ``imagesTs`` cases are unlabelled.

Sequences get the project's channel names (FLAIR -> ``flair``, T1w -> ``t1``,
t1gd -> ``t1ce``, T2w -> ``t2``: :data:`CHANNEL_ALIASES`), so a BraTS config reads
them as it reads BraTS folders. Labels are the Decathlon's brain-tumour ones
(1 edema, 2 non-enhancing tumour, 3 enhancing: convention ``msd``), which nnU-Net's
BraTS datasets keep (nnU-Net v1 names them "non-enhancing" and "enhancing"). BraTS
2023-2024 names (NETC, SNFH, ET, RC) are ``brats2023`` / ``brats2024``, and v2's
region-based ``labels`` (``"whole tumor": [1, 2, 3]``, ...) tell which value is which
tissue; other ``labels`` need ``label_convention`` (a built-in one or a convention
file). ``--input`` is the task
folder (every case) or its ``imagesTr`` or ``imagesTs`` folder (those cases). The
patient id is the case id unless ``patient_pattern`` says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
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
from brainseg_d2.labels import CONVENTIONS, TISSUE_ED, TISSUE_ET, TISSUE_NCR, get_convention

#: A sequence's name in ``dataset.json`` (lower case, letters and digits only) ->
#: the project's channel name. Other names become channels of their own.
CHANNEL_ALIASES = {
    "flair": "flair", "t2flair": "flair", "t2f": "flair",
    "t1": "t1", "t1w": "t1", "t1n": "t1", "t1native": "t1",
    "t1ce": "t1ce", "t1gd": "t1ce", "t1c": "t1ce", "t1contrast": "t1ce", "t1post": "t1ce",
    "t2": "t2", "t2w": "t2",
}  # fmt: skip
#: Label names (as ``_label_key`` writes them: "tumour" dropped) -> the built-in
#: convention they are: the Decathlon's (nnU-Net v1's BraTS tasks say "non-enhancing",
#: "enhancing"), and BraTS 2023-2024's abbreviations.
KNOWN_LABELS = {
    "msd": {1: "edema", 2: "nonenhancing", 3: "enhancing"},
    "brats2023": {1: "netc", 2: "snfh", 3: "et"},
    "brats2024": {1: "netc", 2: "snfh", 3: "et", 4: "rc"},
}
#: Built-in conventions a region-based ``labels`` can turn out to be.
REGION_CONVENTIONS = ("msd", "brats2023", "brats2021")
IMAGE_FOLDERS = ("imagesTr", "imagesTs")
TASK_FOLDERS = (*IMAGE_FOLDERS, "labelsTr")


def channel_name(sequence: str) -> str:
    """The project's channel name for a sequence named in ``dataset.json``."""
    key = re.sub(r"[^a-z0-9]", "", sequence.lower())
    return CHANNEL_ALIASES.get(key, key)


def _label_key(name: str) -> str:
    key = re.sub(r"[^a-z]", "", name.lower()).replace("oedema", "edema")
    return key.replace("tumour", "").replace("tumor", "")


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute without following links: a linked file keeps its own name
    (a DataLad or git-annex dataset links every image to a storage key)."""
    return Path(os.path.abspath(path))


def task_spec(folder: Path) -> dict | None:
    """``folder``'s ``dataset.json`` if it describes a Decathlon or nnU-Net raw task
    (it names the sequences and an image folder lies beside it), else None."""
    path = folder / "dataset.json"
    if not path.is_file() or not any((folder / f).is_dir() for f in IMAGE_FOLDERS):
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(spec, dict) or not ("modality" in spec or "channel_names" in spec):
        return None
    return spec


def task_folder(input_path: str | os.PathLike) -> tuple[Path, str | None]:
    """The task folder of ``input_path`` and the image folder it narrows to (or None).

    Raises:
        SourceError: ``input_path`` is neither a task folder nor one of its image folders.
    """
    root = _absolute(input_path)
    check_input_dir(root)
    if task_spec(root) is not None:
        return root, None
    if root.name in TASK_FOLDERS and task_spec(root.parent) is not None:
        if root.name == "labelsTr":
            raise SourceError(f"{root} holds the task's label maps; give the task folder "
                              f"{root.parent} or its imagesTr or imagesTs folder")  # fmt: skip
        return root.parent, root.name
    below = next((Path(d) for d, _, _ in walk(root) if task_spec(Path(d)) is not None), None)
    hint = f"; a task folder lies below it: {below}" if below is not None else ""
    raise SourceError(
        f"{root} is not a Decathlon or nnU-Net task folder (expected dataset.json naming "
        "'modality' or 'channel_names' beside imagesTr/ or imagesTs/), nor its imagesTr or "
        f"imagesTs folder{hint}"
    )


def is_task_input(input_path: str | os.PathLike) -> bool:
    """True if ``input_path`` is a task folder or one of its folders (``labelsTr`` too,
    so that :func:`task_folder` can say what to give instead)."""
    folder = _absolute(input_path)
    return task_spec(folder) is not None or (
        folder.name in TASK_FOLDERS and task_spec(folder.parent) is not None
    )


def task_labels(ref: str | os.PathLike, asked: str | None = None) -> tuple[Path, str | None]:
    """Where a task's reference label maps are, and their convention, for evaluation.

    Args:
        ref: a task folder, its ``labelsTr`` folder, or any other folder.
        asked: the convention the user named, if any (it wins).

    Returns:
        ``(labelsTr, convention)`` for a task (``msd`` for the Decathlon's
        brain-tumour labels, else ``asked``); ``(ref, asked)`` outside a task.

    Raises:
        SourceError: a task whose labels are not the Decathlon's, and no ``asked``.
    """
    ref = Path(ref)
    task = ref if task_spec(_absolute(ref)) is not None else ref.parent
    spec = task_spec(_absolute(task)) if ref.name == "labelsTr" or task == ref else None
    if spec is None:
        return ref, asked
    warn = logging.getLogger(__name__).warning
    return task / "labelsTr", _convention(spec, task / "dataset.json", asked, warn)


def _channels(spec: dict, where: Path) -> list[str]:
    """Channel names in file order (``modality`` / ``channel_names`` keys 0, 1, ...)."""
    named = spec.get("modality", spec.get("channel_names"))
    try:
        order = sorted((int(k), v) for k, v in named.items() if isinstance(v, str))
    except (AttributeError, TypeError, ValueError):
        order = []
    if not order or [i for i, _ in order] != list(range(len(named))):
        raise SourceError(f"{where}: 'modality' / 'channel_names' must map 0, 1, ... to "
                          f"sequence names, got {named!r}")  # fmt: skip
    names = [channel_name(v) for _, v in order]
    if len(set(names)) != len(names) or "" in names:
        raise SourceError(f"{where}: sequences {[v for _, v in order]} give channel names "
                          f"{names}, which must differ")  # fmt: skip
    return names


def _convention(
    spec: dict, where: Path, asked: str | None, warn: Callable[[str], None] | None = None
) -> str:
    """The convention of a task's ``labels`` (:func:`recognised_convention`), else the
    one the user named; a named one that contradicts recognised labels is used, and
    ``warn`` (called with one line) says so.

    Raises:
        SourceError: labels of no built-in convention, and none named.
    """
    found = recognised_convention(spec)
    if asked:
        named = get_convention(asked)  # a built-in or a user's registered one, else ValueError
        if found and named.raw_to_tissue != CONVENTIONS[found].raw_to_tissue and warn:
            warn(f"{where}: its labels are convention {found}'s; --label-convention {asked} "
                 "reads them otherwise")  # fmt: skip
        return asked
    if found is None:
        raise SourceError(
            f"{where}: labels {spec.get('labels')!r} are not a built-in convention's (the "
            "Decathlon's 1 edema, 2 non-enhancing tumour, 3 enhancing; BraTS 2023's NETC, "
            "SNFH, ET); pass --label-convention: a built-in one (brats2023, ...) or a "
            "convention file"
        )
    return found


def recognised_convention(spec: dict) -> str | None:
    """The built-in convention a task's ``labels`` are: by name (:data:`KNOWN_LABELS`),
    or by nnU-Net's regions (:func:`_region_convention`); None if neither."""
    labels = spec.get("labels")
    if not isinstance(labels, dict):
        return None
    if all(str(k).isdigit() for k in labels):  # Decathlon / v1: value -> name
        named = {int(k): _label_key(v) for k, v in labels.items() if int(k)
                 and isinstance(v, str)}  # fmt: skip
        if len(named) != len(labels) - ("0" in labels):
            return None
    else:  # v2: name -> value, or region -> values (the two are not mixed)
        found = {_label_key(k): v for k, v in labels.items() if v not in (0, [0])}
        if all(isinstance(v, list) for v in found.values()) and found:
            return _region_convention(found)
        if not all(type(v) is int for v in found.values()):
            return None
        named = {v: k for k, v in found.items()}
    return next((name for name, known in KNOWN_LABELS.items() if known == named), None)


def _region_convention(regions: dict[str, list]) -> str | None:
    """The built-in convention whose tissues nnU-Net's regions give each value: the
    enhancing region is ET, the core's other value the necrotic core, the whole
    tumour's other value edema."""
    if any(type(v) is not int for values in regions.values() for v in values):
        return None
    whole, core, et = (set(regions.get(k, ())) for k in ("whole", "core", "enhancing"))
    ncr, ed = core - et, whole - core
    if len(regions) != 3 or not (len(et) == len(ncr) == len(ed) == 1 and et < core < whole):
        return None
    values = {ed.pop(): TISSUE_ED, ncr.pop(): TISSUE_NCR, et.pop(): TISSUE_ET}
    return next((name for name in REGION_CONVENTIONS
                 if {v: t for v, t in CONVENTIONS[name].raw_to_tissue.items() if v} == values),
                None)  # fmt: skip


def _listed_cases(spec: dict, root: Path, names: list[str], ending: str) -> list[Case]:
    """Cases of a Decathlon / nnU-Net v1 ``dataset.json`` (``training`` and ``test`` lists).

    Raises:
        SourceError: an entry that is not a path, or an image listed twice.
    """
    where = root / "dataset.json"
    entries = []
    for key in ("training", "test"):  # test cases are unlabelled (a "label" is not read)
        for entry in spec.get(key) or []:
            pair = isinstance(entry, dict)
            image = entry.get("image") if pair else entry
            label = entry.get("label") if pair and key == "training" else None
            if (not isinstance(image, str) or (key == "training" and not pair)
                    or not (label is None or isinstance(label, str))):  # fmt: skip
                how = '{"image": ..., "label": ...}' if key == "training" else "a file path"
                raise SourceError(f"{where}: a {key} case lists {entry!r}; expected {how}")
            entries.append((key, image, label))
    cases, listed = [], {}
    for key, image, label in entries:
        path = _absolute(root / image)
        if path in listed:
            raise SourceError(f"{where}: {image} is listed twice ({listed[path]} and {key})")
        listed[path] = key
        case_id = path.name[: -len(ending)] if path.name.endswith(ending) else path.stem
        split = path.with_name(f"{case_id}_0000{ending}")
        mask = str(_absolute(root / label)) if label else None
        if path.exists() or not split.exists():  # one 4D file (a missing one is named)
            channels = {n: str(path) for n in names}
            frames = {n: i for i, n in enumerate(names)}
        else:  # nnU-Net v1: a file per sequence
            channels = {n: str(path.with_name(f"{case_id}_{i:04d}{ending}"))
                        for i, n in enumerate(names)}  # fmt: skip
            frames = {}
        cases.append(Case(case_id, case_id, channels, mask, "msd", frames=frames))
    return cases


def _found_cases(root: Path, names: list[str], ending: str, query: SourceQuery) -> list[Case]:
    """Cases of an nnU-Net v2 dataset: every ``<case>_0000<ending>`` in an image folder.
    An ``imagesTr`` case without its label map is unlabelled, with a warning, as is a
    label map without images."""
    cases, trained, unlabelled = [], set(), []
    for folder in IMAGE_FOLDERS:
        images = root / folder
        if not images.is_dir():
            continue
        first = f"_0000{ending}"  # "._" files are macOS resource forks, not images
        ids = sorted(n[: -len(first)] for n in os.listdir(images)
                     if n.endswith(first) and not n.startswith("."))  # fmt: skip
        for case_id in ids:
            label = root / "labelsTr" / f"{case_id}{ending}"
            channels = {n: str(images / f"{case_id}_{i:04d}{ending}") for i, n in enumerate(names)}
            mask = str(label) if folder == "imagesTr" and label.is_file() else None
            cases.append(Case(case_id, case_id, channels, mask, "msd"))
            if folder == "imagesTr":
                trained.add(case_id)
                unlabelled += [] if mask else [case_id]
    labels = root / "labelsTr"
    orphans = sorted(n for n in (os.listdir(labels) if labels.is_dir() else [])
                     if n.endswith(ending) and not n.startswith(".")
                     and n[: -len(ending)] not in trained)  # fmt: skip
    _warn_some(query, root, f"imagesTr case(s) without labelsTr/<case>{ending}, read as "
               "unlabelled", unlabelled)  # fmt: skip
    _warn_some(query, root, "labelsTr file(s) of no imagesTr case, not read", orphans)
    return cases


def _warn_some(query: SourceQuery, root: Path, what: str, items: list[str]) -> None:
    if items:
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        query.warn(f"{root}: {len(items)} {what}: {', '.join(items[:3])}{more}")


def _find(input_path: str | os.PathLike, query: SourceQuery) -> list[Case]:
    """The cases of a task folder (module doc), narrowed to one image folder if given."""
    root, only = task_folder(input_path)
    where = root / "dataset.json"
    spec = task_spec(root)
    names = _channels(spec, where)
    convention = _convention(spec, where, query.label_convention, query.warn)
    ending = spec.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise SourceError(f"{where}: file_ending must be like '.nii.gz', got {ending!r}")
    listed = "training" in spec or "test" in spec
    if listed:
        cases = _listed_cases(spec, root, names, ending)
    else:
        cases = _found_cases(root, names, ending, query)
    if only is not None:
        cases = [c for c in cases if Path(next(iter(c.channels.values()))).parent.name == only]
    if not cases:
        how = "dataset.json lists none" if listed else f"no <case>_0000{ending} file"
        raise SourceError(f"no cases found in {root / only if only else root} ({how})")
    cases = [
        replace(c, label_convention=convention,
                patient_id=patient_of(c.case_id, query.patient_pattern))
        for c in cases
    ]  # fmt: skip
    return sorted_unique(cases)


#: This layout, registered by the package.
LAYOUT = Layout(
    "decathlon",
    _find,  # a task folder holds dataset.json; other folders are looked at by name first
    detect=lambda folder, names: ("dataset.json" in names or folder.name in TASK_FOLDERS)
    and is_task_input(folder),
)
