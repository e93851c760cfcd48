"""Joint image + mask augmentation (PSPNet Sec. 4 'Implementation Details'), on torchvision.transforms.v2.

Images are ``tv_tensors.Image`` uint8 ``(3, H, W)``, labels ``tv_tensors.Mask``
``(H, W)``; v2 resizes/rotates masks with nearest neighbour, and pads / fills
them with the ignore index 255.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .base import IGNORE_INDEX

FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


class RandomScale(v2.Transform):
    """Resize image and mask by a factor drawn uniformly from ``scale_range`` (0.5-2.0 in PSPNet)."""

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0)):
        super().__init__()
        self.lo, self.hi = float(scale_range[0]), float(scale_range[1])

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        s = self.lo + torch.rand(()).item() * (self.hi - self.lo)
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt, params):
        return self._call_kernel(v2.functional.resize, inpt, params["size"], antialias=True)


def normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]


def build_train_transform(crop_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                          scale_range: Sequence[float] = (0.5, 2.0), rotate: float = 10.0, blur: float = 0.5,
                          hflip: float = 0.5, color_jitter: float = 0.0) -> v2.Compose:
    """Random scale, rotation in +-``rotate`` degrees, Gaussian blur (probability ``blur``),
    horizontal flip, random crop of ``crop_size`` (H, W) padded with 0 / 255, normalisation.
    ``color_jitter`` > 0: brightness, contrast and saturation each scaled by a factor in
    ``[1 - color_jitter, 1 + color_jitter]`` (image only; the mask is untouched)."""
    steps: list[v2.Transform] = [RandomScale(scale_range)]
    if rotate:
        steps.append(v2.RandomRotation(rotate, interpolation=v2.InterpolationMode.BILINEAR, fill=FILL))
    if blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=blur))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps.append(v2.RandomCrop(tuple(crop_size), pad_if_needed=True, fill=FILL))
    if color_jitter:  # last: the geometric draws (and so the crops) stay those of a run without it
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(steps + normalize(mean, std))


def build_eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose(normalize(mean, std))


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 RGB array -> the model's ``(3, H, W)`` float32 input: ``(x / 255 - mean) / std``."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
