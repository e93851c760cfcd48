"""Dilated ResNet-18/34/50/101 (timm architecture; deep stem and multi-grid of DeepLabv3 Sec. 3.2.1),
with timm's ImageNet weights (model hub or cache) or a local timm / torchvision-format file."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck

from .common import _check_output_stride, _set_conv
from .weights import load_matching, load_state_file, timm_imagenet_state_dict

log = logging.getLogger(__name__)


class ResNetBackbone(nn.Module):
    """Dilated ResNet-18/34/50/101 (He et al. 2016) with switchable output_stride.

    Args:
        depth: 18, 34, 50 or 101.
        output_stride: 8, 16 or 32 (ratio of input size to ``c4`` size).
        deep_stem: replace the 7x7 stem by three 3x3 convs (64, 64, 128 channels)
            as in PSPNet's ResNet.
        multi_grid: unit rates (r1, r2, ...) of the last stage's blocks; block i
            of stage 4 uses rate ``base_rate * multi_grid[i % len]``
            (DeepLabv3 Sec. 3.2.1). ``None`` keeps the torchvision convention
            (the first block of a dilated stage uses the previous rate).

    ``set_output_stride`` changes strides/dilations in place, so one set of
    weights can be trained at 16 and evaluated at 8 (DeepLabv3 Table 4).

    Raises:
        ValueError: unsupported depth or output_stride.
    """

    def __init__(self, depth: int = 50, output_stride: int = 8, deep_stem: bool = False,
                 multi_grid: Sequence[int] | None = None):
        super().__init__()
        if depth not in (18, 34, 50, 101):
            raise ValueError(f"ResNet depth must be 18, 34, 50 or 101, got {depth}")
        kwargs = dict(stem_type="deep", stem_width=64) if deep_stem else {}
        body = timm.create_model(f"resnet{depth}", pretrained=False, num_classes=0, **kwargs)
        self.conv1, self.bn1, self.act1, self.maxpool = body.conv1, body.bn1, body.act1, body.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = body.layer1, body.layer2, body.layer3, body.layer4
        self.deep_stem, self.depth = deep_stem, depth
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.output_stride = 32
        self.set_output_stride(output_stride)

    def set_output_stride(self, output_stride: int, multi_grid: Sequence[int] | None = None) -> None:
        """Re-dilate stages 2-4 in place for ``output_stride`` (weights untouched)."""
        _check_output_stride(output_stride)
        if multi_grid is not None:
            self.multi_grid = tuple(multi_grid)
        stride_so_far, dilation = 4, 1
        for idx, layer in ((2, self.layer2), (3, self.layer3), (4, self.layer4)):
            prev_dilation = dilation
            if stride_so_far >= output_stride:
                stride, dilation = 1, dilation * 2
            else:
                stride, stride_so_far = 2, stride_so_far * 2
            grid = self.multi_grid if idx == 4 else None
            for j, block in enumerate(layer):
                s = stride if j == 0 else 1
                if grid:
                    first = second = dilation * grid[j % len(grid)]
                else:
                    first, second = (prev_dilation if j == 0 else dilation), dilation
                if isinstance(block, Bottleneck):
                    _set_conv(block.conv2, s, first)
                elif isinstance(block, BasicBlock):
                    _set_conv(block.conv1, s, first)
                    _set_conv(block.conv2, 1, second)
                else:  # pragma: no cover - timm internals changed
                    raise TypeError(f"unexpected block type {type(block)}")
                if j == 0 and block.downsample is not None:
                    block.downsample[0].stride = (s, s)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]

    def load_imagenet_weights(self) -> None:
        """timm's ImageNet weights for this depth (hub or local cache, :func:`timm_imagenet_state_dict`).
        With ``deep_stem`` the stem and the first block's input layers have other shapes and stay at init (logged).

        Raises:
            ValueError: the hub cannot be reached and nothing is cached (the message says what to do).
        """
        state, source = timm_imagenet_state_dict(f"resnet{self.depth}")
        load_matching(self, state, source, optional=self._stem_names(), unused=("fc.",))

    def load_pretrained_file(self, path: str | Path) -> None:
        """Weights from a local state-dict file: timm or torchvision ResNet format (the same key names),
        ``.pth`` / ``.pt`` (read weights-only) or ``.safetensors``.

        Raises:
            FileNotFoundError: no such file. ValueError: unreadable, or it does not fit this ResNet.
        """
        load_matching(self, load_state_file(path), str(path), optional=self._stem_names(), unused=("fc.",))

    def _stem_names(self) -> tuple[str, ...]:
        # the deep stem (3x3 convs 64-64-128) has other tensors, and widens the first block's input to 128
        return ("conv1.", "bn1.", "layer1.0.conv1.", "layer1.0.downsample.") if self.deep_stem else ()
