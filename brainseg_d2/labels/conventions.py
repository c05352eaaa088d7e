"""Label conventions: which raw value means which tissue, class and region; the
built-in ones, the users' registered by name, and the mapping to and from tissue codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from brainseg_d2.labels.tissue import (
    RC_REGION,
    REGIONS,
    TISSUE_ED,
    TISSUE_ET,
    TISSUE_MAX,
    TISSUE_NAMES,
    TISSUE_NCR,
    TISSUE_RC,
)


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
            regions = default_regions(raw_to_tissue, classes)
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


def default_regions(
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
    # BraTS 2013-2015: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing. Necrosis and
    # non-enhancing tumour are both NCR in tissue codes (BraTS 2017 merged them as 1),
    # so a prediction writes the core as 1.
    "brats2015": LabelConvention(
        "brats2015",
        {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED, 3: TISSUE_NCR, 4: TISSUE_ET},
        classes={1: "necrotic", 2: "edema", 3: "non_enhancing", 4: "enhancing"},
        description="BraTS 2013-2015: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing",
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
    # The Medical Segmentation Decathlon's brain tumours (Task01, BraTS 2016-2017 cases)
    # and nnU-Net's BraTS datasets: 1 edema, 2 non-enhancing tumour, 3 enhancing. Class
    # names are the tissues' (2 is "necrotic", as BraTS 2021's 1 is), so that predictions
    # are rewritten between these and the BraTS conventions by name.
    "msd": LabelConvention(
        "msd",
        {0: 0, 1: TISSUE_ED, 2: TISSUE_NCR, 3: TISSUE_ET},
        description="Medical Segmentation Decathlon Task01 and nnU-Net BraTS: 1 edema, "
        "2 non-enhancing tumour, 3 enhancing",
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
        array of the same shape in the raw convention: uint8, or uint16/int32
        where the convention's values need them. A tissue the convention has no
        value for is written as 0, except tumour tissues in ``binary`` (all tumour).
    """
    top = max(convention.raw_to_tissue)
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32
    lut = np.zeros(TISSUE_MAX + 1, dtype=dtype)
    for t, raw in convention.tissue_to_raw.items():
        lut[t] = raw
    # Tissues the convention cannot express (e.g. NCR in "binary") fall back to
    # the convention's tumour label rather than silently vanishing; the resection
    # cavity is not tumour.
    if convention.name == "binary":
        lut[[TISSUE_NCR, TISSUE_ED, TISSUE_ET]] = 1
    return lut[np.asarray(tissue, dtype=np.int64)]


def relabel(labels: np.ndarray, source: LabelConvention, dest: LabelConvention) -> np.ndarray:
    """Rewrite a label map of convention ``source`` in convention ``dest``, class by class.

    Classes are matched by name (``enhancing`` is 4 in ``brats2021`` and 3 in
    ``brats2023``), so every class of ``source`` that the map holds must have a
    class of the same name in ``dest``.

    Raises:
        ValueError: a value outside ``source``, or a class ``dest`` has no value for
            (the message names both).
    """
    labels = np.asarray(labels)
    values = [int(v) for v in np.unique(labels)]
    unknown = [v for v in values if v != 0 and v not in source.classes]
    if unknown:
        raise ValueError(
            f"label values {unknown} are not in convention '{source.name}' "
            f"(allowed: {list(source.values)})"
        )
    by_name = {n: v for v, n in dest.classes.items()}
    missing = [source.classes[v] for v in values if v and source.classes[v] not in by_name]
    if missing:
        raise ValueError(
            f"classes {missing} of convention '{source.name}' have no value in '{dest.name}' "
            f"(its classes: {sorted(by_name)})"
        )
    lut = np.zeros(max(source.values) + 1, dtype=np.int64)
    for value, name in source.classes.items():
        lut[value] = by_name.get(name, 0)
    return lut[labels.astype(np.int64)]
