"""Training loss: cross-entropy on the main logits plus the weighted auxiliary loss."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .constants import IGNORE_INDEX


class SegLoss(nn.Module):
    """``CE(out, y) + aux_weight * CE(aux, y)`` with ``ignore_index`` (PSPNet Sec. 3.4, alpha=0.4, Table 2).

    ``outputs`` is the model's dict; logits whose H, W differ from the label's
    are bilinearly upsampled to the label size first (DeepLabv3 "upsampling
    logits"), or, with ``downsample_labels=True``, the labels are nearest-
    downsampled to the logits' size instead (the older DeepLab protocol,
    DeepLabv3 Table 8). Returns
    ``(total, {"loss": main, "loss_aux": aux})`` with scalar tensors.
    If every pixel of the batch is ignored the loss is 0 (not NaN).
    """

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX, downsample_labels: bool = False):
        super().__init__()
        self.aux_weight, self.ignore_index, self.downsample_labels = aux_weight, ignore_index, downsample_labels

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            if self.downsample_labels:
                target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
            else:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor):
        main = self._ce(outputs["out"], target)
        parts = {"loss": main.detach()}
        total = main
        if "aux" in outputs and self.aux_weight > 0:
            aux = self._ce(outputs["aux"], target)
            parts["loss_aux"] = aux.detach()
            total = total + self.aux_weight * aux
        return total, parts
