"""A user's label convention from a JSON/YAML file or a dataset's ``dataset.json``, and
the conventions BraTS case names imply."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from brainseg_d2.labels.conventions import (
    CONVENTIONS,
    LabelConvention,
    get_convention,
    register_convention,
    user_conventions,
)
from brainseg_d2.labels.tissue import TISSUE_ALIASES

#: BraTS 2023+ tasks that share the ``BraTS-XXX-#####-###`` case names.
BRATS_TASKS = ("GLI", "MET", "MEN", "PED", "SSA")
#: A BraTS 2023+ case id, e.g. ``BraTS-GLI-00000-000`` (group 1: the task).
BRATS2023_CASE = re.compile(r"BraTS-(" + "|".join(BRATS_TASKS) + r")-\d{5}-\d{3}")
#: A BraTS 2018-2021 case id: ``Brats18_2013_2_1``, ``BraTS19_CBICA_AAB_1``,
#: ``BraTS20_Training_001``, ``BraTS2021_00000``.
BRATS2021_CASE = re.compile(
    r"(?<![A-Za-z0-9])(?:BraTS|Brats)(?:20)?\d{2}_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"
)
#: Convention of each BraTS 2023+ task's label maps. GLI gets brats2024, a
#: superset of the 2023 GLI values (4 = resection cavity never occurs in 2023
#: maps). PED follows 2023 here; BraTS 2024 PED maps need ``brats2024-ped``.
BRATS_TASK_CONVENTIONS = {
    "GLI": "brats2024",
    "MET": "brats2023",
    "MEN": "brats2023",
    "PED": "brats2023",
    "SSA": "brats2023",
}


def brats_task(name: str) -> str | None:
    """BraTS 2023+ task of a case or file name (``GLI``, ``MET``, ``MEN``,
    ``PED``, ``SSA``), ``"2021"`` for a BraTS 2018-2021 name, None otherwise."""
    name = os.path.basename(str(name))
    m = BRATS2023_CASE.search(name)
    if m:
        return m.group(1)
    return "2021" if BRATS2021_CASE.search(name) else None


def detect_convention(name: str) -> str | None:
    """Label convention named by a BraTS case or file name; None if not a BraTS name.

    Args:
        name: a case id or file name, e.g. ``BraTS-MET-00001-000-seg.nii.gz`` or
            ``BraTS2021_00000_seg.nii.gz`` (folders are ignored).

    Returns:
        ``brats2021`` for 2018-2021 names; for 2023+ names the task's entry in
        :data:`BRATS_TASK_CONVENTIONS`; None for other names.
    """
    task = brats_task(name)
    if task is None:
        return None
    return "brats2021" if task == "2021" else BRATS_TASK_CONVENTIONS[task]


def tissue_code(name: str, where: str) -> int:
    if name in TISSUE_ALIASES:
        return TISSUE_ALIASES[name]
    raise ValueError(f"{where}: tissue {name!r} is not one of {sorted(TISSUE_ALIASES)}")


#: The keys of a convention file.
CONVENTION_KEYS = frozenset({"name", "labels", "regions", "tissue"})
#: Label values a convention may use: those of an unsigned 16-bit label map.
MAX_LABEL_VALUE = 65535


def _label_value(key, name: str) -> int:
    """A label value from a file's key: an integer (YAML) or the digits of one (JSON)."""
    if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str)
                                                                and key.strip().isdigit())):
        raise ValueError(f"convention {name!r}: label value {key!r} is not an integer")
    value = int(key)
    if not 0 <= value <= MAX_LABEL_VALUE:
        raise ValueError(f"convention {name!r}: label value {value} is outside 0-{MAX_LABEL_VALUE}")
    return value


def convention_from_dict(data: dict, *, name: str = "custom") -> LabelConvention:
    """Build a user's convention from a mapping (the content of a convention file).

    Keys:

    * ``labels`` (required): raw value (0-65535) -> class name, e.g. ``{1: "lesion"}``;
      each value once; value 0 is background whatever its name (a tissue's name
      or a class that a region or ``tissue`` uses is an error there).
    * ``regions`` (optional): region name -> list of class names whose union it
      is, e.g. ``{"WT": ["lesion", "edema"]}``. Default: the BraTS regions the
      classes cover when they are named after tissues, else none.
    * ``tissue`` (optional): class name -> canonical tissue (``NCR``, ``ED``,
      ``ET``, ``RC`` or their long names), needed only where the converter or
      predictor use the convention. Classes named after a tissue
      (:data:`TISSUE_ALIASES`) get it without saying.
    * ``name`` (optional): the convention's name (default ``name``).

    Raises:
        ValueError: a missing, unknown or malformed key, a value given twice, a
            value that is not an integer of 1-65535, a class name that is not text;
            naming it.
    """
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise ValueError(f"convention {name!r}: needs a 'labels' mapping of value -> class name")
    name = str(data.get("name", name))
    unknown_keys = sorted(str(k) for k in set(data) - CONVENTION_KEYS)
    if unknown_keys:  # a misspelt 'regions' would silently score the default regions
        raise ValueError(f"convention {name!r}: unknown keys {unknown_keys} (known: "
                         f"{sorted(CONVENTION_KEYS)})")  # fmt: skip
    classes: dict[int, str] = {}
    background = None
    for key, cls in data["labels"].items():
        value = _label_value(key, name)
        if not isinstance(cls, str) or not cls.strip():
            raise ValueError(f"convention {name!r}: label {value} needs a class name (a text), "
                             f"got {cls!r}")  # fmt: skip
        if value == 0:  # background, whatever it is called, unless named as tumour
            background = cls
            continue
        if value in classes:
            raise ValueError(f"convention {name!r}: label value {value} is given twice "
                             f"({classes[value]!r} and {cls!r})")  # fmt: skip
        classes[value] = cls
    if not classes:
        raise ValueError(f"convention {name!r}: 'labels' names no class")
    members = {m for v in (data.get("regions") or {}).values() if isinstance(v, (list, str))
               for m in ([v] if isinstance(v, str) else v)}  # fmt: skip
    if background is not None and (background in TISSUE_ALIASES or background in members
                                   or background in (data.get("tissue") or {})):
        raise ValueError(f"convention {name!r}: value 0 is background, not {background!r}; "
                         "give that class another value")  # fmt: skip
    tissue_names = data.get("tissue") or {}
    if not isinstance(tissue_names, dict):
        raise ValueError(f"convention {name!r}: 'tissue' must map class name -> tissue")
    unknown = sorted(set(tissue_names) - set(classes.values()))
    if unknown:
        raise ValueError(f"convention {name!r}: 'tissue' names unknown classes {unknown}")
    raw_to_tissue = {0: 0}
    for value, cls in classes.items():
        if cls in tissue_names:
            raw_to_tissue[value] = tissue_code(str(tissue_names[cls]), f"convention {name!r}")
        elif cls in TISSUE_ALIASES:
            raw_to_tissue[value] = TISSUE_ALIASES[cls]
    regions = data.get("regions")
    if regions is not None:
        if not isinstance(regions, dict):
            raise ValueError(f"convention {name!r}: 'regions' must map region -> list of classes")
        regions = {
            str(k): tuple([v] if isinstance(v, str) else list(v or [])) for k, v in regions.items()
        }
    return LabelConvention(name, raw_to_tissue, classes=classes, regions=regions,
                           description=f"user convention {name}")  # fmt: skip


def load_convention(path: str | os.PathLike) -> LabelConvention:
    """Read a user's convention from a ``.json``, ``.yaml`` or ``.yml`` file.

    Example (YAML)::

        name: my-lesions
        labels: {1: lesion, 2: edema}
        regions: {WT: [lesion, edema], core: [lesion]}
        tissue: {lesion: NCR, edema: ED}   # only for the converter/predictor

    See :func:`convention_from_dict` for the keys.

    Raises:
        ValueError: unreadable file or bad content; the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_unique_keys)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = _load_yaml_unique(text)
        else:
            raise ValueError("expected a .json, .yaml or .yml file")
        convention = convention_from_dict(data, name=path.stem)
        if convention.name in CONVENTIONS:  # its numbers would pass for the built-in's
            raise ValueError(f"name {convention.name!r} is a built-in convention's; give "
                             "yours another name")  # fmt: skip
        return convention
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError without importing yaml up front
        what = " ".join(str(exc).split())  # PyYAML's message spans lines
        raise ValueError(f"{path}: cannot parse ({type(exc).__name__}: {what})") from None


def _unique_keys(pairs: list[tuple]) -> dict:
    """A JSON object's pairs as a dict; a key given twice is an error, not the last one."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice")
        out[key] = value
    return out


def _load_yaml_unique(text: str):
    """``yaml.safe_load`` that refuses a mapping key given twice (PyYAML keeps the last)."""
    import yaml  # only needed here; PyYAML comes with detectron2/fvcore

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        for i, key in enumerate(keys):
            earlier = [k for k in keys[:i] if k == key]  # 1 == true: one key of a dict
            if earlier:
                what = (f"key {key!r} is given twice" if repr(earlier[0]) == repr(key)
                        else f"keys {earlier[0]!r} and {key!r} are one key")  # fmt: skip
                raise ValueError(f"{what} (line {node.start_mark.line + 1})")
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def resolve_convention(spec: str | os.PathLike | LabelConvention) -> LabelConvention:
    """A convention from a name (built-in or registered, :func:`get_convention`) or a
    ``.json``/``.yaml`` file (:func:`load_convention`)."""
    if isinstance(spec, LabelConvention):
        return spec
    spec = str(spec)
    if spec in CONVENTIONS or spec in user_conventions():
        return get_convention(spec)
    if spec.lower().endswith((".json", ".yaml", ".yml")):
        return load_convention(spec)
    return get_convention(spec)  # raises, naming the known ones


def register_dataset_conventions(info: Mapping) -> None:
    """Register the users' conventions a converted dataset's ``dataset.json`` defines
    (``options.label_conventions``: name -> :func:`convention_to_dict` form, written
    by the converter).

    Raises:
        ValueError: a malformed definition, or a name taken by another one.
    """
    for name, data in ((info.get("options") or {}).get("label_conventions") or {}).items():
        register_convention(convention_from_dict(data, name=name))
