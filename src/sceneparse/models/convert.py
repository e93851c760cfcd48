"""Converters from other toolboxes' weights to sceneparse models."""
from __future__ import annotations

import re

import torch

from . import build_model
from .factory import load_model_weights

# torchvision DeepLabV3 (models/segmentation/deeplabv3.py) -> sceneparse names
_TV_DEEPLAB_RULES = [
    (r"^backbone\.", "backbone."),
    (r"^classifier\.0\.convs\.([0-3])\.(\d)\.", r"decode_head.aspp.branches.\1.\2."),
    (r"^classifier\.0\.convs\.4\.1\.", "decode_head.aspp.image_pool.conv.0."),
    (r"^classifier\.0\.convs\.4\.2\.", "decode_head.aspp.image_pool.conv.1."),
    (r"^classifier\.0\.project\.([01])\.", r"decode_head.aspp.project.\1."),
    (r"^classifier\.1\.", "decode_head.extra.0."),
    (r"^classifier\.2\.", "decode_head.extra.1."),
    (r"^classifier\.4\.", "decode_head.classifier."),
    (r"^aux_classifier\.([01])\.", r"aux_head.convs.0.\1."),
    (r"^aux_classifier\.4\.", "aux_head.classifier."),
]


def convert_torchvision_deeplabv3(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``deeplabv3_resnet50/101`` state dict to sceneparse keys.

    Raises:
        ValueError: a key matches no rule (not a torchvision DeepLabV3 ResNet state dict).
    """
    out = {}
    for key, value in state.items():
        for pattern, repl in _TV_DEEPLAB_RULES:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise ValueError(f"unexpected key in a torchvision DeepLabV3 state dict: {key!r}")
    return out


def from_torchvision_deeplabv3(state: dict[str, torch.Tensor], depth: int = 50):
    """A sceneparse DeepLabv3 (OS8, ASPP 12/24/36, torchvision's extra 3x3 conv) holding the weights of
    a torchvision ``deeplabv3_resnet{depth}`` state dict; its outputs equal torchvision's (eval mode).
    The class count and the auxiliary head are read from the state dict."""
    mapped = convert_torchvision_deeplabv3(state)
    num_classes = mapped["decode_head.classifier.weight"].shape[0]
    aux = any(k.startswith("aux_head.") for k in mapped)
    model = build_model("deeplabv3", f"resnet{depth}", num_classes, output_stride=8, head_channels=256,
                        aspp_rates=(6, 12, 18), image_pooling=True, extra_conv=True, aux_head=aux, aux_channels=256)
    load_model_weights(model, mapped, allow_missing=())
    return model
