"""Training loss: cross-entropy on the main logits plus the weighted auxiliary loss; optionally online
hard example mining (OHEM), class weights from the training split's pixel frequencies, and a soft Dice
or Lovasz-softmax term."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..constants import IGNORE_INDEX


class SegLoss(nn.Module):
    """``CE(out, y) + aux_weight * CE(aux, y)`` with ``ignore_index`` (PSPNet Sec. 3.4, alpha=0.4, Table 2).

    ``outputs`` is the model's dict; logits whose H, W differ from the label's
    are bilinearly upsampled to the label size first (DeepLabv3 "upsampling
    logits"), or, with ``downsample_labels=True``, the labels are nearest-
    downsampled to the logits' size instead (the older DeepLab protocol,
    DeepLabv3 Table 8). Returns
    ``(total, {"loss": main, "loss_aux": aux})`` with scalar tensors.
    If every pixel of the batch is ignored the loss is 0 (not NaN).

    ``class_weight`` ``(K,)``: per-class CE weights (:func:`class_weights`); ``ohem_thresh``: online hard
    example mining (:func:`ohem_cross_entropy`) on both terms; ``dice_weight`` > 0 adds that times
    :func:`dice_loss` of the main output (``parts["loss_dice"]``); ``lovasz_weight`` > 0 adds that times
    :func:`lovasz_softmax` of the main output (``parts["loss_lovasz"]``).
    """

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX, downsample_labels: bool = False,
                 class_weight: torch.Tensor | None = None, ohem_thresh: float | None = None, ohem_min_kept: int = 100_000,
                 dice_weight: float = 0.0, lovasz_weight: float = 0.0):
        super().__init__()
        self.aux_weight, self.ignore_index, self.downsample_labels = aux_weight, ignore_index, downsample_labels
        self.register_buffer("class_weight", None if class_weight is None else torch.as_tensor(class_weight).float())
        self.ohem_thresh, self.ohem_min_kept, self.dice_weight = ohem_thresh, ohem_min_kept, dice_weight
        self.lovasz_weight = lovasz_weight
        # the training fast path (training.fast_train): low-resolution logits are upsampled inside the fused
        # native upsampling + CE kernel (same value and gradient, no full-resolution tensors)
        self.fused_upsample = False

    def supports_fused_upsample(self) -> bool:
        """Whether the CE terms can run fused with the upsampling (a plain CE: no OHEM, no class weights,
        logits upsampled rather than labels downsampled)."""
        return self.class_weight is None and self.ohem_thresh is None and not self.downsample_labels

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            if self.downsample_labels:
                target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
            else:
                if self.fused_upsample and self.supports_fused_upsample():
                    from ..kernels.train_ops import upsample_cross_entropy

                    loss = upsample_cross_entropy(logits, target, self.ignore_index)
                    if loss is not None:
                        return loss
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        if self.ohem_thresh is not None:
            return ohem_cross_entropy(logits, target, self.ohem_thresh, self.ohem_min_kept, weight, self.ignore_index)
        return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=self.ignore_index)

    def region_terms(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor | float, dict]:
        """``dice_weight * dice_loss + lovasz_weight * lovasz_softmax`` of ``logits`` ``(N, K, h, w)`` (bilinearly
        upsampled to the label's ``(N, H, W)`` first when smaller), and their parts (``"loss_dice"``,
        ``"loss_lovasz"``, detached); ``(0.0, {})`` when both weights are 0."""
        total, parts = 0.0, {}
        for name, weight, term in (("loss_dice", self.dice_weight, dice_loss),
                                   ("loss_lovasz", self.lovasz_weight, lovasz_softmax)):
            if weight > 0:
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
                value = term(logits, target, self.ignore_index)
                parts[name] = value.detach()
                total = total + weight * value
        return total, parts

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor):
        main = self._ce(outputs["out"], target)
        parts = {"loss": main.detach()}
        extra, extra_parts = self.region_terms(outputs["out"], target)
        total = main + extra
        parts.update(extra_parts)
        if "aux" in outputs and self.aux_weight > 0:
            aux = self._ce(outputs["aux"], target)
            parts["loss_aux"] = aux.detach()
            total = total + self.aux_weight * aux
        return total, parts


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7, min_kept: int = 100_000,
                       weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (online hard example mining, as in PSPNet's and
    mmsegmentation's training code).

    A labelled pixel is kept when the softmax probability of its true class is below
    ``max(thresh, p_(min_kept+1))``, ``p_(j)`` being the j-th smallest such probability of the batch:
    the ``min_kept`` hardest pixels are always kept (ties aside; all of them when at most ``min_kept``
    are labelled). The loss is the (``weight``-weighted) mean CE of the kept pixels.

    Args:
        logits: ``(N, K, H, W)``; target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    with torch.no_grad():
        prob = logits.softmax(1).gather(1, target.clamp(0, logits.shape[1] - 1)[:, None])[:, 0]
        p_valid = prob[valid]
        if min_kept >= p_valid.numel():
            keep = valid
        else:
            keep = valid & (prob < max(float(thresh), float(p_valid.kthvalue(int(min_kept) + 1).values)))
    if not keep.any():
        return logits.sum() * 0.0
    if weight is None:
        return ce[keep].mean()
    return ce[keep].sum() / weight[target[keep]].sum()


def class_weights(pixel_counts, method: str = "median_freq") -> torch.Tensor:
    """Per-class CE weights ``(K,)`` from the training split's pixel counts per class.

    ``"median_freq"``: ``median(f) / f_c`` with ``f_c`` the class's share of the labelled pixels
    (median frequency balancing, Eigen & Fergus 2015, SegNet's CamVid recipe); ``"inverse_log"``:
    ``1 / ln(1.02 + f_c)`` (ENet, Paszke et al. 2016). A class without pixels gets weight 0.

    Raises:
        ValueError: unknown ``method`` or no labelled pixel at all.
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    if counts.sum() <= 0:
        raise ValueError("class weights need at least one labelled pixel")
    freq = counts / counts.sum()
    present = counts > 0
    if method == "median_freq":
        w = torch.where(present, freq[present].median() / freq.clamp(min=1e-12), torch.zeros_like(freq))
    elif method == "inverse_log":
        w = torch.where(present, 1.0 / torch.log(1.02 + freq), torch.zeros_like(freq))
    else:
        raise ValueError(f"class weighting must be 'median_freq' or 'inverse_log', got {method!r}")
    return w.float()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
              eps: float = 1.0) -> torch.Tensor:
    """Soft multi-class Dice loss: ``1 - mean_c (2 sum p_c y_c + eps) / (sum p_c + sum y_c + eps)`` over the
    labelled pixels, ``p`` the softmax, ``y`` the one-hot target, the mean over the classes present in
    ``target`` (an absent class would only reward predicting nothing). 0 when no pixel is labelled.

    Args:
        logits: ``(N, K, H, W)``; target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
    """
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    k = logits.shape[1]
    p = logits.float().softmax(1).permute(0, 2, 3, 1)[valid]  # (P, K)
    y = F.one_hot(target[valid], k).float()
    inter, sums = (p * y).sum(0), p.sum(0) + y.sum(0)
    present = y.sum(0) > 0
    return 1.0 - ((2 * inter + eps) / (sums + eps))[present].mean()


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovasz-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018, Eq. 8-9 and Alg. 1): the Lovasz
    extension of the Jaccard loss ``1 - IoU_c`` applied to the softmax errors ``m_i(c) = |y_i(c) - p_i(c)|``,
    averaged over the classes present in ``target`` (the paper's "present" variant), computed over all
    labelled pixels of the batch at once. On hard (one-hot) predictions it equals ``1 - mean IoU`` of the
    present classes. 0 when no pixel is labelled.

    Args:
        logits: ``(N, K, H, W)``; target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
    Returns:
        a scalar float32 tensor in ``[0, 1]``.
    """
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    k = logits.shape[1]
    p = logits.float().softmax(1).permute(0, 2, 3, 1)[valid]  # (P, K)
    y = target[valid]
    losses = []
    for c in range(k):
        fg = (y == c).float()
        if fg.sum() == 0:
            continue
        errors, order = (fg - p[:, c]).abs().sort(descending=True)
        fg_sorted = fg[order]
        gts = fg_sorted.sum()
        # gradient of the Lovasz extension: Jaccard loss of the first i sorted pixels, differenced (Alg. 1)
        jaccard = 1.0 - (gts - fg_sorted.cumsum(0)) / (gts + (1.0 - fg_sorted).cumsum(0))
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, grad))
    return torch.stack(losses).mean()
