"""Configuration: ``add_brainseg_config(cfg)`` owns ``cfg.BRAINSEG``; ``setup_cfg`` is the way in.

Detectron2's way loads every shipped config::

    cfg = get_cfg()
    add_brainseg_config(cfg)
    cfg.merge_from_file("configs/phantom/mask_rcnn_R_18_FPN_cpu_bs4_800.yaml")

and :func:`setup_cfg` does that (plus ``KEY VALUE`` overrides, one-line errors and
``freeze``) for every command. The shipped configs start from
``configs/Base-Mask-RCNN-FPN.yaml``, a copy of the model zoo's Mask R-CNN R50-FPN.
A user's config may also start from a model-zoo file by its zoo name, with a
config from :func:`get_brainseg_cfg` or :func:`setup_cfg`::

    _BASE_: "zoo://COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml"

The ``zoo://`` prefix resolves to the YAML inside the installed
``detectron2.model_zoo`` package, so ``_BASE_`` chains never reach outside the
user's folder by a relative path.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

from detectron2.config import CfgNode as _D2CfgNode
from detectron2.config import get_cfg

import brainseg_d2.modeling  # noqa: F401  (registers BrainSegRCNN and RefinedSemSegHead)
from brainseg_d2.evaluation.metrics import HD95_PENALTY_MM
from brainseg_d2.postprocessing import PostprocessParams

ZOO_PREFIX = "zoo://"


class CfgNode(_D2CfgNode):
    """Detectron2's CfgNode that also resolves ``_BASE_: zoo://<model zoo config>``."""

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False):
        # fvcore joins a non-absolute _BASE_ with the including file's folder, so the
        # prefix may arrive as "<folder>/zoo://..."; everything after it is the zoo name.
        idx = filename.find(ZOO_PREFIX)
        if idx >= 0:
            from detectron2 import model_zoo

            zoo_name = filename[idx + len(ZOO_PREFIX) :]
            try:
                filename = model_zoo.get_config_file(zoo_name)
            except RuntimeError:
                raise ValueError(
                    f"_BASE_ {ZOO_PREFIX}{zoo_name}: no such config in Detectron2's model zoo"
                ) from None
        return super().load_yaml_with_base(filename, allow_unsafe=allow_unsafe)


def add_brainseg_config(cfg: _D2CfgNode) -> None:
    """Add the ``cfg.BRAINSEG`` node (every key defaulted) to a Detectron2 config in place."""
    _C = cfg
    _C.BRAINSEG = _D2CfgNode()
    # Root of converted datasets; "" means $DETECTRON2_DATASETS, else ./datasets.
    _C.BRAINSEG.DATASET_ROOT = ""

    _C.BRAINSEG.AUGMENT = _D2CfgNode()
    # Left-right flip probability (axial/coronal slices of the canonical volume; none
    # when a training dataset holds sagittal slices, where it would swap front and back).
    _C.BRAINSEG.AUGMENT.FLIP_PROB = 0.5
    # Uniform in-plane rotation range in degrees; 0 disables.
    _C.BRAINSEG.AUGMENT.ROTATION = 10.0
    # Relative scale range applied on top of the ResizeShortestEdge size; (1, 1) disables.
    _C.BRAINSEG.AUGMENT.SCALE = (0.9, 1.1)
    # Whole-image intensity ranges (multiplicative, every channel alike); (1, 1)
    # disables each. Off by default: the per-channel augmentations below cover them
    # and keep the background at 0.
    _C.BRAINSEG.AUGMENT.BRIGHTNESS = (1.0, 1.0)
    _C.BRAINSEG.AUGMENT.CONTRAST = (1.0, 1.0)
    _C.BRAINSEG.AUGMENT.GAMMA = (1.0, 1.0)
    # Per-channel intensity augmentation (brainseg_d2/data/intensity_augment.py): each
    # MRI sequence drawn on its own, as scanners change each contrast independently;
    # pixels 0 in every channel (outside the brain) stay 0.
    # Probability of applying each per-channel augmentation below.
    _C.BRAINSEG.AUGMENT.CHANNEL_PROB = 0.8
    # Contrast about the channel's brain mean, log-uniform range; (1, 1) disables.
    _C.BRAINSEG.AUGMENT.CHANNEL_CONTRAST = (0.7, 1.4)
    # Brightness shift, uniform in +- this share of 255; 0 disables.
    _C.BRAINSEG.AUGMENT.CHANNEL_SHIFT = 0.05
    # Gamma per channel, log-uniform range; (1, 1) disables.
    _C.BRAINSEG.AUGMENT.CHANNEL_GAMMA = (0.7, 1.4)
    # Largest SD of a smooth log bias field per channel; 0 disables.
    _C.BRAINSEG.AUGMENT.BIAS_FIELD = 0.2
    # Largest Gaussian noise SD per channel (0-255 units); 0 disables.
    _C.BRAINSEG.AUGMENT.NOISE = 6.0
    # Each labelled tissue's signal scaled by its own factor per sequence, log-uniform
    # range (RandomLesionContrast; needs the label maps that BrainSegRCNN training
    # reads, other models leave the image as it is); (1, 1) disables.
    _C.BRAINSEG.AUGMENT.LESION_CONTRAST = (1.0, 1.0)

    # Post-processing (score threshold, opening/closing, hole filling, min 2D area,
    # min 3D volume, 3D connectivity, keep-largest-K, score hysteresis
    # COMPONENT_SCORE_THRESH). Defaults and meaning of each
    # key come from PostprocessParams, the one definition; every step can be off.
    _C.BRAINSEG.POSTPROCESS = _D2CfgNode(PostprocessParams().to_cfg_dict())

    _C.BRAINSEG.SOLVER = _D2CfgNode()
    # Train with the forward pass under bfloat16 autocast (brainseg_d2/engine/precision.py),
    # no loss scaling, where the device runs bfloat16 natively (CPUs with AVX-512 BF16 or
    # AMX, GPUs with bf16 tensor cores); elsewhere float32, with a warning (BENCHMARKS.md).
    _C.BRAINSEG.SOLVER.BF16 = False
    # "SGD" (Detectron2's: SOLVER.MOMENTUM, NESTEROV) or "AdamW" (decoupled
    # SOLVER.WEIGHT_DECAY). Both take SOLVER.BASE_LR, its schedule, parameter groups
    # (WEIGHT_DECAY_NORM, BIAS_LR_FACTOR) and SOLVER.CLIP_GRADIENTS.
    _C.BRAINSEG.SOLVER.OPTIMIZER = "SGD"
    # BrainSegRCNN: the RPN and ROI heads (instances) train on every k-th iteration,
    # the backbone and dense head (the category masks) on every one. A step without
    # the instance branch costs about 0.6 of a full one on CPU, so k > 1 buys more
    # steps in the same time; 1 trains everything every iteration.
    _C.BRAINSEG.SOLVER.INSTANCE_PERIOD = 1
    # Exponential moving average of the weights (engine/weight_average.py): after the
    # last iteration the average becomes the model (model_final.pth); 0: off.
    _C.BRAINSEG.SOLVER.EMA_DECAY = 0.0

    _C.BRAINSEG.INPUT = _D2CfgNode()
    # Neighbouring slices on each side stacked as extra channels (2.5D); the model then
    # takes len(channels) * (2 * K + 1) channels (MODEL.PIXEL_MEAN has that length) and
    # the dataset must be converted with --context-slices >= K.
    _C.BRAINSEG.INPUT.CONTEXT_SLICES = 0

    # Where category masks come from: "semantic" (the dense head's per-pixel
    # probabilities; MODEL.META_ARCHITECTURE BrainSegRCNN) or "instances" (union of
    # the instance masks, for plain Mask R-CNN).
    _C.BRAINSEG.MASK_SOURCE = "semantic"

    # Dense head of BrainSegRCNN (MODEL.SEM_SEG_HEAD.NAME RefinedSemSegHead); the
    # FPN part uses Detectron2's MODEL.SEM_SEG_HEAD keys, its classes are
    # MODEL.ROI_HEADS.NUM_CLASSES.
    _C.BRAINSEG.SEM_SEG = _D2CfgNode()
    # Channels of the full-resolution branch that keeps 1-2 pixel structures.
    _C.BRAINSEG.SEM_SEG.REFINE_DIM = 16
    # 3x3 convs on the fused FPN features at stride 4 (MODEL.SEM_SEG_HEAD.CONVS_DIM
    # channels) before they are reduced and upsampled; 0: none.
    _C.BRAINSEG.SEM_SEG.CONTEXT_CONVS = 0
    # Add a 1x1 conv of the fused FPN features' mean over the slice to every pixel
    # (image-level context, as in DeepLabv3).
    _C.BRAINSEG.SEM_SEG.IMAGE_POOLING = False
    # Weight of the soft Dice loss relative to the per-pixel cross-entropy.
    _C.BRAINSEG.SEM_SEG.DICE_WEIGHT = 1.0

    _C.BRAINSEG.EVAL = _D2CfgNode()
    # Also run Detectron2's COCOEvaluator (bbox/segm AP) next to the volume metrics.
    # Off with MASK_SOURCE "semantic": evaluation skips the RPN and ROI heads (faster).
    _C.BRAINSEG.EVAL.COCO_AP = True
    # HD95 penalty (mm): reported where a distance is undefined (one of prediction /
    # ground truth empty, missed or false-positive lesions); BraTS 2023's 374 mm.
    _C.BRAINSEG.EVAL.HD95_PENALTY = HD95_PENALTY_MM
    # Dice/IoU given to a slice or volume where both masks are empty (BraTS: 1).
    _C.BRAINSEG.EVAL.EMPTY_SCORE = 1.0
    # Metric the best checkpoint is chosen by (a key of the evaluator's flat dict).
    _C.BRAINSEG.EVAL.BEST_METRIC = "brainseg/volume_dice_mean_post"
    # Stop training after this many evaluations without improvement; 0 never stops.
    _C.BRAINSEG.EVAL.EARLY_STOP_PATIENCE = 0
    # Per-slice scores: "exclude" slices where prediction and GT are both empty, or
    # "include" them with EMPTY_SCORE.
    _C.BRAINSEG.EVAL.EMPTY_SLICE_POLICY = "exclude"
    # Lesion-wise Dice: ground-truth lesions of at most this volume (mm^3) are ignored
    # (BraTS 2023 GLI: 50; 0 keeps every lesion).
    _C.BRAINSEG.EVAL.LESION_MIN_VOLUME = 50.0
    # Lesion-wise Dice: dilation iterations to merge and match lesions (BraTS GLI: 3).
    _C.BRAINSEG.EVAL.LESION_DILATION_ITERS = 3

    _C.BRAINSEG.INFERENCE = _D2CfgNode()
    # Slices per forward pass of whole-volume prediction (brainseg-predict --batch-size),
    # of evaluation (Trainer.test: consecutive slices of one size) and of the tuning.
    _C.BRAINSEG.INFERENCE.BATCH_SIZE = 8
    # On CPU, batches run this many at a time, each on one torch thread (a small
    # slice cannot keep several threads busy); 0: torch's thread count; 1: one batch
    # at a time on all threads. Ignored on CUDA.
    _C.BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES = 0
    # Test-time augmentation of the dense head (BrainSegRCNN): average each slice's
    # category probabilities with those of its left-right mirror; about 2x the dense
    # head's inference cost. Instances are not augmented. For axial and coronal slices
    # only: on sagittal ones the mirror swaps front and back.
    _C.BRAINSEG.INFERENCE.FLIP_TTA = False
    # Whole-volume prediction (VolumePredictor, brainseg-predict) with several models
    # of this config: their dense heads' probabilities are averaged (inference/
    # ensemble.py). Set by --weights A B ... of brainseg-predict and of
    # tools/tune_postprocess.py, whose tuned config records it; () predicts with
    # MODEL.WEIGHTS alone. Training and --eval-only use MODEL.WEIGHTS.
    _C.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS = ()


def get_brainseg_cfg() -> CfgNode:
    """Detectron2's default config plus ``cfg.BRAINSEG``, as a zoo-aware :class:`CfgNode`."""
    cfg = CfgNode(get_cfg())
    add_brainseg_config(cfg)
    # Mask R-CNN on MRI slices: RLE/bitmask annotations, empty slices are informative.
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    return CfgNode(cfg)


def setup_cfg(
    config_file: str | PathLike, opts: Sequence = (), *, freeze: bool = True
) -> CfgNode:
    """The config of ``config_file`` with ``KEY VALUE`` overrides: every command's way in.

    Args:
        config_file: a YAML config (``_BASE_`` chains and ``zoo://`` bases resolve).
        opts: flat ``[KEY, VALUE, ...]`` overrides, strings as on a command line or
            Python values.
        freeze: freeze the result; False for a caller that still derives keys.

    Returns:
        :func:`get_brainseg_cfg` merged with the file, then with ``opts``.

    Raises:
        ValueError: a missing or bad config file, or a bad key or value in
            ``opts``; one line naming the file or the override.
    """
    cfg = get_brainseg_cfg()
    try:
        cfg.merge_from_file(str(config_file), allow_unsafe=False)
    except (KeyError, ValueError, AssertionError, FileNotFoundError) as exc:
        msg = str(exc).strip("'\"")
        raise ValueError(f"bad config ({config_file}): {msg}") from None
    flag = next((str(k) for k in list(opts)[::2] if str(k).startswith("--")), None)
    if flag is not None:  # argparse leaves an option written after the overrides among them
        raise ValueError(f"{flag} comes after the KEY VALUE config overrides; give options "
                         "before them")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as exc:
        msg = str(exc).strip("'\"")
        raise ValueError(f"bad config override on the command line: {msg}") from None
    if freeze:
        cfg.freeze()
    return cfg
