"""The encoder / decode head / auxiliary head container every architecture uses."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SceneParser


class SegmentationModel(SceneParser):
    """Backbone + decode head (+ optional auxiliary head), logits at input size.

    ``forward(x)`` takes ``(N, 3, H, W)`` float images and returns a dict:
    ``{"out": (N, K, H, W)}`` in eval mode, plus ``"aux"`` (same shape) in
    train mode when an auxiliary head exists (PSPNet Sec. 3.4: used for the
    loss only, dropped at test time). Logits are bilinearly upsampled
    (align_corners=False) to the input's H and W, for any H, W; after
    ``set_eval_logit_upsampling(False)`` eval-mode logits stay at the decode
    head's resolution and the inference engine upsamples them.
    """

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, aux_head: nn.Module | None = None):
        super().__init__()
        self.backbone, self.decode_head, self.aux_head = backbone, decode_head, aux_head
        self.in_channels = 3  # widened by refinement networks that also read confidence maps
        # DeepLabv3 App. A "upsampling logits": False keeps training logits at the feature
        # resolution (the loss then downsamples the labels instead), as in DeepLab v1/v2
        self.upsample_train_logits = True
        self.upsample_eval_logits = True  # False: the engine upsamples (``set_eval_logit_upsampling``)

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Evaluate the same weights at another output_stride (8/16/32); heads with
        stride-dependent rates (ASPP) follow."""
        self.backbone.set_output_stride(output_stride)
        for head in (self.decode_head, self.aux_head):
            if hasattr(head, "set_output_stride"):
                head.set_output_stride(output_stride)

    def set_train_logit_upsampling(self, enabled: bool) -> None:
        self.upsample_train_logits = bool(enabled)

    def set_eval_logit_upsampling(self, enabled: bool) -> bool:
        self.upsample_eval_logits = bool(enabled)
        return True

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        size = x.shape[-2:]
        keep = not self.upsample_train_logits if self.training else not self.upsample_eval_logits
        up = (lambda t: t) if keep else (
            lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False))
        feats = self.backbone(x)
        out = {"out": up(self.decode_head(feats))}
        if self.training and self.aux_head is not None:
            out["aux"] = up(self.aux_head(feats))
        return out
