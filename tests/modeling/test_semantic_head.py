"""BrainSegRCNN and its dense head: every category gets a loss, inference gives probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.modeling import multilabel_losses

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "configs/phantom/mask_rcnn_R_18_FPN_cpu_instant_test.yaml"


def test_multilabel_losses_reward_every_overlapping_category():
    targets = torch.zeros((2, 3, 8, 8), dtype=torch.bool)
    targets[:, 0, 2:6, 2:6] = True  # WT
    targets[:, 1, 3:5, 3:5] = True  # TC inside it
    targets[:, 2, 3:5, 3:5] = True  # ET, the same pixels as TC: both must be learned
    perfect = torch.where(targets, 20.0, -20.0)
    losses = multilabel_losses(perfect, targets)
    assert losses["loss_sem_seg_bce"] < 1e-6 and losses["loss_sem_seg_dice"] < 1e-3
    missing_et = perfect.clone()
    missing_et[:, 2] = -20.0
    worse = multilabel_losses(missing_et, targets)
    assert worse["loss_sem_seg_dice"] > 0.25  # one category of three entirely wrong
    with pytest.raises(ValueError, match="differ"):
        multilabel_losses(perfect[:, :2], targets)


def _model(*opts):
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(CFG), allow_unsafe=False)
    cfg.merge_from_list(["MODEL.FPN.OUT_CHANNELS", 32, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
                         "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
                         *opts])
    torch.manual_seed(0)
    return build_model(cfg)


def _training_batch() -> list[dict]:
    """Two copies of a 4-channel slice with one WT lesion (instance and dense target)."""
    image = torch.randint(0, 255, (4, 64, 80), dtype=torch.uint8)
    masks = torch.zeros((1, 64, 80), dtype=torch.bool)
    masks[0, 20:40, 30:50] = True
    inst = Instances((64, 80), gt_classes=torch.tensor([0]), gt_masks=BitMasks(masks),
                     gt_boxes=Boxes(torch.tensor([[30.0, 20.0, 50.0, 40.0]])))
    sem = torch.zeros((3, 64, 80), dtype=torch.bool)
    sem[0] = masks[0]
    return [{"image": image, "instances": inst, "sem_seg": sem}] * 2


def test_training_step_has_dense_and_instance_losses_with_gradients():
    model = _model()
    model.train()
    with EventStorage():
        losses = model(_training_batch())
    assert {"loss_sem_seg_bce", "loss_sem_seg_dice", "loss_mask", "loss_cls"} <= set(losses)
    sum(losses.values()).backward()
    head = model.sem_seg_head
    assert head.predictor.weight.grad.abs().sum() > 0
    assert head.image_branch[0].weight.grad.abs().sum() > 0  # the full-resolution branch learns


def test_context_convs_sit_between_the_fused_levels_and_the_reduction():
    plain, deeper = _model(), _model("BRAINSEG.SEM_SEG.CONTEXT_CONVS", 2)
    # 0 adds nothing, so checkpoints written before the option still load.
    assert not any(k.startswith("sem_seg_head.context") for k in plain.state_dict())
    context = deeper.sem_seg_head.context
    assert len(context) == 2 and context[0].weight.shape == (32, 32, 3, 3)
    deeper.train()
    with EventStorage():
        losses = deeper(_training_batch())
    sum(losses.values()).backward()
    assert context[0].weight.grad.abs().sum() > 0
    deeper.eval()
    image = torch.randint(0, 255, (4, 64, 80), dtype=torch.uint8)
    with torch.inference_mode():
        (out,) = deeper([{"image": image, "height": 64, "width": 80}])
    assert out["sem_seg"].shape == (3, 64, 80)


def test_image_pooling_lets_every_pixel_see_the_whole_slice():
    # No normalisation: GroupNorm's statistics would couple distant pixels on their own.
    plain = _model("MODEL.SEM_SEG_HEAD.NORM", "").sem_seg_head.eval()
    pooled = _model("MODEL.SEM_SEG_HEAD.NORM", "", "BRAINSEG.SEM_SEG.IMAGE_POOLING", True)
    pooled = pooled.sem_seg_head.eval()
    assert plain.pool is None and "pool.weight" not in plain.state_dict()
    torch.manual_seed(1)
    feats = {k: torch.randn(1, 32, 64 // s, 64 // s) for k, s in
             zip(("p2", "p3", "p4", "p5"), (4, 8, 16, 32))}  # fmt: skip
    images = torch.randn(1, 4, 64, 64)
    changed = {k: v.clone() for k, v in feats.items()}
    changed["p2"][..., -1, -1] += 50.0  # one far corner of the finest level
    with torch.no_grad():
        centre = [head(f, images)[0][..., 24:40, 24:40] for head in (plain, pooled)
                  for f in (feats, changed)]  # fmt: skip
    # Without pooling the centre is out of reach of the corner; with it, it is not.
    assert torch.equal(centre[0], centre[1])
    assert not torch.allclose(centre[2], centre[3])


def test_inference_returns_category_probabilities_at_the_requested_size():
    model = _model().eval()
    image = torch.randint(0, 255, (4, 64, 80), dtype=torch.uint8)
    with torch.inference_mode():
        (out,) = model([{"image": image, "height": 32, "width": 40}])
    probs = out["sem_seg"]
    assert probs.shape == (3, 32, 40)
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    assert out["instances"].image_size == (32, 40)
    assert np.isfinite(probs.numpy()).all()


def test_dense_head_only_skips_the_instance_branch_and_keeps_the_masks(monkeypatch):
    from brainseg_d2.engine.test_inference import ConcurrentBatches
    from brainseg_d2.modeling import dense_head_only

    model = _model().eval()
    inputs = [{"image": torch.randint(0, 255, (4, 64, 80), dtype=torch.uint8)}]
    with torch.inference_mode():
        (full,) = model(inputs)
    calls = []
    monkeypatch.setattr(model.proposal_generator, "forward", lambda *a: calls.append(a))
    wrapped = ConcurrentBatches(model, batch_size=1, workers=1)  # unwrapped to reach the model
    with dense_head_only(wrapped), torch.inference_mode():
        (dense,) = wrapped(inputs)
    assert set(dense) == {"sem_seg"} and not calls
    torch.testing.assert_close(dense["sem_seg"], full["sem_seg"], atol=0, rtol=0)
    assert model.infer_instances  # restored on exit
    with dense_head_only(lambda batch: batch):  # any other model: left alone
        pass


def test_flip_tta_averages_the_image_and_its_mirror():
    model = _model().eval()
    assert not model.flip_tta  # off by default
    torch.manual_seed(1)
    image = torch.randint(0, 255, (4, 64, 96), dtype=torch.uint8)  # no padding: 32-divisible
    with torch.inference_mode():
        (plain,) = model([{"image": image}])
        (mirrored,) = model([{"image": image.flip(-1)}])
        model.flip_tta = True
        (tta,) = model([{"image": image}])
    assert len(plain["instances"])  # the instance check below compares real detections
    expected = (plain["sem_seg"] + mirrored["sem_seg"].flip(-1)) / 2
    torch.testing.assert_close(tta["sem_seg"], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(tta["sem_seg"], plain["sem_seg"], atol=1e-3)  # it did change
    # Instances come from the image alone, as without TTA.
    torch.testing.assert_close(
        tta["instances"].pred_boxes.tensor, plain["instances"].pred_boxes.tensor,
        atol=1e-3, rtol=1e-4,
    )  # fmt: skip

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(CFG), allow_unsafe=False)
    cfg.merge_from_list(["BRAINSEG.INFERENCE.FLIP_TTA", True])
    assert build_model(cfg).flip_tta


def test_instance_period_trains_the_instance_branch_on_every_kth_iteration():
    model = _model()
    model.instance_period = 3
    model.train()
    batch = _training_batch()
    dense_keys = {"loss_sem_seg_bce", "loss_sem_seg_dice"}
    for it, with_instances in [(0, True), (1, False), (2, False), (3, True), (7, False)]:
        model.zero_grad(set_to_none=True)
        with EventStorage(start_iter=it):
            losses = model(batch)
        assert dense_keys <= set(losses)
        assert ({"loss_rpn_cls", "loss_cls", "loss_mask"} <= set(losses)) == with_instances
        assert (set(losses) == dense_keys) == (not with_instances)
        sum(losses.values()).backward()
        rpn_grad = model.proposal_generator.rpn_head.conv.weight.grad
        assert (rpn_grad is not None) == with_instances
        assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0  # always trained
    with pytest.raises(ValueError, match="instance_period"):
        type(model)(**{**_model_kwargs(), "instance_period": 0})


def _model_kwargs():
    from brainseg_d2.modeling import BrainSegRCNN

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(CFG), allow_unsafe=False)
    return BrainSegRCNN.from_config(cfg)
