"""brainseg_d2.engine.solver: SGD or AdamW over Detectron2's parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.engine.solver import build_optimizer


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 1, 1))


def _cfg(*opts):
    cfg = get_brainseg_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.002", "SOLVER.WEIGHT_DECAY", "0.05",
                         "SOLVER.WEIGHT_DECAY_NORM", "0.0", *opts])
    return cfg


def test_sgd_is_detectron2s_default():
    opt = build_optimizer(_cfg(), _model())
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == get_brainseg_cfg().SOLVER.MOMENTUM


def test_adamw_keeps_detectron2s_parameter_groups():
    model = _model()
    opt = build_optimizer(_cfg("BRAINSEG.SOLVER.OPTIMIZER", "AdamW"), model)
    assert isinstance(opt, torch.optim.AdamW)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(model[0].weight)] == 0.05  # conv weights decay
    assert decay[id(model[1].weight)] == 0.0  # norm weights take WEIGHT_DECAY_NORM
    assert all(g["lr"] == 0.002 for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_adamw_clips_gradients_when_asked():
    model = _model()
    clip = "SOLVER.CLIP_GRADIENTS"
    cfg = _cfg("BRAINSEG.SOLVER.OPTIMIZER", "AdamW", f"{clip}.ENABLED", "True",
               f"{clip}.CLIP_TYPE", "value", f"{clip}.CLIP_VALUE", "0.0")
    opt = build_optimizer(cfg, model)
    before = {p: p.detach().clone() for p in model.parameters()}
    model(torch.randn(1, 2, 5, 5)).sum().backward()
    opt.step()  # every gradient clipped to 0: AdamW moves weights by weight decay alone
    for group in opt.param_groups:
        for p in group["params"]:
            expected = before[p] * (1 - group["lr"] * group["weight_decay"])
            assert torch.allclose(p, expected, atol=1e-7)


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="BRAINSEG.SOLVER.OPTIMIZER is 'Adam'"):
        build_optimizer(_cfg("BRAINSEG.SOLVER.OPTIMIZER", "Adam"), _model())


@pytest.mark.parametrize("clip_type, clip_value", [("norm", 0.05), ("value", 0.01)])
def test_adamw_step_equals_detectron2s_clipped_adamw(clip_type, clip_value):
    from detectron2.solver.build import maybe_add_gradient_clipping

    clip = "SOLVER.CLIP_GRADIENTS"
    cfg = _cfg("BRAINSEG.SOLVER.OPTIMIZER", "AdamW", f"{clip}.ENABLED", "True",
               f"{clip}.CLIP_TYPE", clip_type, f"{clip}.CLIP_VALUE", str(clip_value))
    torch.manual_seed(0)
    ours, theirs = _model(), _model()
    theirs.load_state_dict(ours.state_dict())
    opt = build_optimizer(cfg, ours)
    groups = [{**g, "params": [dict(theirs.named_parameters())[n] for n in names]}
              for g, names in _group_names(opt, ours)]
    reference = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        groups, lr=0.002, weight_decay=0.05
    )
    for step in range(3):
        x = torch.randn(2, 2, 6, 6)
        for model in (ours, theirs):
            model.zero_grad(set_to_none=True)
            (model(x) ** 2).sum().backward()
            if clip_type == "norm":  # (Detectron2's value clipper fails on a missing gradient)
                model[2].bias.grad = None  # a parameter without gradient is left alone
        big = ours[0].weight.grad.norm()
        assert big > clip_value  # the clipping acts
        opt.step()
        reference.step()
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=f"{name} at step {step}")


def _group_names(opt, model):
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        yield {k: v for k, v in g.items() if k not in ("params", "fused")}, [
            names[id(p)] for p in g["params"]
        ]


def test_unknown_clip_type_is_refused():
    from brainseg_d2.engine.solver import clip_each_parameter_

    p = nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="CLIP_TYPE is 'full_model'"):
        clip_each_parameter_([p], "full_model", 1.0)
