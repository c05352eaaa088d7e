"""``tcga_lgg``: the Kaggle "LGG MRI segmentation" layout of TCGA lower-grade gliomas.

``<patient_folder>/<case>_<N>.tif`` with ``<case>_<N>_mask.tif``, found at any
depth (``.tiff``/``.png`` work too). Each image is a 3-channel RGB slice whose
channels are pre-contrast, FLAIR and post-contrast (named ``pre_contrast``,
``flair``, ``post_contrast``); masks are 0/255 (convention ``binary``). The
slices of one ``<case>`` in one folder form one volume ordered by N (slice
index = position in that order, gaps in N closed). The patient id is the folder
name (or ``patient_pattern`` on the case id).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from brainseg_d2.data.sources.common import (
    SourceError,
    check_input_dir,
    patient_of,
    sorted_unique,
    walk,
)
from brainseg_d2.data.sources.registry import Layout, SourceQuery
from brainseg_d2.data.sources.slices import SliceCase, SliceFile

TCGA_CHANNELS = ("pre_contrast", "flair", "post_contrast")
_TCGA_FILE = re.compile(r"^(?P<case>.+)_(?P<n>\d+)(?P<mask>_mask)?(?P<ext>\.tiff?|\.png)$", re.I)


def is_tcga_mask_name(name: str) -> bool:
    """True for a file name like ``<case>_<N>_mask.tif``."""
    match = _TCGA_FILE.match(name)
    return bool(match and match["mask"])


def find_tcga_lgg_cases(
    root: str | os.PathLike,
    *,
    label_convention: str = "binary",
    patient_pattern: str | None = None,
) -> list[SliceCase]:
    """Find TCGA LGG style slice folders under ``root`` (any depth).

    Args:
        root: folder holding the patient folders.
        label_convention: convention of the masks.
        patient_pattern: regex on the case id giving the patient id; default:
            the folder name.

    Returns:
        cases sorted by case id. A slice whose image or mask is missing keeps
        the expected path (reported when the case is checked).

    Raises:
        SourceError: missing/empty folder, no slices, a slice number twice.
    """
    root = Path(root).resolve()
    check_input_dir(root)
    groups: dict[tuple[Path, str], dict[int, dict[str, str]]] = {}
    for dirpath, _, filenames in walk(root):
        for name in filenames:
            match = _TCGA_FILE.match(name)
            if not match:
                continue
            kind = "mask" if match["mask"] else "image"
            entry = groups.setdefault((Path(dirpath), match["case"]), {})
            files = entry.setdefault(int(match["n"]), {})
            if kind in files:
                raise SourceError(
                    f"slice {match['n']} of '{match['case']}' twice: {files[kind]} and "
                    f"{Path(dirpath) / name}"
                )
            files[kind] = str(Path(dirpath) / name)
    if not any("mask" in f for entry in groups.values() for f in entry.values()):
        raise SourceError(
            f"no TCGA LGG slices found under {root} (expected <patient>/<case>_<N>.tif "
            f"with <case>_<N>_mask.tif)"
        )
    cases = []
    for (folder, case_id), entry in groups.items():
        slices = []
        for n in sorted(entry):
            files = entry[n]
            if "image" in files:
                image = files["image"]
                stem, ext = os.path.splitext(image)
                mask = files.get("mask", f"{stem}_mask{ext}")
            else:
                mask = files["mask"]
                stem, ext = os.path.splitext(mask)
                image = stem[: -len("_mask")] + ext
            slices.append(SliceFile(n, image, mask))
        patient = patient_of(case_id, patient_pattern) if patient_pattern else folder.name
        cases.append(
            SliceCase(case_id, patient, "tcga_lgg", TCGA_CHANNELS, tuple(slices), label_convention)
        )
    return sorted_unique(cases)


def _find(input_path: str | os.PathLike, query: SourceQuery) -> list[SliceCase]:
    return find_tcga_lgg_cases(
        input_path,
        label_convention=query.label_convention or "binary",
        patient_pattern=query.patient_pattern,
    )


#: This layout, registered by the package.
LAYOUT = Layout("tcga_lgg", _find, detect=lambda folder, names: any(map(is_tcga_mask_name, names)))
