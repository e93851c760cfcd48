"""DeepLabv3 (Chen et al. 2017, arXiv:1706.05587): ASPP head and cascaded atrous blocks.

- ``ASPP`` (Sec. 3.3, Fig. 5): a 1x1 conv and three 3x3 atrous convs (rates
  6, 12, 18 at output_stride 16, doubled at 8), all 256 filters + BN + ReLU,
  plus image-level features (global average pool, 1x1 conv + BN + ReLU,
  bilinear upsampling); concatenated, then 1x1 conv + BN + ReLU.
- ``ASPPHead``: ASPP -> dropout -> 1x1 classifier (logits); ``extra_conv`` adds torchvision's
  3x3 conv-BN-ReLU after ASPP.
- ``CascadedBlocks`` (Sec. 3.2, Fig. 3b): block5..block7, replicas of the
  ResNet block4 design (3 bottleneck units, 512-2048 channels), each doubling
  the atrous rate once output_stride is reached, multi-grid unit rates
  applied within every block (Sec. 3.2.1).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.resnet import Bottleneck

from .backbones.common import _set_conv
from .heads import DecodeHead, FCNHead, aux_head_for, conv_bn_relu
from .registry import register_arch
from .segmentor import SegmentationModel


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv + BN + ReLU -> bilinear upsample to the input's h x w."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with image-level features (DeepLabv3 Sec. 3.3).

    Args:
        in_channels: C of the input ``(N, C, h, w)``.
        channels: filters per branch and of the output (256 in the paper).
        rates: atrous rates **at output_stride 16**; the applied rates are
            ``rate * 16 / output_stride`` (doubled at 8, Sec. 3.3).
        image_pooling: include the image-level branch (Table 5).
        output_stride: the backbone's current output_stride.

    Output ``(N, channels, h, w)``. Note: in train mode the image-pooling BN
    sees one value per image and channel, so it needs batch size > 1.
    """

    def __init__(self, in_channels: int, channels: int = 256, rates: Sequence[int] = (6, 12, 18),
                 image_pooling: bool = True, output_stride: int = 16):
        super().__init__()
        self.base_rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList([conv_bn_relu(in_channels, channels, kernel_size=1)] +
                                      [conv_bn_relu(in_channels, channels, 3, dilation=r) for r in self.base_rates])
        self.image_pool = ImagePooling(in_channels, channels) if image_pooling else None
        n = len(self.branches) + (1 if image_pooling else 0)
        self.project = conv_bn_relu(n * channels, channels, kernel_size=1)
        self.set_output_stride(output_stride)

    @property
    def rates(self) -> tuple[int, ...]:
        return tuple(b[0].dilation[0] for b in self.branches[1:])

    def set_output_stride(self, output_stride: int) -> None:
        for branch, r in zip(self.branches[1:], self.base_rates):
            _set_conv(branch[0], 1, max(1, r * 16 // output_stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        if self.image_pool is not None:
            outs.append(self.image_pool(x))
        return self.project(torch.cat(outs, dim=1))


class ASPPHead(DecodeHead):
    """DeepLabv3 head: ASPP -> dropout -> 1x1 classifier."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18),
                 image_pooling: bool = True, output_stride: int = 16, dropout: float = 0.1, in_index: int = -1,
                 extra_conv: bool = False):
        super().__init__(in_channels, channels, num_classes, dropout, in_index)
        self.aspp = ASPP(in_channels, channels, rates, image_pooling, output_stride)
        # torchvision's DeepLabHead adds a 3x3 conv-BN-ReLU after ASPP (not in the paper); for weight conversion
        self.extra = conv_bn_relu(channels, channels) if extra_conv else nn.Identity()

    def set_output_stride(self, output_stride: int) -> None:
        self.aspp.set_output_stride(output_stride)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extra(self.aspp(x))


class CascadedBlocks(nn.Module):
    """block5..block(4+num_blocks) of DeepLabv3 Fig. 3, on top of a ResNet-50/101 ``c4``.

    Each block has ``units`` bottleneck units (planes 512, 2048 in/out; new,
    randomly initialised weights). Without atrous convolution a block's first
    unit would stride by 2; once the wanted ``output_stride`` is reached the
    stride becomes 1 and the rate doubles per block instead (block5 rate 4,
    block6 8, block7 16 at output_stride 16). Unit ``j`` of every block uses
    ``rate * multi_grid[j]``. The blocks are new layers: they learn at the head's
    learning rate although they sit inside the backbone (``new_layers``).
    """

    new_layers = True  # SceneParser.param_groups: randomly initialised, trained at lr * head_lr_mult

    def __init__(self, in_channels: int = 2048, num_blocks: int = 3, units: int = 3,
                 multi_grid: Sequence[int] | None = None, output_stride: int = 16):
        super().__init__()
        if in_channels != 2048:
            raise ValueError("cascaded blocks need a Bottleneck ResNet (50/101) backbone with 2048-channel c4")
        self.multi_grid = tuple(multi_grid) if multi_grid else (1,)
        self.blocks = nn.ModuleList(
            nn.Sequential(*[Bottleneck(2048, 512) for _ in range(units)]) for _ in range(num_blocks))
        self.set_output_stride(output_stride)

    def set_output_stride(self, output_stride: int) -> None:
        # block4 sits at stride min(32, .) with rate (32 / output_stride); each further block doubles it
        rate = max(1, 32 // output_stride)
        for block in self.blocks:
            rate *= 2
            for j, unit in enumerate(block):
                _set_conv(unit.conv2, 1, rate * self.multi_grid[j % len(self.multi_grid)])
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class CascadeBackbone(nn.Module):
    """A ResNet backbone followed by cascaded blocks; ``c4`` is replaced by the last block's output."""

    def __init__(self, backbone: nn.Module, num_blocks: int = 3, multi_grid: Sequence[int] | None = None):
        super().__init__()
        self.body = backbone
        self.cascade = CascadedBlocks(backbone.out_channels[-1], num_blocks, multi_grid=multi_grid,
                                      output_stride=backbone.output_stride)
        self.out_channels = list(backbone.out_channels)

    @property
    def output_stride(self) -> int:
        return self.body.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        self.body.set_output_stride(output_stride)
        self.cascade.set_output_stride(output_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return feats[:-1] + [self.cascade(feats[-1])]


@register_arch("deeplabv3")
def build_deeplabv3(backbone: nn.Module, num_classes: int, *, head_channels: int = 256,
                     aspp_rates: Sequence[int] = (6, 12, 18), image_pooling: bool = True, aux_head: bool = False,
                     aux_channels: int = 256, dropout: float = 0.1, cascade_blocks: int = 0,
                     extra_conv: bool = False) -> SegmentationModel:
    """DeepLabv3 (Sec. 3.3): backbone [+ cascaded block5..] + ASPP head. ``aspp_rates`` are at OS16."""
    if cascade_blocks:
        backbone = CascadeBackbone(backbone, cascade_blocks, multi_grid=getattr(backbone, "multi_grid", None))
    head = ASPPHead(backbone.out_channels[-1], head_channels, num_classes, rates=aspp_rates,
                    image_pooling=image_pooling, output_stride=backbone.output_stride, dropout=dropout,
                    extra_conv=extra_conv)
    return SegmentationModel(backbone, head, aux_head_for(backbone, num_classes, aux_channels) if aux_head else None)


_ASPP_OPTIONS = ("head_channels", "aspp_rates", "image_pooling", "extra_conv")


@register_arch("deeplabv3_cascade")
def build_deeplabv3_cascade(backbone: nn.Module, num_classes: int, *, cascade_blocks: int = 3, aspp: bool = False,
                             **options) -> SegmentationModel:
    """DeepLabv3 'going deeper' model (Sec. 3.2, Fig. 3b, Tables 1-4): block5..block(4 + cascade_blocks)
    after block4, then the classifier. As in the paper's cascaded model there is no ASPP: the head is
    dropout + a 1x1 classifier on the last block (``FCNHead`` with ``num_convs=0``). ``aspp=True`` puts
    the ASPP head (Sec. 3.3) on top instead, a combination the paper does not evaluate.

    Options: ``head_channels`` / ``aspp_rates`` / ``image_pooling`` / ``extra_conv`` (ASPP only: the
    bare classifier reads block7's 2048 channels), ``aux_head``, ``aux_channels``, ``dropout``.

    Raises:
        ValueError: an ASPP option without ``aspp=True``, or ``cascade_blocks`` < 1.
    """
    if int(cascade_blocks) < 1:
        raise ValueError(f"deeplabv3_cascade needs cascade_blocks >= 1, got {cascade_blocks}")
    if aspp:
        return build_deeplabv3(backbone, num_classes, cascade_blocks=cascade_blocks, **options)
    given = [k for k in _ASPP_OPTIONS if k in options]
    if given:
        raise ValueError(f"model.head.{given[0]} is an ASPP option; the cascaded model has no ASPP "
                         "(set model.head.aspp=true to add it)")
    aux_head, aux_channels = options.pop("aux_head", False), options.pop("aux_channels", 256)
    dropout = options.pop("dropout", 0.1)
    if options:
        raise ValueError(f"arch 'deeplabv3_cascade' has no option model.head.{next(iter(options))}")
    body = CascadeBackbone(backbone, cascade_blocks, multi_grid=getattr(backbone, "multi_grid", None))
    head = FCNHead(body.out_channels[-1], body.out_channels[-1], num_classes, num_convs=0, dropout=dropout)
    return SegmentationModel(body, head, aux_head_for(body, num_classes, aux_channels) if aux_head else None)
