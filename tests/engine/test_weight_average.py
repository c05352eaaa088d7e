"""WeightAverage: the exponential moving average of the weights becomes the final model."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from brainseg_d2.engine.weight_average import WeightAverage


def _run(hook: WeightAverage, model: nn.Module, values: list[float], max_iter: int) -> None:
    """Set the weight to each value in turn, as optimizer steps would, and call the hook."""
    hook.trainer = SimpleNamespace(iter=0, max_iter=max_iter)
    for i, v in enumerate(values):
        hook.trainer.iter = i
        with torch.no_grad():
            model.weight.fill_(v)
        hook.after_step()


def test_average_follows_the_ema_rule_and_replaces_the_weights_after_the_last_step(caplog):
    model = nn.Linear(1, 1, bias=False)
    hook = WeightAverage(model, decay=0.5)
    with caplog.at_level(logging.INFO, logger="brainseg_d2"):
        _run(hook, model, [4.0, 2.0, 0.0, 8.0], max_iter=4)
    # The first update copies the weights; then avg = 0.5 * avg + 0.5 * w.
    expected = 4.0
    for w in (2.0, 0.0, 8.0):
        expected = 0.5 * expected + 0.5 * w
    assert expected == 4.75
    assert model.weight.item() == pytest.approx(expected)
    assert any("moving average" in r.message for r in caplog.records)


def test_weights_stay_the_trained_ones_before_the_last_step():
    model = nn.Linear(1, 1, bias=False)
    hook = WeightAverage(model, decay=0.5)
    _run(hook, model, [4.0, 2.0], max_iter=10)
    assert model.weight.item() == 2.0
    assert hook.average.module.weight.item() == pytest.approx(3.0)


def test_state_dict_resumes_the_average():
    model = nn.Linear(1, 1, bias=False)
    hook = WeightAverage(model, decay=0.5)
    _run(hook, model, [4.0, 2.0], max_iter=10)
    resumed = WeightAverage(nn.Linear(1, 1, bias=False), decay=0.5)
    resumed.load_state_dict(hook.state_dict())
    assert resumed.average.module.weight.item() == pytest.approx(3.0)
    assert int(resumed.average.n_averaged) == 2


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_rejects_decay_outside_0_1(decay):
    with pytest.raises(ValueError, match="EMA_DECAY"):
        WeightAverage(nn.Linear(1, 1), decay=decay)
