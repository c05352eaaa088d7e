"""Whole-volume prediction: :class:`VolumePredictor` and the ``brainseg-predict`` CLI."""

from brainseg_d2.inference.volume_predictor import VolumePrediction, VolumePredictor

__all__ = ["VolumePrediction", "VolumePredictor"]
