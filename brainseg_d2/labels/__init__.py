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

from brainseg_d2.labels.convention_files import (
    BRATS2021_CASE,
    BRATS2023_CASE,
    BRATS_TASK_CONVENTIONS,
    BRATS_TASKS,
    brats_task,
    convention_from_dict,
    detect_convention,
    load_convention,
    register_dataset_conventions,
    resolve_convention,
    tissue_code,
)
from brainseg_d2.labels.conventions import (
    CONVENTIONS,
    LabelConvention,
    convention_to_dict,
    default_regions,
    get_convention,
    raw_to_tissue,
    register_convention,
    relabel,
    tissue_to_raw,
    user_conventions,
)
from brainseg_d2.labels.targets import (
    CATEGORY_COLORS,
    TARGETS,
    Target,
    check_nothing_lost,
    check_writable,
    get_target,
    prediction_convention,
    writable_tissues,
)
from brainseg_d2.labels.tissue import (
    RC_REGION,
    REGIONS,
    TISSUE_ALIASES,
    TISSUE_BACKGROUND,
    TISSUE_ED,
    TISSUE_ET,
    TISSUE_MAX,
    TISSUE_NAMES,
    TISSUE_NCR,
    TISSUE_RC,
)

__all__ = [
    "BRATS2021_CASE",
    "BRATS2023_CASE",
    "BRATS_TASKS",
    "BRATS_TASK_CONVENTIONS",
    "CATEGORY_COLORS",
    "CONVENTIONS",
    "RC_REGION",
    "REGIONS",
    "TARGETS",
    "TISSUE_ALIASES",
    "TISSUE_BACKGROUND",
    "TISSUE_ED",
    "TISSUE_ET",
    "TISSUE_MAX",
    "TISSUE_NAMES",
    "TISSUE_NCR",
    "TISSUE_RC",
    "LabelConvention",
    "Target",
    "brats_task",
    "check_nothing_lost",
    "check_writable",
    "convention_from_dict",
    "convention_to_dict",
    "default_regions",
    "detect_convention",
    "get_convention",
    "get_target",
    "load_convention",
    "prediction_convention",
    "raw_to_tissue",
    "register_convention",
    "register_dataset_conventions",
    "relabel",
    "resolve_convention",
    "tissue_code",
    "tissue_to_raw",
    "user_conventions",
    "writable_tissues",
]
