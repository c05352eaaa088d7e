"""Fine-tuning 3-channel weights on N-channel MRI: the first convolution is adapted."""

from __future__ import annotations

import torch
from torch import nn

from brainseg_d2.modeling.weights import BrainSegCheckpointer, adapt_input_conv


def test_equal_channels_give_the_rgb_response_to_a_grey_image():
    torch.manual_seed(0)
    rgb = torch.randn(8, 3, 3, 3)
    grey = torch.rand(1, 1, 10, 10)
    for n in (1, 2, 4, 7):
        adapted = adapt_input_conv(rgb, n)
        assert adapted.shape == (8, n, 3, 3)
        expected = nn.functional.conv2d(grey.repeat(1, 3, 1, 1), rgb)
        got = nn.functional.conv2d(grey.repeat(1, n, 1, 1), adapted)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class _Stem(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 3, bias=False)


class _Net(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.stem = _Stem(channels)
        self.head = nn.Linear(2, 2)


def test_checkpointer_loads_a_three_channel_file_into_a_four_channel_model(tmp_path):
    torch.manual_seed(0)
    rgb_model = _Net(3)
    torch.save({"model": rgb_model.state_dict()}, tmp_path / "rgb.pth")
    model = _Net(4)
    incompatible = BrainSegCheckpointer(model)._load_model(
        {"model": dict(torch.load(tmp_path / "rgb.pth")["model"])}
    )
    assert not incompatible.incorrect_shapes and not incompatible.missing_keys
    expected = adapt_input_conv(rgb_model.stem.conv1.weight, 4)
    torch.testing.assert_close(model.stem.conv1.weight, expected)
    torch.testing.assert_close(model.head.weight, rgb_model.head.weight)


def test_weights_of_another_architecture_are_warned_about(caplog):
    # Detectron2 skips what does not fit, name by name; a file of which almost
    # nothing fits (another backbone) gets one line that says so.
    model = _Net(4)
    other = {"stem.conv1.weight": torch.zeros(4, 4, 5, 5), "head.weight": torch.zeros(3, 2)}
    BrainSegCheckpointer(model)._load_model({"model": dict(other)})
    assert "only 0 of the model's 3 tensors came from the weights file" in caplog.text
    caplog.clear()
    BrainSegCheckpointer(model)._load_model({"model": dict(_Net(4).state_dict())})
    assert "tensors came from" not in caplog.text
