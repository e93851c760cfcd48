"""HRNet (timm architecture) as a four-branch backbone at fixed strides 4-32."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn

from .weights import load_matching, load_state_file, timm_imagenet_state_dict


# layers of timm's HRNet classifier that the four-branch backbone does not use
_UNUSED = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


class HRNetBackbone(nn.Module):
    """HRNet (Wang et al., TPAMI 2020; timm architecture): its four parallel branches at strides
    4, 8, 16, 32 (``feature_location=''``), e.g. 18/36/72/144 channels for W18. No dilation: the
    output stride is fixed at 32 for the coarsest branch, the finest is at 4 (used by the pyramidal
    output head). ImageNet weights: timm's (model hub or local cache, ``load_imagenet_weights``) or a
    local timm-format file (``load_pretrained_file``)."""

    def __init__(self, name: str = "hrnet_w18", output_stride: int = 32):
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"{name} has fixed branches at strides 4-32; output_stride must be 32")
        self.body = timm.create_model(name, pretrained=False, features_only=True, feature_location="",
                                      out_indices=(1, 2, 3, 4))
        self.out_channels = list(self.body.feature_info.channels())
        self.name = name
        self.output_stride = 32

    def set_output_stride(self, output_stride: int) -> None:
        if output_stride != 32:
            raise ValueError("HRNet branches have fixed strides; output_stride must be 32")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def load_imagenet_weights(self) -> None:
        """timm's ImageNet weights (:func:`timm_imagenet_state_dict`); the classifier's are not used.

        Raises:
            ValueError: the hub cannot be reached and nothing is cached (the message says what to do).
        """
        state, source = timm_imagenet_state_dict(self.name)
        load_matching(self, state, source, prefix="body.", unused=_UNUSED)

    def load_pretrained_file(self, path) -> None:
        """A local timm-format HRNet state dict (``.pth`` / ``.pt`` weights-only, or ``.safetensors``).

        Raises:
            FileNotFoundError: no such file. ValueError: unreadable, or it does not fit this HRNet.
        """
        load_matching(self, load_state_file(path), str(path), prefix="body.", unused=_UNUSED)
