"""Finding cases (co-registered channels + optional labels) on disk, one module per layout.

3D layouts (cases are :class:`Case`): ``brats`` (:mod:`.brats`), ``decathlon``
(:mod:`.decathlon`), ``pairs`` (:mod:`.pairs`), ``csv`` (:mod:`.manifest`). 2D layouts (cases are
:class:`SliceCase`): ``tcga_lgg`` (:mod:`.tcga_lgg`), ``via`` (:mod:`.via`).
Each module defines its :class:`~.registry.Layout`, registered here;
:func:`find_cases` looks the layout up, or detects it. Every case follows
:class:`CaseSource`: it checks itself from headers (``check``) and reads itself
into a preprocessed volume with its labels (``load``), so the converter needs
no type dispatch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from brainseg_d2.data.sources import brats, decathlon, manifest, pairs, tcga_lgg, via
from brainseg_d2.data.sources.brats import BRATS_STYLES, find_brats_cases
from brainseg_d2.data.sources.common import CaseSource, SourceError, case_error, walk
from brainseg_d2.data.sources.decathlon import is_task_input
from brainseg_d2.data.sources.manifest import read_manifest
from brainseg_d2.data.sources.pairs import find_pair_cases, parse_channel_globs
from brainseg_d2.data.sources.registry import (
    LAYOUT_REGISTRY,
    Layout,
    SourceQuery,
    get_layout,
    register_layout,
)
from brainseg_d2.data.sources.slices import Region, SliceCase, SliceFile
from brainseg_d2.data.sources.tcga_lgg import find_tcga_lgg_cases
from brainseg_d2.data.sources.via import find_via_cases
from brainseg_d2.data.sources.volume import Case

__all__ = [
    "BRATS_STYLES",
    "LAYOUTS",
    "Case",
    "CaseSource",
    "Layout",
    "Region",
    "SliceCase",
    "SliceFile",
    "SourceError",
    "SourceQuery",
    "case_error",
    "detect_layout",
    "find_brats_cases",
    "find_cases",
    "is_task_input",
    "find_pair_cases",
    "find_tcga_lgg_cases",
    "find_via_cases",
    "get_layout",
    "parse_channel_globs",
    "read_manifest",
    "register_layout",
    "walk",
]

# The order --layout lists them in.
for _module in (brats, decathlon, pairs, manifest, tcga_lgg, via):
    register_layout(_module.LAYOUT)

#: The layouts :func:`find_cases` knows.
LAYOUTS = tuple(LAYOUT_REGISTRY)


def detect_layout(input_path: str | os.PathLike) -> str:
    """The folder layout of ``input_path`` among those that can be detected.

    Args:
        input_path: input folder (a ``.json`` file counts as ``via``).

    Returns:
        the one layout found (``brats`` when none is, so that its finder
        reports what it expected).

    Raises:
        SourceError: the folder holds more than one layout.
    """
    root = Path(input_path)
    if root.suffix.lower() == ".json":
        return "via"
    detectable = [layout for layout in LAYOUT_REGISTRY.values() if layout.detect is not None]
    found = set()
    for dirpath, _, filenames in walk(root) if root.is_dir() else ():
        for layout in detectable:
            if layout.detect(Path(dirpath), filenames):
                found.add(layout.name)
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
    on_warning: Callable[[str], None] | None = None,
) -> list[CaseSource]:
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
            name must go with the files' names (2023-style names also take
            ``brats2024`` and ``brats2024-ped``), while a user's registered
            convention (:func:`~brainseg_d2.labels.register_convention`) applies
            to every case; for ``via`` see :func:`find_via_cases`.
        patient_pattern: regex giving the patient id from the case id.
        on_warning: called with one-line warnings about input passed over
            (default: logged).

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: unknown layout, or input the layout cannot read.
    """
    if layout == "auto":
        if manifest or str(input_path).lower().endswith(".csv"):
            layout = "csv"
        elif image_globs:
            layout = "pairs"
        else:
            layout = detect_layout(input_path)
    query = SourceQuery(
        image_globs=tuple(image_globs),
        mask_glob=mask_glob,
        manifest=manifest,
        label_convention=label_convention,
        patient_pattern=patient_pattern,
        on_warning=on_warning,
    )
    return get_layout(layout).find(input_path, query)
