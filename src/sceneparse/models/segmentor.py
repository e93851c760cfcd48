"""The encoder / decode head / auxiliary head container every architecture uses."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SceneParser


def congruent_input_size(height: int, width: int, crop_size, output_stride: int) -> tuple[int, int]:
    """The ``(H, W)`` nearest ``(height, width)`` whose sides are congruent to ``crop_size``'s (the training
    crops' ``(H, W)``) modulo ``output_stride`` (the trained one): the size at which the output geometry is the
    training crops' (:meth:`SegmentationModel.input_size_for` explains why). At most ``output_stride / 2`` px
    per side away (ties round up); a side that would come out 0 or less becomes the smallest positive one.
    E.g. ``(270, 360)`` with crops ``(360, 480)`` at stride 16 -> ``(264, 368)``. Pure arithmetic, no model
    needed: a user of an exported graph sizes its inputs with its metadata's ``input_geometry``."""
    t = int(output_stride)
    out = []
    for n, crop in zip((int(height), int(width)), crop_size):
        r = int(crop) % t
        m = r + t * math.floor((n - r) / t + 0.5)
        out.append(m if m > 0 else m + t)
    return out[0], out[1]


def training_geometry(model: nn.Module) -> dict | None:
    """``{"crop_size": [H, W], "output_stride": t}`` of the training crops and trained output stride that set
    ``model``'s input sizes (:meth:`SegmentationModel.input_size_for`; a refinement cascade's are its front's),
    or None where there is no such rule (training size unknown; a model that resizes its input itself). What
    exported graphs and runtime backends carry so they size their inputs as the PyTorch model does."""
    m = getattr(model, "front", model)
    if not isinstance(m, SegmentationModel) or m.train_size is None:
        return None
    return {"crop_size": [int(n) for n in m.train_size], "output_stride": int(m.trained_output_stride)}


class SegmentationModel(SceneParser):
    """Backbone + decode head (+ optional auxiliary head), logits at input size.

    ``forward(x)`` takes ``(N, 3, H, W)`` float images and returns a dict:
    ``{"out": (N, K, H, W)}`` in eval mode, plus ``"aux"`` (same shape) in
    train mode when an auxiliary head exists (PSPNet Sec. 3.4: used for the
    loss only, dropped at test time). Logits are bilinearly upsampled
    (align_corners=False) to the input's H and W, for any H, W; after
    ``set_eval_logit_upsampling(False)`` eval-mode logits stay at the decode
    head's resolution and the inference engine upsamples them.

    Weights run at an output stride other than the one they were built (trained) at keep their trained
    output geometry (:meth:`upsample_logits`); such a model always returns full-size eval logits.
    """

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, aux_head: nn.Module | None = None):
        super().__init__()
        self.backbone, self.decode_head, self.aux_head = backbone, decode_head, aux_head
        self.in_channels = 3  # widened by refinement networks that also read confidence maps
        # DeepLabv3 App. A "upsampling logits": False keeps training logits at the feature
        # resolution (the loss then downsamples the labels instead), as in DeepLab v1/v2
        self.upsample_train_logits = True
        self.upsample_eval_logits = True  # False: the engine upsamples (``set_eval_logit_upsampling``)
        self.trained_output_stride = backbone.output_stride
        self.train_size: tuple[int, int] | None = None  # (H, W) of the training crops (set when loaded)

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

    def geometry_shift(self, size: tuple[int, int]) -> tuple[int, int]:
        """Pixels ``(dy, dx)`` by which logits upsampled at the current output stride must move down / right to
        line up as the weights learned at their trained stride, for an input of ``size`` (H, W).

        The stride-s feature ``i`` is centred on pixel ``s * i`` (stride-2 convolutions with odd kernels and
        padding k // 2; ``ceil(H / s)`` features), and bilinear upsampling with align_corners=False puts the
        centre of that grid on the centre of the image: on average a feature centred at pixel c is shown at
        ``c + ((H - 1) - s * (ceil(H / s) - 1)) / 2`` (7.5 px at s = 16 on a side divisible by 16). Weights
        trained at stride t learned to predict for that spot; run at stride e (DeepLabv3 Sec. 3.3: trained at
        OS16, evaluated at OS8), the upsampled map is moved by the difference of the two offsets: on a
        480-px side, 4 px at OS8 after OS16 training. (0, 0) at the trained stride. Both offsets are
        half-integers with the same fraction, so the shift is a whole number of pixels."""
        t, e = self.trained_output_stride, self.output_stride
        if t == e:
            return 0, 0
        # ceil(n / s) as (n + s - 1) // s: a floor division of positive numbers, which an exported graph's
        # integer division (truncating) computes alike; the difference (negative when e > t) is a multiple of
        # the smaller stride, even, so its halving is exact under either rounding
        return tuple((e * ((n + e - 1) // e - 1) - t * ((n + t - 1) // t - 1)) // 2 for n in size)

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The input size nearest ``(height, width)`` at which the output geometry is the training crops'
        (``train_size``; as given when it is unknown): each side congruent to the crop's side modulo the
        trained output stride t, so the features are shown at the same mean offset
        ``((n - 1) - t (ceil(n / t) - 1)) / 2`` px (:meth:`geometry_shift`) the weights learned. CamVid crops
        360x480 at OS16: 3.5 / 7.5 px; a 0.75x scaled image, 270x360, would show them at 6.5 / 3.5 px and
        becomes 264x368 (on the zoo's PSPNet, the 0.75x scale alone at 264x352, also congruent: 54.50 -> 57.77
        val mIoU; docs/inference.md). The inference
        engine resizes each scale of whole-image inference to this size. At most t / 2 px per side away (a
        side that would come out 0 or less becomes the smallest positive one: :func:`congruent_input_size`)."""
        if self.train_size is None:
            return int(height), int(width)
        return congruent_input_size(height, width, self.train_size, self.trained_output_stride)

    def upsample_logits(self, logits: torch.Tensor, size) -> torch.Tensor:
        """Bilinear upsampling (align_corners=False) of ``(N, K, h, w)`` logits to ``size`` (H, W), moved by
        :meth:`geometry_shift` with the edge rows / columns repeated (a no-op at the trained stride). The shift
        is a gather whose indices follow from the sizes, so a dynamic-shape export keeps H and W symbolic."""
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.output_stride == self.trained_output_stride:
            return up
        h, w = size
        dy, dx = self.geometry_shift((h, w))
        rows = (torch.arange(h, device=up.device) - dy).clamp(0, h - 1)  # output row i shows row i - dy
        cols = (torch.arange(w, device=up.device) - dx).clamp(0, w - 1)
        return up.index_select(-2, rows).index_select(-1, cols)

    def set_train_logit_upsampling(self, enabled: bool) -> None:
        self.upsample_train_logits = bool(enabled)

    def set_eval_logit_upsampling(self, enabled: bool) -> bool:
        self.upsample_eval_logits = bool(enabled)
        return True

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        size = x.shape[-2:]
        keep = not self.upsample_train_logits if self.training else (
            not self.upsample_eval_logits and self.output_stride == self.trained_output_stride)
        up = (lambda t: t) if keep else (lambda t: self.upsample_logits(t, size))
        feats = self.backbone(x)
        out = {"out": up(self.decode_head(feats))}
        if self.training and self.aux_head is not None:
            out["aux"] = up(self.aux_head(feats))
        return out
