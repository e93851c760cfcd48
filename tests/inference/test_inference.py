import pytest
import torch
import torch.nn as nn

from sceneparse import build_model
from sceneparse.inference.engine import InferenceConfig, infer_probs, window_starts


class PixelModel(nn.Module):
    """A per-pixel (1x1 conv) model: translation- and flip-equivariant, no context."""

    def __init__(self, k=3):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_window_starts_cover_and_end_flush():
    assert window_starts(10, 10, 5) == [0]
    assert window_starts(8, 10, 5) == [0]
    assert window_starts(25, 10, 6) == [0, 6, 12, 15]


def test_slide_on_image_equal_to_crop_equals_whole():
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", 4, output_stride=16, head_channels=8).eval()
    x = torch.randn(1, 3, 64, 96)
    whole = infer_probs(model, x)
    slide = infer_probs(model, x, InferenceConfig(mode="slide", crop_size=(64, 96), stride=(32, 32)))
    torch.testing.assert_close(slide, whole)


def test_slide_with_overlaps_and_padding_for_a_local_model():
    torch.manual_seed(0)
    model = PixelModel().eval()
    x = torch.randn(2, 3, 37, 53)
    whole = infer_probs(model, x)
    for crop, stride in (((16, 16), (10, 7)), ((64, 64), (32, 32))):  # overlaps; image smaller than crop
        p = infer_probs(model, x, InferenceConfig(mode="slide", crop_size=crop, stride=stride, window_batch=3))
        assert p.shape == (2, 3, 37, 53)
        torch.testing.assert_close(p, whole)


def test_flip_tta_of_flip_equivariant_model_equals_plain():
    torch.manual_seed(0)
    model = PixelModel().eval()
    x = torch.randn(1, 3, 21, 30)
    torch.testing.assert_close(infer_probs(model, x, InferenceConfig(flip=True)), infer_probs(model, x))


def test_multiscale_flip_output_shape_is_input_size_for_odd_sizes():
    torch.manual_seed(0)
    model = build_model("deeplabv3", "resnet18", 5, output_stride=16, head_channels=8).eval()
    x = torch.randn(1, 3, 63, 87)
    for mode in ("whole", "slide"):
        cfg = InferenceConfig(mode=mode, crop_size=(48, 48), scales=(0.5, 0.75, 1.0, 1.25, 1.75), flip=True)
        p = infer_probs(model, x, cfg)
        assert p.shape == (1, 5, 63, 87)
        torch.testing.assert_close(p.sum(1), torch.ones(1, 63, 87))


def test_bad_inference_config():
    with pytest.raises(ValueError):
        InferenceConfig(mode="slide")
    with pytest.raises(ValueError):
        InferenceConfig(mode="tiles")
    with pytest.raises(ValueError):
        InferenceConfig(mode="slide", crop_size=(10, 10), stride=(20, 5))
    with pytest.raises(ValueError):
        InferenceConfig(scales=(0,))
