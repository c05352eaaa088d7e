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
0 background, 1 NCR, 2 ED, 3 ET. Every raw convention maps into them, and
predictions map back out through :func:`tissue_to_raw`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TISSUE_BACKGROUND = 0
TISSUE_NCR = 1  # necrotic / non-enhancing tumour core
TISSUE_ED = 2  # peritumoural edema
TISSUE_ET = 3  # enhancing tumour
TISSUE_NAMES = {TISSUE_NCR: "necrotic", TISSUE_ED: "edema", TISSUE_ET: "enhancing"}

#: BraTS evaluation regions as sets of tissue codes.
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (TISSUE_NCR, TISSUE_ED, TISSUE_ET),
    "TC": (TISSUE_NCR, TISSUE_ET),
    "ET": (TISSUE_ET,),
}


@dataclass(frozen=True)
class LabelConvention:
    """How raw integer labels on disk map to tissue codes.

    Attributes:
        name: identifier stored in ``dataset.json``.
        raw_to_tissue: raw label value -> tissue code (0 for background).
    """

    name: str
    raw_to_tissue: dict[int, int]

    @property
    def tissue_to_raw(self) -> dict[int, int]:
        return {t: r for r, t in self.raw_to_tissue.items()}


CONVENTIONS: dict[str, LabelConvention] = {
    # BraTS 2018-2021: 1 NCR/NET, 2 edema, 4 enhancing (3 unused).
    "brats2021": LabelConvention("brats2021", {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED, 4: TISSUE_ET}),
    # BraTS 2023+ GLI: 1 NCR, 2 edema, 3 enhancing.
    "brats2023": LabelConvention("brats2023", {0: 0, 1: TISSUE_NCR, 2: TISSUE_ED, 3: TISSUE_ET}),
    # Binary tumour masks (the converter binarises 0/255 masks to 0/1). Tumour is
    # coded as edema so that it counts towards WT; only the "binary" target makes
    # sense for such data.
    "binary": LabelConvention("binary", {0: 0, 1: TISSUE_ED}),
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
            tissue: integer array of any shape (..., ) holding tissue codes 0-3.

        Returns:
            bool array of shape (C, ...) with C = number of categories.

        Raises:
            ValueError: a value outside 0-3.
        """
        tissue = np.asarray(tissue)
        if tissue.size and (tissue.min() < 0 or tissue.max() > TISSUE_ET):
            raise ValueError(
                f"tissue codes must be 0-{TISSUE_ET}, got values {tissue.min()}..{tissue.max()}"
            )
        # One table lookup gives each voxel a bit per category it belongs to; an
        # isin per category costs several times more (this runs per slice).
        table = np.zeros(TISSUE_ET + 1, dtype=np.uint8)
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


def get_convention(name: str) -> LabelConvention:
    """Look up a label convention by name; ``ValueError`` names the bad value."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown label convention {name!r}; choose one of {sorted(CONVENTIONS)}"
        ) from None


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
        uint8 array of the same shape with tissue codes 0-3.

    Raises:
        ValueError: if a label value is not part of the convention (the message
            lists the unexpected values).
    """
    labels = np.asarray(labels)
    values = np.unique(labels)
    unknown = [int(v) for v in values if int(v) not in convention.raw_to_tissue]
    if unknown:
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
        tissue: integer array of tissue codes 0-3.
        convention: the convention to write.

    Returns:
        uint8 array of the same shape in the raw convention.
    """
    lut = np.zeros(4, dtype=np.uint8)
    for t, raw in convention.tissue_to_raw.items():
        lut[t] = raw
    # Tissues the convention cannot express (e.g. NCR in "binary") fall back to
    # the convention's tumour label rather than silently vanishing.
    if convention.name == "binary":
        lut[1:] = 1
    return lut[np.asarray(tissue, dtype=np.int64)]
