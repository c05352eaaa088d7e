"""Whole-volume prediction: :class:`VolumePredictor` and the ``brainseg-predict`` CLI.

The predictor (torch, Detectron2) is imported on first use, so that the CLI
module can be imported, and its warnings filtered, before torch is.
"""

from typing import Any

__all__ = ["VolumePrediction", "VolumePredictor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from brainseg_d2.inference import volume_predictor

        return getattr(volume_predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
