"""Evaluation: volume metrics (:mod:`brainseg_d2.evaluation.metrics`, numpy/scipy only).

Kept free of imports on purpose: ``import brainseg_d2.evaluation.metrics`` must not
pull in detectron2 or torch, which evaluator modules in this package may need.
"""
