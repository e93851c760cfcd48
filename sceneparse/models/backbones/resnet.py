"""Dilated ResNet-18/34/50/101 (timm architecture; deep stem and multi-grid of DeepLabv3 Sec. 3.2.1),
with torchvision-format ImageNet weights from a user-supplied ``.pth``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck

from .common import _check_output_stride, _set_conv

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
        self.deep_stem = deep_stem
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

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision-format ResNet ``.pth`` state dict from a local file.

        torchvision and timm share key names for ResNet (``conv1``,
        ``layer1.0.conv1``, ...). With ``deep_stem`` the stem keys cannot
        match; the stem then stays randomly initialised (logged).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: no key of the file matches this backbone, or shapes differ.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ResNet weights not found: {path}")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        own = self.state_dict()
        matched = {k: v for k, v in sd.items() if k in own}
        bad = [k for k, v in matched.items() if v.shape != own[k].shape]
        if bad or not matched:
            raise ValueError(f"{path} does not fit this ResNet: "
                             f"{'shape mismatch at ' + ', '.join(bad[:5]) if bad else 'no matching keys'}")
        missing = [k for k in own if k not in matched]
        self.load_state_dict(matched, strict=False)
        log.info("loaded %d tensors from %s; %d left at random init%s", len(matched), path, len(missing),
                 f" ({', '.join(missing[:4])}...)" if missing else "")
