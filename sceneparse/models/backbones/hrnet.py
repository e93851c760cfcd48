"""HRNet (timm architecture) as a four-branch backbone at fixed strides 4-32."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn


class HRNetBackbone(nn.Module):
    """HRNet (Wang et al., TPAMI 2020; timm architecture): its four parallel branches at strides
    4, 8, 16, 32 (``feature_location=''``), e.g. 18/36/72/144 channels for W18. No dilation: the
    output stride is fixed at 32 for the coarsest branch, the finest is at 4 (used by the pyramidal
    output head). No ImageNet weights are available offline: random init unless a timm-format
    state dict is loaded by the caller."""

    def __init__(self, name: str = "hrnet_w18", output_stride: int = 32):
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"{name} has fixed branches at strides 4-32; output_stride must be 32")
        self.body = timm.create_model(name, pretrained=False, features_only=True, feature_location="",
                                      out_indices=(1, 2, 3, 4))
        self.out_channels = list(self.body.feature_info.channels())
        self.output_stride = 32

    def set_output_stride(self, output_stride: int) -> None:
        if output_stride != 32:
            raise ValueError("HRNet branches have fixed strides; output_stride must be 32")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))
