"""Decode heads: the dilated-FCN baseline and the PSPNet pyramid pooling head.

A decode head takes the backbone's list of feature maps and returns class
logits ``(N, num_classes, h, w)`` at the resolution of the feature it reads
(``in_index``); the segmentor upsamples them to the input size.
``DecodeHead`` owns what every head shares: which feature it reads, dropout
and the 1x1 classifier, so a new head only writes ``_features``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_arch
from .segmentor import SegmentationModel


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DecodeHead(nn.Module):
    """Base head: ``features -> _features(...) -> dropout -> 1x1 classifier``.

    Args:
        in_channels: channels of ``feats[in_index]``.
        channels: channels produced by ``_features`` (input of the classifier).
        num_classes: output logits channels.
        dropout: Dropout2d probability before the classifier (PSPNet uses 0.1).
        in_index: which backbone feature to read (-1 = last, 2 = stage 3).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1,
                 in_index: int = -1):
        super().__init__()
        self.in_channels, self.channels, self.in_index = in_channels, channels, in_index
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self._features(feats[self.in_index])))


class FCNHead(DecodeHead):
    """Dilated-FCN head: ``num_convs`` 3x3 conv-BN-ReLU then the classifier.

    The baseline of PSPNet Table 1 (a ResNet FCN with dilated network) and the
    auxiliary head on stage 3 (Sec. 3.4, Fig. 4). ``num_convs=0`` is a bare
    classifier on the features; ``classifier_kernel=3, classifier_dilation=3`` with
    ``num_convs=0`` is the front model of the GRN/LRN paper (Sec. 3.3).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_convs: int = 1,
                 dropout: float = 0.1, in_index: int = -1, classifier_kernel: int = 1, classifier_dilation: int = 1):
        super().__init__(in_channels, channels if num_convs else in_channels, num_classes, dropout, in_index)
        layers = [conv_bn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        self.convs = nn.Sequential(*layers)
        if classifier_kernel != 1:
            # GRN/LRN paper Sec. 3.3 front model: the pool + FC replaced by a 3x3 conv with dilation 3
            pad = (classifier_kernel - 1) // 2 * classifier_dilation
            self.classifier = nn.Conv2d(self.channels, num_classes, classifier_kernel, padding=pad,
                                        dilation=classifier_dilation)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class PyramidPoolingModule(nn.Module):
    """Pyramid pooling module (PSPNet Sec. 3.2, Fig. 3).

    For each bin size b, pool the ``(N, C, h, w)`` feature to ``b x b``
    (adaptive average or max pooling), reduce to ``C / len(bins)`` channels
    with 1x1 conv-BN-ReLU (when ``reduction``; otherwise keep C channels, the
    "no DR" rows of Table 1), upsample bilinearly to ``h x w`` and concatenate
    with the input: output ``(N, C + len(bins) * C', h, w)``.

    Raises:
        ValueError: empty ``bins`` or ``pool`` not in {"avg", "max"}.
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6), pool: str = "avg",
                 reduction: bool = True):
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty list of integers >= 1, got {list(bins)}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.bins, self.pool = tuple(int(b) for b in bins), pool
        branch_ch = in_channels // len(self.bins) if reduction else in_channels
        self.branches = nn.ModuleList(
            conv_bn_relu(in_channels, branch_ch, kernel_size=1) for _ in self.bins)
        self.out_channels = in_channels + branch_ch * len(self.bins)

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pooled maps before reduction: ``[(N, C, b, b) for b in bins]``."""
        return [adaptive_pool2d(x, b, self.pool) for b in self.bins]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for pooled, branch in zip(self.pooled(x), self.branches):
            outs.append(F.interpolate(branch(pooled), size=size, mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)


def adaptive_pool2d(x: torch.Tensor, bins: int, mode: str = "avg") -> torch.Tensor:
    """``F.adaptive_{avg,max}_pool2d(x, bins)`` that stays correct for any input size in an ONNX
    export with dynamic H, W.

    PyTorch's exporters bake the bin boundaries of adaptive pooling for the example input's size,
    so an exported PSPNet silently pools the wrong cells at another size. While exporting
    (``torch.compiler.is_exporting()``), the bins are cut with PyTorch's own boundaries
    (``floor(i * H / b)`` to ``ceil((i + 1) * H / b)``) as slices of symbolic size; otherwise the
    native op runs. ``x``: ``(N, C, H, W)``; returns ``(N, C, bins, bins)``.
    """
    if bins == 1 or not torch.compiler.is_exporting():
        if bins == 1:
            return x.mean((2, 3), keepdim=True) if mode == "avg" else x.amax((2, 3), keepdim=True)
        return (F.adaptive_avg_pool2d if mode == "avg" else F.adaptive_max_pool2d)(x, bins)
    h, w = x.shape[-2:]
    reduce = (lambda t: t.mean((2, 3))) if mode == "avg" else (lambda t: t.amax((2, 3)))  # noqa: E731
    rows = []
    # ceil(a / b) as (a + b - 1) // b: numerators stay >= 0, where ONNX's truncating integer
    # division agrees with Python's floor division
    for i in range(bins):
        hs, he = (i * h) // bins, ((i + 1) * h + bins - 1) // bins
        cells = [reduce(x[:, :, hs:he, (j * w) // bins: ((j + 1) * w + bins - 1) // bins]) for j in range(bins)]
        rows.append(torch.stack(cells, dim=-1))
    return torch.stack(rows, dim=-2)


class PSPHead(DecodeHead):
    """PSPNet head: pyramid pooling module -> 3x3 conv-BN-ReLU -> dropout -> classifier (Fig. 3).

    ``output_stride``: the stride the head is built (trained) at. ``set_output_stride(s)`` keeps the
    3x3 bottleneck's field in image pixels when the same weights run at another stride: dilation
    ``output_stride / s`` (2 when OS16-trained weights run at OS8), as DeepLabv3 doubles its ASPP
    rates (Sec. 3.3). The backbone's OS8 features equal its OS16 features at the OS16 sample
    positions (tested), so with the dilated bottleneck the OS8 logits at those positions equal the
    OS16 logits up to the pyramid pooling's averages over a denser grid; without it, the bottleneck
    sees half the context it was trained with (measured: docs/results.md).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, bins: Sequence[int] = (1, 2, 3, 6),
                 pool: str = "avg", reduction: bool = True, dropout: float = 0.1, in_index: int = -1,
                 output_stride: int | None = None):
        super().__init__(in_channels, channels, num_classes, dropout, in_index)
        self.ppm = PyramidPoolingModule(in_channels, bins, pool, reduction)
        self.bottleneck = conv_bn_relu(self.ppm.out_channels, channels)
        self.trained_output_stride = output_stride

    def set_output_stride(self, output_stride: int) -> None:
        if not self.trained_output_stride:
            return
        d = max(1, self.trained_output_stride // output_stride)
        conv = self.bottleneck[0]
        conv.dilation, conv.padding = (d, d), (d, d)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.ppm(x))


def aux_head_for(backbone: nn.Module, num_classes: int, aux_channels: int) -> FCNHead:
    """The auxiliary head of PSPNet Sec. 3.4 / Fig. 4 (also used by the FCN and DeepLabv3 builders)."""
    # PSPNet Sec. 3.4 / Fig. 4: an FCN classifier on the stage-3 features (res4b22)
    return FCNHead(backbone.out_channels[2], aux_channels, num_classes, num_convs=1, dropout=0.1, in_index=2)


@register_arch("fcn")
def build_fcn(backbone: nn.Module, num_classes: int, *, head_channels: int = 512, aux_head: bool = False,
               aux_channels: int = 256, dropout: float = 0.1, num_convs: int = 1, classifier_kernel: int = 1,
               classifier_dilation: int = 1) -> SegmentationModel:
    head = FCNHead(backbone.out_channels[-1], head_channels, num_classes, num_convs=num_convs, dropout=dropout,
                   classifier_kernel=classifier_kernel, classifier_dilation=classifier_dilation)
    return SegmentationModel(backbone, head, aux_head_for(backbone, num_classes, aux_channels) if aux_head else None)


@register_arch("pspnet")
def build_pspnet(backbone: nn.Module, num_classes: int, *, head_channels: int = 512, aux_head: bool = True,
                  aux_channels: int = 256, dropout: float = 0.1, bins: Sequence[int] = (1, 2, 3, 6),
                  pool: str = "avg", reduction: bool = True) -> SegmentationModel:
    head = PSPHead(backbone.out_channels[-1], head_channels, num_classes, bins=bins, pool=pool,
                   reduction=reduction, dropout=dropout, output_stride=backbone.output_stride)
    return SegmentationModel(backbone, head, aux_head_for(backbone, num_classes, aux_channels) if aux_head else None)
