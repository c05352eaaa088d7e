"""Internal tissue codes: the values of a canonical label map, and the BraTS regions over them."""

from __future__ import annotations

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
