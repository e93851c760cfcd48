"""Front -> GRN -> LRN refinement cascade (GRN/LRN paper Sec. 3.3, Fig. 4), trained stage by stage.

``RefinementCascade`` wraps a trained front model (any sceneparse model: FCN, PSPNet, DeepLabv3)
with a GRN and/or an LRN. The front is always frozen (eval mode, no gradients). The stage being
trained is given by ``train_stage``:

- ``"grn"``: front frozen, GRN trained; the training output carries ``"aux"`` = the GRN residual,
  so the standard loss gives CE(front + residual) + w * CE(residual) (Sec. 3.1's auxiliary loss).
- ``"lrn"``: front and GRN frozen, LRN trained.

``fusion="parallel"`` averages the GRN and LRN outputs (the alternative the paper compares with).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .backbones import IMAGENET_MEAN, IMAGENET_STD
from .refinement import GRN, LRN, unnormalize


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


class RefinementCascade(nn.Module):
    """Args:
        front: trained segmentation model returning ``{"out": logits}`` at the input size.
        grn, lrn: refinement networks (either may be None).
        fusion: ``"cascade"`` (front -> GRN -> LRN) or ``"parallel"`` (mean of GRN(front) and LRN(front)).
        train_stage: ``"grn"``, ``"lrn"`` or None (nothing trainable: evaluation of a finished cascade).
        mean, std: the normalisation of the images this model receives (undone for GRN/LRN input).

    ``forward(x)`` with ``x`` ``(N, 3, H, W)`` normalised returns ``{"out": (N, K, H, W) logits}``,
    plus ``"aux"`` (GRN residual) in train mode at stage ``"grn"``.
    """

    def __init__(self, front: nn.Module, grn: GRN | None = None, lrn: LRN | None = None, fusion: str = "cascade",
                 train_stage: str | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if grn is None and lrn is None:
            raise ValueError("a refinement cascade needs a GRN, an LRN or both")
        if fusion not in ("cascade", "parallel"):
            raise ValueError(f"fusion must be 'cascade' or 'parallel', got {fusion!r}")
        if fusion == "parallel" and (grn is None or lrn is None):
            raise ValueError("parallel fusion needs both a GRN and an LRN")
        if train_stage not in (None, "grn", "lrn"):
            raise ValueError(f"train_stage must be None, 'grn' or 'lrn', got {train_stage!r}")
        if (train_stage == "grn" and grn is None) or (train_stage == "lrn" and lrn is None):
            raise ValueError(f"train_stage {train_stage!r} but that network is not in the cascade")
        self.front, self.grn, self.lrn = front, grn, lrn
        self.fusion, self.train_stage = fusion, train_stage
        self.mean, self.std = tuple(mean), tuple(std)
        self.in_channels = 3
        _freeze(self.front)
        for name in ("grn", "lrn"):
            net = getattr(self, name)
            if net is not None and name != train_stage:
                _freeze(net)

    @property
    def output_stride(self) -> int:
        return self.front.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        self.front.set_output_stride(output_stride)

    def train(self, mode: bool = True):
        super().train(mode)
        self.front.eval()
        for name in ("grn", "lrn"):
            net = getattr(self, name)
            if net is not None and name != self.train_stage:
                net.eval()
        return self

    def _run(self, name: str, fn):
        if self.training and name == self.train_stage:
            return fn()
        with torch.no_grad():
            return fn()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            front = self.front(x)["out"].float()
        img = unnormalize(x, self.mean, self.std)
        out: dict[str, torch.Tensor] = {}
        if self.fusion == "parallel":
            g = self._run("grn", lambda: self.grn(img, front))
            l_, _ = self._run("lrn", lambda: self.lrn(img, front))
            out["out"] = (g["out"] + l_) / 2
            if self.training and self.train_stage == "grn":
                out["aux"] = g["residual"]
            return out
        u = front
        if self.grn is not None:
            g = self._run("grn", lambda: self.grn(img, u))
            u = g["out"]
            if self.training and self.train_stage == "grn":
                out["aux"] = g["residual"]
        if self.lrn is not None:
            u, _ = self._run("lrn", lambda: self.lrn(img, u))
        out["out"] = u
        return out
