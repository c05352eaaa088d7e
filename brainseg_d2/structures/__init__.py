"""The typed core every stage shares: how a volume is sliced, what a dataset holds.

* :class:`SliceGeometry`: how a 3D volume maps to canonical 2D slices and back,
  bit-exactly (``volumes.json`` stores it per volume, :meth:`~SliceGeometry.to_json`).
* :func:`stack_slice_masks`: per-slice category masks -> one ``(C, S, H, W)`` volume.
* :class:`PreprocessOptions`: how volumes become 8-bit slices.
* :class:`DatasetInfo`: a converted dataset's ``dataset.json``, with its
  defaults written once.

No Detectron2 or torch imports: the converter, the predictor and the evaluator
all build on this package.
"""

from brainseg_d2.structures.dataset import (
    BRATS_CHANNELS,
    IMAGE_LAYOUT,
    NORMALIZATIONS,
    ZSCORE_RANGE,
    DatasetInfo,
    PreprocessOptions,
)
from brainseg_d2.structures.geometry import (
    CANONICAL_ORIENTATION,
    CanonicalGrid,
    SliceGeometry,
    stack_slice_masks,
)

__all__ = [
    "BRATS_CHANNELS",
    "CANONICAL_ORIENTATION",
    "IMAGE_LAYOUT",
    "NORMALIZATIONS",
    "ZSCORE_RANGE",
    "CanonicalGrid",
    "DatasetInfo",
    "PreprocessOptions",
    "SliceGeometry",
    "stack_slice_masks",
]
