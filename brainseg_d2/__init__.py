"""brainseg_d2: brain tumour segmentation in MRI with Detectron2 Mask R-CNN.

Importing this package is cheap and has no side effects: datasets are registered
by :func:`brainseg_d2.data.datasets.register_all` (called from ``setup()``), never at
import time.
"""

__version__ = "0.1.0"
