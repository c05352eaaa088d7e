"""The one place that defines label conventions and segmentation targets.

Raw label maps on disk follow a *convention* (which integer means which tissue).
The converter maps every convention to the same internal tissue classes, and a
*target* then says what the detector learns:

==========  =====================================================  ==============
target      categories (COCO ``category_id`` -> name)               nested?
==========  =====================================================  ==============
labels      1 necrotic (NCR/NET), 2 edema (ED), 3 enhancing (ET)    no (disjoint)
regions     1 WT (whole tumour), 2 TC (tumour core), 3 ET            yes
binary      1 tumour                                                 no
==========  =====================================================  ==============

BraTS regions are derived from tissue classes: WT = NCR | ED | ET,
TC = NCR | ET, ET = ET. With the ``regions`` target one pixel can belong to
several categories, so each category is its own binary mask.

Internal tissue codes (``TISSUE_*``) are the values of a *canonical label map*:
0 background, 1 NCR, 2 ED, 3 ET, and 4 RC (resection cavity, BraTS 2024
post-treatment glioma: a class of its own, in no tumour region and in no
target's category). Every raw convention maps into them, and predictions map
back out through :func:`tissue_to_raw`.

For evaluation a convention also names its *classes* (raw value -> class name)
and its *regions* (region name -> the classes whose union it is):

===============  ==============================================  =====================
convention       classes (raw value: name)                        regions
===============  ==============================================  =====================
brats2021        1 necrotic, 2 edema, 4 enhancing                 WT, TC, ET
brats2023        1 necrotic, 2 edema, 3 enhancing                 WT, TC, ET
brats2024        brats2023 + 4 resection_cavity                   WT, TC, ET, RC
brats2024-ped    1 enhancing, 2 non_enhancing, 3 cystic, 4 edema  WT, TC, ET
binary           1 tumour                                         WT
===============  ==============================================  =====================

:func:`detect_convention` reads it from BraTS case names (``Brats18_...``,
``BraTS2021_...``: brats2021; ``BraTS-GLI-00000-000``: brats2024, whose values
are a superset of a 2023 GLI map; MET, MEN, PED, SSA: brats2023), and
:func:`load_convention` reads a user's own from a small JSON or YAML file;
:func:`register_convention` makes it known by name (the converter records its
definition in ``dataset.json``, :func:`register_dataset_conventions` reads it back).
Predictions are written in :func:`prediction_convention`: the input case's own
unless one is requested, and only if the model can write every class of it
(:func:`check_writable`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TISSUE_BACKGROUND = 0
TISSUE_NCR = 1  # necrotic / non-enhancing tumour core
TISSUE_ED = 2  # peritumoural edema
TISSUE_ET = 3  # enhancing tumour
TISSUE_RC = 4  # resection cavity (BraTS 2024 post-treatment glioma); not tumour
#: Largest tissue code; canonical label maps hold 0..TISSUE_MAX.
TISSUE_MAX = TISSUE_RC
TISSUE_NAMES = {
    TISSUE_NCR: "necrotic",
    TISSUE_ED: "edema",
    TISSUE_ET: "enhancing",
    TISSUE_RC: "resection_cavity",
}
#: Short names a user's convention file may give for each tissue code.
TISSUE_ALIASES = {
    "NCR": TISSUE_NCR, "NETC": TISSUE_NCR, "NET": TISSUE_NCR, "necrotic": TISSUE_NCR,
    "ED": TISSUE_ED, "SNFH": TISSUE_ED, "edema": TISSUE_ED,
    "ET": TISSUE_ET, "enhancing": TISSUE_ET,
    "RC": TISSUE_RC, "resection_cavity": TISSUE_RC,
}  # fmt: skip

#: BraTS evaluation regions as sets of tissue codes (tumour regions only: the
#: resection cavity is in none of them).
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (TISSUE_NCR, TISSUE_ED, TISSUE_ET),
    "TC": (TISSUE_NCR, TISSUE_ET),
    "ET": (TISSUE_ET,),
}
#: Region of the resection cavity, reported beside the tumour regions where a
#: convention has that class (it is not part of WT).
RC_REGION = "RC"


@dataclass(frozen=True)
class LabelConvention:
    """How raw integer labels on disk map to tissue codes, classes and regions.

    Attributes:
        name: identifier stored in ``dataset.json``.
        raw_to_tissue: raw label value -> tissue code (0 for background). A
            user's convention may leave classes without a tissue code; such a
            convention serves evaluation only (:func:`raw_to_tissue` refuses it).
        classes: raw value -> class name, foreground values only (0 is always
            background). Default: the tissue names of ``raw_to_tissue``.
        regions: region name -> class names whose union is the region. Default:
            the BraTS regions (:data:`REGIONS`) the classes cover, plus ``RC``
            when the convention has the resection cavity.
        description: one line for help texts.
    """

    name: str
    raw_to_tissue: dict[int, int]
    classes: dict[int, str] = field(default=None)  # type: ignore[assignment]
    regions: dict[str, tuple[str, ...]] = field(default=None)  # type: ignore[assignment]
    description: str = ""

    def __post_init__(self) -> None:
        raw_to_tissue = {int(r): int(t) for r, t in self.raw_to_tissue.items()}
        if raw_to_tissue.get(0, 0) != 0:
            raise ValueError(f"convention {self.name!r}: raw value 0 must be background")
        raw_to_tissue.setdefault(0, 0)
        bad = {r: t for r, t in raw_to_tissue.items() if r < 0 or not 0 <= t <= TISSUE_MAX}
        if bad:
            raise ValueError(
                f"convention {self.name!r}: raw values must be >= 0 and tissue codes "
                f"0-{TISSUE_MAX}, got {bad}"
            )
        classes = self.classes
        if classes is None:
            classes = {r: TISSUE_NAMES[t] for r, t in sorted(raw_to_tissue.items()) if r and t}
        classes = {int(v): str(n) for v, n in classes.items()}
        if 0 in classes or any(v < 0 for v in classes):
            raise ValueError(
                f"convention {self.name!r}: class values must be > 0 (0 is background), "
                f"got {sorted(classes)}"
            )
        if len(set(classes.values())) != len(classes):
            raise ValueError(f"convention {self.name!r}: class names repeat: {classes}")
        unknown_raw = sorted(set(raw_to_tissue) - set(classes) - {0})
        if unknown_raw:
            raise ValueError(
                f"convention {self.name!r}: raw values {unknown_raw} have a tissue code "
                "but no class name"
            )
        regions = self.regions
        if regions is None:
            regions = _default_regions(raw_to_tissue, classes)
        regions = {str(k): tuple(str(c) for c in v) for k, v in regions.items()}
        for region, members in regions.items():
            missing = [c for c in members if c not in classes.values()]
            if not members or missing:
                raise ValueError(
                    f"convention {self.name!r}: region {region!r} must be a non-empty list "
                    f"of its classes {sorted(classes.values())}, got {list(members)}"
                )
        object.__setattr__(self, "raw_to_tissue", raw_to_tissue)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "regions", regions)

    @property
    def tissue_to_raw(self) -> dict[int, int]:
        """Tissue code -> raw value; where several raw values share a tissue code
        (e.g. BraTS 2024 PED's non-enhancing and cystic parts), the smallest wins."""
        out: dict[int, int] = {}
        for raw, tissue in sorted(self.raw_to_tissue.items()):
            out.setdefault(tissue, raw)
        return out

    @property
    def values(self) -> tuple[int, ...]:
        """Every raw value a label map of this convention may hold, 0 included."""
        return (0, *sorted(self.classes))

    def class_values(self, names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
        """Raw values of the named classes (a region's members), sorted."""
        by_name = {n: v for v, n in self.classes.items()}
        return tuple(sorted(by_name[n] for n in names))

    def evaluation_names(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """What evaluation scores: ``(group, name, raw values)`` for every region
        (group ``region``), then every class (group ``class``) that is not already
        a region of the same values (BraTS ET is the enhancing class: scored once)."""
        out = [("region", r, self.class_values(m)) for r, m in self.regions.items()]
        seen = {values for _, _, values in out}
        for value, name in sorted(self.classes.items()):
            if (value,) not in seen:
                out.append(("class", name, (value,)))
        return out


def _default_regions(
    raw_to_tissue: dict[int, int], classes: dict[int, str]
) -> dict[str, tuple[str, ...]]:
    """BraTS regions a convention's tissue codes cover (all of each region's codes)."""
    regions: dict[str, tuple[str, ...]] = {}
    present = {t for r, t in raw_to_tissue.items() if r in classes}
    for region, codes in REGIONS.items():
        if set(codes) <= present:
            regions[region] = tuple(
                classes[r] for r, t in sorted(raw_to_tissue.items()) if r in classes and t in codes
            )
    if TISSUE_RC in present:
        regions[RC_REGION] = tuple(
            classes[r] for r, t in sorted(raw_to_tissue.items()) if t == TISSUE_RC and r in classes
        )
    return regions


CONVENTIONS: dict[str, LabelConvention] = {
    # BraTS 2018-2021: 1 NCR/NET, 2 edema, 4 enhancing (3 unused).
    "brats2021": LabelConvention(
        "brats2021",
        {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED, 4: TISSUE_ET},
        description="BraTS 2018-2021: 1 NCR/NET, 2 edema, 4 enhancing",
    ),
    # BraTS 2023+ GLI, MET, MEN, SSA, PED 2023: 1 NCR, 2 edema, 3 enhancing.
    "brats2023": LabelConvention(
        "brats2023",
        {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED, 3: TISSUE_ET},
        description="BraTS 2023+ (GLI, MET, MEN, PED 2023, SSA): 1 NCR, 2 edema, 3 enhancing",
    ),
    # BraTS 2024 post-treatment glioma: brats2023 plus 4 = resection cavity, which
    # the official evaluator scores as its own group and leaves out of WT/TC.
    "brats2024": LabelConvention(
        "brats2024",
        {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED, 3: TISSUE_ET, 4: TISSUE_RC},
        description="BraTS 2024 GLI post-treatment: 1 NETC, 2 SNFH, 3 ET, 4 resection cavity",
    ),
    # BraTS 2024 PED: 1 ET, 2 non-enhancing tumour, 3 cystic component, 4 edema;
    # TC = ET | NET | CC, WT = TC | ED (the official BraTS 2024 PED groups). Both
    # core parts are NCR in tissue codes, so the converter trains them as one.
    "brats2024-ped": LabelConvention(
        "brats2024-ped",
        {0: 0, 1: TISSUE_ET, 2: TISSUE_NCR, 3: TISSUE_NCR, 4: TISSUE_ED},
        classes={1: "enhancing", 2: "non_enhancing", 3: "cystic", 4: "edema"},
        regions={
            "WT": ("enhancing", "non_enhancing", "cystic", "edema"),
            "TC": ("enhancing", "non_enhancing", "cystic"),
            "ET": ("enhancing",),
        },
        description="BraTS 2024 PED: 1 ET, 2 non-enhancing, 3 cystic, 4 edema",
    ),
    # Binary tumour masks (the converter binarises 0/255 masks to 0/1). Tumour is
    # coded as edema so that it counts towards WT; only the "binary" target makes
    # sense for such data.
    "binary": LabelConvention(
        "binary",
        {0: 0, 1: TISSUE_ED},
        classes={1: "tumour"},
        regions={"WT": ("tumour",)},
        description="binary masks: 1 tumour",
    ),
}


@dataclass(frozen=True)
class Target:
    """What the detector learns: a list of categories, each a set of tissue codes.

    Attributes:
        name: ``labels``, ``regions`` or ``binary``.
        categories: category name -> tissue codes that form its mask. Order gives
            COCO ``category_id`` 1, 2, 3, ...
        nested: True when categories overlap (one pixel in several categories).
    """

    name: str
    categories: dict[str, tuple[int, ...]]
    nested: bool

    @property
    def category_names(self) -> list[str]:
        return list(self.categories)

    def coco_categories(self) -> list[dict]:
        """COCO ``categories`` list with ids starting at 1."""
        return [
            {"id": i + 1, "name": n, "supercategory": "tumour"}
            for i, n in enumerate(self.categories)
        ]

    def masks_from_tissue(self, tissue: np.ndarray) -> np.ndarray:
        """Split a canonical tissue map into one boolean mask per category.

        Args:
            tissue: integer array of any shape (..., ) holding tissue codes
                0-``TISSUE_MAX``. The resection cavity (4) is in no category of
                the built-in targets: it counts as background, as in BraTS 2024.

        Returns:
            bool array of shape (C, ...) with C = number of categories.

        Raises:
            ValueError: a value outside 0-``TISSUE_MAX``.
        """
        tissue = np.asarray(tissue)
        if tissue.size and (tissue.min() < 0 or tissue.max() > TISSUE_MAX):
            raise ValueError(
                f"tissue codes must be 0-{TISSUE_MAX}, got values {tissue.min()}..{tissue.max()}"
            )
        # One table lookup gives each voxel a bit per category it belongs to; an
        # isin per category costs several times more (this runs per slice).
        table = np.zeros(TISSUE_MAX + 1, dtype=np.uint8)
        for bit, codes in enumerate(self.categories.values()):
            table[list(codes)] |= 1 << bit
        bits = np.take(table, tissue)
        return np.stack([(bits & (1 << b)).astype(bool) for b in range(len(self.categories))])

    def tissue_from_masks(self, masks: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`masks_from_tissue` for predicted category masks.

        Args:
            masks: bool array (C, ...) in category order.

        Returns:
            uint8 tissue map (...). For ``labels`` later categories win ties; for
            ``regions`` a pixel is ET if in ET, else NCR if in TC, else ED if in WT
            (the BraTS way of turning nested regions back into labels); for
            ``binary`` tumour becomes edema-coded whole tumour.
        """
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim < 1 or masks.shape[0] != len(self.categories):
            raise ValueError(
                f"expected {len(self.categories)} category masks for target '{self.name}', "
                f"got array of shape {masks.shape}"
            )
        out = np.zeros(masks.shape[1:], dtype=np.uint8)
        if self.name == "regions":
            wt, tc, et = masks
            out[wt] = TISSUE_ED
            out[tc] = TISSUE_NCR
            out[et] = TISSUE_ET
            return out
        for mask, codes in zip(masks, self.categories.values()):
            out[mask] = codes[0] if len(codes) == 1 else max(codes)
        if self.name == "binary":
            out[masks[0]] = TISSUE_ED
        return out


TARGETS: dict[str, Target] = {
    "labels": Target(
        "labels",
        {"necrotic": (TISSUE_NCR,), "edema": (TISSUE_ED,), "enhancing": (TISSUE_ET,)},
        nested=False,
    ),
    "regions": Target("regions", {k: v for k, v in REGIONS.items()}, nested=True),
    "binary": Target("binary", {"tumour": (TISSUE_NCR, TISSUE_ED, TISSUE_ET)}, nested=False),
}

#: Display colours (RGB 0-255) per category name, used in metadata and overlays.
CATEGORY_COLORS: dict[str, tuple[int, int, int]] = {
    "necrotic": (220, 50, 47),
    "edema": (38, 139, 210),
    "enhancing": (253, 203, 0),
    "WT": (38, 139, 210),
    "TC": (220, 50, 47),
    "ET": (253, 203, 0),
    "tumour": (211, 54, 130),
}


#: Users' conventions known by name in this process (:func:`register_convention`).
_USER_CONVENTIONS: dict[str, LabelConvention] = {}


def get_convention(name: str | LabelConvention) -> LabelConvention:
    """Look up a label convention by name: a built-in one (:data:`CONVENTIONS`) or a
    user's registered with :func:`register_convention`. A convention is returned as
    it is. ``ValueError`` names the bad value."""
    if isinstance(name, LabelConvention):
        return name
    found = CONVENTIONS.get(name) or _USER_CONVENTIONS.get(name)
    if found is None:
        known = sorted(CONVENTIONS) + sorted(_USER_CONVENTIONS)
        raise ValueError(
            f"unknown label convention {name!r}; choose one of {known} "
            "or give a .json/.yaml convention file"
        )
    return found


def register_convention(convention: LabelConvention) -> LabelConvention:
    """Make a user's convention known by its name to :func:`get_convention` (idempotent).

    Converted datasets name their cases' conventions; a user's convention travels
    as its definition (``dataset.json`` ``options.label_conventions``,
    :func:`convention_to_dict`) and is registered again wherever it is read
    (:func:`register_dataset_conventions`).

    Raises:
        ValueError: the name is built in, or registered with another definition.
    """
    taken = CONVENTIONS.get(convention.name) or _USER_CONVENTIONS.get(convention.name)
    if taken is not None and _definition(taken) != _definition(convention):
        raise ValueError(
            f"label convention name {convention.name!r} is already taken by another "
            "definition; give the convention file another 'name'"
        )
    if convention.name not in CONVENTIONS:
        _USER_CONVENTIONS[convention.name] = convention
    return get_convention(convention.name)


def user_conventions() -> dict[str, LabelConvention]:
    """Users' conventions registered in this process, by name."""
    return dict(_USER_CONVENTIONS)


def _definition(convention: LabelConvention) -> tuple:
    return (convention.raw_to_tissue, convention.classes, convention.regions)


def convention_to_dict(convention: LabelConvention) -> dict:
    """A convention as the content of a convention file (JSON-able; inverse of
    :func:`convention_from_dict`): ``name``, ``labels``, ``regions`` and ``tissue``."""
    tissue_names = {TISSUE_NCR: "NCR", TISSUE_ED: "ED", TISSUE_ET: "ET", TISSUE_RC: "RC"}
    return {
        "name": convention.name,
        "labels": {str(v): n for v, n in sorted(convention.classes.items())},
        "regions": {r: list(m) for r, m in convention.regions.items()},
        "tissue": {
            convention.classes[v]: tissue_names[t]
            for v, t in sorted(convention.raw_to_tissue.items())
            if v in convention.classes and t
        },
    }


def register_dataset_conventions(info: Mapping) -> None:
    """Register the users' conventions a converted dataset's ``dataset.json`` defines
    (``options.label_conventions``: name -> :func:`convention_to_dict` form, written
    by the converter).

    Raises:
        ValueError: a malformed definition, or a name taken by another one.
    """
    for name, data in ((info.get("options") or {}).get("label_conventions") or {}).items():
        register_convention(convention_from_dict(data, name=name))


def writable_tissues(target: Target) -> frozenset[int]:
    """Tissue codes :meth:`Target.tissue_from_masks` can write for some category masks.

    ``labels`` and ``regions``: NCR, ED, ET; ``binary``: ED (its whole tumour).
    """
    num = len(target.categories)
    # Every combination of categories at one voxel each: exact and tiny (2^C voxels).
    combos = (np.arange(2**num)[None, :] >> np.arange(num)[:, None]) & 1
    written = target.tissue_from_masks(combos.astype(bool))
    return frozenset(int(t) for t in np.unique(written) if t)


def check_writable(target: Target, convention: LabelConvention) -> None:
    """Refuse a convention with a class that a model of ``target`` cannot write.

    A class can be written when its tissue code is one the target writes
    (:func:`writable_tissues`) and its value is the one :func:`tissue_to_raw`
    writes for that code (BraTS 2024 PED's cystic part shares NCR with the
    non-enhancing part, and a model trained on both as NCR cannot tell them
    apart). The ``binary`` convention takes any tumour tissue as its one class.

    Raises:
        ValueError: one line naming the classes, the target and what it writes.
    """
    writable = writable_tissues(target)
    if convention.name == "binary":
        writable = writable | {TISSUE_NCR, TISSUE_ED, TISSUE_ET}
    written_as = convention.tissue_to_raw
    bad = []
    for value, name in sorted(convention.classes.items()):
        tissue = convention.raw_to_tissue.get(value)
        if tissue is None or tissue not in writable or written_as.get(tissue) != value:
            bad.append(f"'{name}' ({value})")
    if bad:
        what = "class" if len(bad) == 1 else "classes"
        raise ValueError(
            f"a model of target '{target.name}' (it predicts {', '.join(target.categories)}) "
            f"cannot write {what} {', '.join(bad)} of label convention '{convention.name}'; "
            "choose another --label-convention"
        )


def prediction_convention(
    target: Target,
    case_convention: str | LabelConvention,
    requested: str | LabelConvention | None = None,
) -> LabelConvention:
    """The convention a prediction is written in: ``requested`` if given, else the
    case's own (BraTS 2023+ names: ET = 3), checked with :func:`check_writable`.

    Args:
        target: the model's target.
        case_convention: the input case's convention (detected from its file
            names, else the training dataset's).
        requested: a built-in name, a convention file or a convention
            (``--label-convention``); None keeps the case's.

    Raises:
        ValueError: unknown convention, or one the model cannot write (one line).
    """
    convention = resolve_convention(requested if requested is not None else case_convention)
    check_writable(target, convention)
    return convention


# ---------------------------------------------------------------------------
# BraTS case names and user conventions
# ---------------------------------------------------------------------------

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


def _tissue_code(name: str, where: str) -> int:
    if name in TISSUE_ALIASES:
        return TISSUE_ALIASES[name]
    raise ValueError(f"{where}: tissue {name!r} is not one of {sorted(TISSUE_ALIASES)}")


def convention_from_dict(data: dict, *, name: str = "custom") -> LabelConvention:
    """Build a user's convention from a mapping (the content of a convention file).

    Keys:

    * ``labels`` (required): raw value -> class name, e.g. ``{1: "lesion"}``;
      value 0 is background and may be left out.
    * ``regions`` (optional): region name -> list of class names whose union it
      is, e.g. ``{"WT": ["lesion", "edema"]}``. Default: the BraTS regions the
      classes cover when they are named after tissues, else none.
    * ``tissue`` (optional): class name -> canonical tissue (``NCR``, ``ED``,
      ``ET``, ``RC`` or their long names), needed only where the converter or
      predictor use the convention. Classes named after a tissue
      (:data:`TISSUE_ALIASES`) get it without saying.
    * ``name`` (optional): the convention's name (default ``name``).

    Raises:
        ValueError: a missing or malformed key, naming it.
    """
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise ValueError(f"convention {name!r}: needs a 'labels' mapping of value -> class name")
    name = str(data.get("name", name))
    classes: dict[int, str] = {}
    for value, cls in data["labels"].items():
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"convention {name!r}: label value {value!r} is not an integer"
            ) from None
        if value == 0:
            continue  # background, whatever it is called
        classes[value] = str(cls)
    tissue_names = data.get("tissue") or {}
    if not isinstance(tissue_names, dict):
        raise ValueError(f"convention {name!r}: 'tissue' must map class name -> tissue")
    unknown = sorted(set(tissue_names) - set(classes.values()))
    if unknown:
        raise ValueError(f"convention {name!r}: 'tissue' names unknown classes {unknown}")
    raw_to_tissue = {0: 0}
    for value, cls in classes.items():
        if cls in tissue_names:
            raw_to_tissue[value] = _tissue_code(str(tissue_names[cls]), f"convention {name!r}")
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
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # only needed here; PyYAML comes with detectron2/fvcore

            data = yaml.safe_load(text)
        else:
            raise ValueError("expected a .json, .yaml or .yml file")
        return convention_from_dict(data, name=path.stem)
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError without importing yaml up front
        raise ValueError(f"{path}: cannot parse ({type(exc).__name__}: {exc})") from None


def resolve_convention(spec: str | os.PathLike | LabelConvention) -> LabelConvention:
    """A convention from a name (built-in or registered, :func:`get_convention`) or a
    ``.json``/``.yaml`` file (:func:`load_convention`)."""
    if isinstance(spec, LabelConvention):
        return spec
    spec = str(spec)
    if spec in CONVENTIONS or spec in _USER_CONVENTIONS:
        return get_convention(spec)
    if spec.lower().endswith((".json", ".yaml", ".yml")):
        return load_convention(spec)
    return get_convention(spec)  # raises, naming the known ones


def get_target(name: str) -> Target:
    """Look up a segmentation target by name; ``ValueError`` names the bad value."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}") from None


def raw_to_tissue(labels: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Map a raw label array to canonical tissue codes.

    Args:
        labels: integer array of any shape with raw labels.
        convention: the dataset's label convention.

    Returns:
        uint8 array of the same shape with tissue codes 0-``TISSUE_MAX``.

    Raises:
        ValueError: if a label value is not part of the convention (the message
            lists the unexpected values), or is a class of a user's convention
            without a tissue code.
    """
    labels = np.asarray(labels)
    values = np.unique(labels)
    unknown = [int(v) for v in values if int(v) not in convention.raw_to_tissue]
    if unknown:
        untissued = [v for v in unknown if v in convention.classes]
        if untissued:
            names = [convention.classes[v] for v in untissued]
            raise ValueError(
                f"classes {names} (values {untissued}) of convention '{convention.name}' "
                "have no tissue code; give them one under 'tissue' in the convention file"
            )
        raise ValueError(
            f"label values {unknown} are not in convention '{convention.name}' "
            f"(allowed: {sorted(convention.raw_to_tissue)})"
        )
    lut = np.zeros(max(convention.raw_to_tissue) + 1, dtype=np.uint8)
    for raw, tissue in convention.raw_to_tissue.items():
        lut[raw] = tissue
    return lut[labels.astype(np.int64)]


def tissue_to_raw(tissue: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Map canonical tissue codes back to the raw convention (e.g. ET -> 4 for BraTS 2021).

    Args:
        tissue: integer array of tissue codes 0-``TISSUE_MAX``.
        convention: the convention to write.

    Returns:
        uint8 array of the same shape in the raw convention. A tissue the
        convention has no value for is written as 0, except tumour tissues in
        ``binary`` (all tumour).
    """
    lut = np.zeros(TISSUE_MAX + 1, dtype=np.uint8)
    for t, raw in convention.tissue_to_raw.items():
        lut[t] = raw
    # Tissues the convention cannot express (e.g. NCR in "binary") fall back to
    # the convention's tumour label rather than silently vanishing; the resection
    # cavity is not tumour.
    if convention.name == "binary":
        lut[[TISSUE_NCR, TISSUE_ED, TISSUE_ET]] = 1
    return lut[np.asarray(tissue, dtype=np.int64)]
