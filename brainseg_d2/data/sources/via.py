"""``via``: VGG Image Annotator polygon projects.

VIA exports (``via_region_data.json``, or a project file with
``_via_img_metadata``): a dict keyed by ``<filename><size>`` whose values hold
``filename`` and ``regions`` (a list, or a dict in VIA 1), each with
``shape_attributes`` and ``region_attributes``. Shapes: ``polygon``
(``all_points_x``, ``all_points_y``), ``rect`` (``x``, ``y``, ``width``,
``height``), ``circle`` (``cx``, ``cy``, ``r``) and ``ellipse`` (``cx``, ``cy``,
``rx``, ``ry``, ``theta`` in radians); how they are filled:
:mod:`~brainseg_d2.data.sources.slices`. Images lie beside the JSON; the input is one JSON file
or a folder searched (at any depth) for them. Every image is its own one-slice
volume, case id = its path relative to the input folder without extension,
patient id = case id (or ``patient_pattern``). Channels: ``red``, ``green``,
``blue`` (grey images fill all three).

A region's class is the value of its ``class``, ``label``, ``name``,
``category`` or ``type`` attribute (the first present; a lone attribute of
another name counts too; VIA checkbox attributes give the ticked option). Class
names match the target's category names case-insensitively; a region without a
class belongs to the only category of a one-category target (``binary``:
``tumour``). A project naming a category of a multi-class target
(``necrotic``, ``WT``, ...) has convention ``brats2023``, whose raw values 1, 2,
3 are the internal tissue codes (NCR, ED, ET), so predictions written back as
label maps use those; otherwise ``binary``.

Problems inside a case (missing image, unreadable file, polygon with fewer than
3 points or no area, unknown class) are reported by :meth:`SliceCase.check` when
the case is converted, so that ``--skip-bad`` can skip just that case. A JSON
file that does not parse is an error that names it (it may hold annotations).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from brainseg_d2.data.sources.common import (
    SourceError,
    check_input_dir,
    patient_of,
    sorted_unique,
)
from brainseg_d2.data.sources.registry import Layout, SourceQuery
from brainseg_d2.data.sources.slices import Region, SliceCase, SliceFile
from brainseg_d2.labels import TARGETS

RGB_CHANNELS = ("red", "green", "blue")
_CLASS_KEYS = ("class", "label", "name", "category", "type")


def _via_entries(path: Path, strict: bool = False) -> dict | None:
    """The ``<filename><size>`` dict of a VIA export or project file; None if not VIA.

    Raises:
        SourceError: with ``strict``, a file that cannot be read or parsed as JSON.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        if strict:
            raise SourceError(f"{path}: not valid JSON ({exc}); fix or remove it") from None
        return None
    except (OSError, ValueError) as exc:
        if strict:
            raise SourceError(f"{path}: cannot read it ({exc})") from None
        return None
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not data:
        return None
    ok = all(isinstance(v, dict) and "filename" in v and "regions" in v for v in data.values())
    return data if ok else None


def is_via_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a JSON file holding VIA image annotations."""
    path = Path(path)
    return path.suffix.lower() == ".json" and _via_entries(path) is not None


def _region_class(attrs) -> str | None:
    if not isinstance(attrs, dict) or not attrs:
        return None
    key = next((k for k in _CLASS_KEYS if k in attrs), None)
    if key is None:
        if len(attrs) != 1:
            return None
        key = next(iter(attrs))
    value = attrs[key]
    if isinstance(value, dict):  # checkbox attribute: {"option": true, ...}
        value = "|".join(k for k, ticked in value.items() if ticked)
    value = str(value).strip() if value is not None else ""
    return value or None


#: The parameters of VIA's shapes other than polygons.
_SHAPE_KEYS = {
    "rect": ("x", "y", "width", "height"),
    "circle": ("cx", "cy", "r"),
    "ellipse": ("cx", "cy", "rx", "ry"),
}


def _outline(name: str, shape: dict) -> tuple[list[float], list[float]]:
    """A rectangle's corners, or points on a circle's or ellipse's outline (about
    two per pixel of it: the polygon strays from the curve by about 0.01 pixel at most).

    Raises:
        ValueError: a missing, non-numeric or non-positive parameter.
    """
    keys = (*_SHAPE_KEYS[name], *(("theta",) if name == "ellipse" else ()))
    values = [shape.get(k, 0.0 if k == "theta" else None) for k in keys]
    if not all(_finite_number(v) for v in values):
        raise ValueError(f"needs numbers {', '.join(keys)}, got {dict(zip(keys, values))}")
    sizes = values[2 : len(_SHAPE_KEYS[name])]
    if min(sizes) <= 0:
        raise ValueError(f"{', '.join(_SHAPE_KEYS[name][2:])} must be > 0, got {sizes}")
    if name == "rect":
        x, y, w, h = values
        return [x, x + w, x + w, x], [y, y, y + h, y + h]
    cx, cy, rx = values[:3]
    ry = values[3] if name == "ellipse" else rx
    theta = float(values[4]) if name == "ellipse" else 0.0
    n = max(32, math.ceil(4 * math.pi * max(rx, ry)))
    t = [2 * math.pi * k / n for k in range(n)]
    cos, sin = math.cos(theta), math.sin(theta)
    xs = [cx + rx * math.cos(a) * cos - ry * math.sin(a) * sin for a in t]
    ys = [cy + rx * math.cos(a) * sin + ry * math.sin(a) * cos for a in t]
    return xs, ys


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _regions(raw, where: str) -> tuple[Region, ...]:
    if isinstance(raw, dict):  # VIA 1: {"0": region, "1": region, ...}
        raw = list(raw.values())
    if not isinstance(raw, list):
        raise SourceError(f"{where}: 'regions' must be a list or a dict")
    out = []
    for region in raw:
        region = region if isinstance(region, dict) else {}
        shape = region.get("shape_attributes")
        shape = shape if isinstance(shape, dict) else {}
        name = str(shape.get("name", ""))
        xs, ys, problem = shape.get("all_points_x"), shape.get("all_points_y"), None
        if name in _SHAPE_KEYS:
            try:
                xs, ys = _outline(name, shape)
            except ValueError as exc:
                problem = str(exc)
        out.append(
            Region(
                _region_class(region.get("region_attributes")),
                name,
                tuple(xs) if isinstance(xs, list) else (),
                tuple(ys) if isinstance(ys, list) else (),
                problem,
            )
        )
    return tuple(out)


def _via_convention(names: set[str]) -> str:
    multi = {n.lower() for t in TARGETS.values() if len(t.categories) > 1 for n in t.categories}
    return "brats2023" if {n.lower() for n in names} & multi else "binary"


def find_via_cases(
    root: str | os.PathLike,
    *,
    label_convention: str | None = None,
    patient_pattern: str | None = None,
) -> list[SliceCase]:
    """Read VIA polygon annotations; each annotated image is a one-slice case.

    Args:
        root: a VIA JSON file, or a folder searched at any depth for them.
        label_convention: default: ``brats2023`` when a class names a category
            of a multi-class target, else ``binary`` (see the module docstring).
        patient_pattern: regex on the case id giving the patient id (default: case id).

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: no VIA file found, a given file that is not VIA,
            duplicate case ids.
    """
    root = Path(root).resolve()
    if root.is_file():
        if _via_entries(root, strict=True) is None:
            raise SourceError(f"{root} is not a VIA annotation file (dict of filename/regions)")
        files, base = [root], root.parent
    else:
        check_input_dir(root)
        files = sorted(p for p in root.rglob("*.json") if _via_entries(p, strict=True) is not None)
        base = root
        if not files:
            raise SourceError(f"no VIA annotation JSON found under {root}")
    found = []
    for path in files:
        for key, entry in _via_entries(path).items():
            image = path.parent / str(entry["filename"])
            case_id = image.relative_to(base).with_suffix("").as_posix()
            regions = _regions(entry["regions"], f"{path}: {key}")
            found.append((case_id, image, regions, path))
    names = {r.class_name for _, _, regions, _ in found for r in regions if r.class_name}
    convention = label_convention or _via_convention(names)
    cases = [
        SliceCase(
            case_id,
            patient_of(case_id, patient_pattern),
            "via",
            RGB_CHANNELS,
            (SliceFile(0, str(image), None, regions),),
            convention,
            str(path),
        )
        for case_id, image, regions, path in found
    ]
    return sorted_unique(cases)


def _find(input_path: str | os.PathLike, query: SourceQuery) -> list[SliceCase]:
    return find_via_cases(
        input_path, label_convention=query.label_convention, patient_pattern=query.patient_pattern
    )


def _detect(folder: Path, names) -> bool:
    return any(is_via_file(folder / n) for n in names if n.lower().endswith(".json"))


#: This layout, registered by the package.
LAYOUT = Layout("via", _find, detect=_detect)
