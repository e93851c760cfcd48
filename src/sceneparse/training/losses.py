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


def lovasz_softmax_sorted(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Lovasz-softmax as Alg. 1 of Berman et al. (CVPR 2018) writes it: one sort of each class's errors, the
    errors weighed by the differences of the Jaccard loss of the sorted prefixes, computed in ``dtype``. The
    reference that :func:`lovasz_softmax` (the binned form training uses) is tested and timed against; same
    arguments, shapes and value."""
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    p = logits.to(dtype).softmax(1).permute(0, 2, 3, 1)[valid]  # (P, K)
    y = target[valid]
    losses = []
    for c in range(logits.shape[1]):
        fg = (y == c).to(dtype)
        if fg.sum() == 0:
            continue
        errors, order = (fg - p[:, c]).abs().sort(descending=True)
        fg_sorted = fg[order]
        gts = fg_sorted.sum()
        jaccard = 1.0 - (gts - fg_sorted.cumsum(0)) / (gts + (1.0 - fg_sorted).cumsum(0))
        losses.append(torch.dot(errors, torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])))
    return torch.stack(losses).mean()


def _lovasz_bin_keys(errors: torch.Tensor, complement: torch.Tensor, mantissa_bits: int, smallest: float
                     ) -> tuple[torch.Tensor, int]:
    """Bin keys of errors in ``[0, 1]``, ascending with the error, at a relative resolution of
    ``2 ** -mantissa_bits`` near both ends (float32 bit patterns order like their values): an error up to 0.5
    is binned by its own bits, a larger one by the bits of ``complement`` (1 - error, exact where it is small);
    errors (complements) below ``smallest`` share the first (last) bin. Returns ``(keys int64, bin count)``."""
    shift = 23 - mantissa_bits
    base = torch.tensor(smallest, dtype=torch.float32).view(torch.int32).item()
    half = (torch.tensor(0.5, dtype=torch.float32).view(torch.int32).item() - base) >> shift
    low = (errors.clamp(min=smallest).view(torch.int32) - base) >> shift
    high = 2 * half - ((complement.clamp(min=smallest).view(torch.int32) - base) >> shift)
    return torch.where(errors <= 0.5, low, high).long(), 2 * half + 1


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   mantissa_bits: int = 8, smallest: float = 2.0 ** -40) -> torch.Tensor:
    """Lovasz-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018, Eq. 8-9 and Alg. 1): the Lovasz
    extension of the Jaccard loss ``1 - IoU_c`` applied to the softmax errors ``m_i(c) = |y_i(c) - p_i(c)|``,
    averaged over the classes present in ``target`` (the paper's "present" variant), computed over all
    labelled pixels of the batch at once. On hard (one-hot) predictions it equals ``1 - mean IoU`` of the
    present classes. 0 when no pixel is labelled.

    Alg. 1 sorts each class's errors and weighs the i-th largest by the step of the Jaccard loss there:
    ``1 / (G + b)`` for a ground-truth pixel, ``(G - a) / ((G + b) (G + b + 1))`` for another, where ``G`` is
    the class's pixel count and ``a`` / ``b`` count the ground-truth / other pixels ranked before it. Here the
    errors are counted into bins instead of sorted (no sort: see docs/training_speed.md for the speed), bins
    of relative width ``2 ** -mantissa_bits`` near 0 and near 1 (a confident model's errors crowd near 0, and
    near 1 where it is confidently wrong; at 0.5 a bin is ``2 ** -(mantissa_bits + 1)`` wide), errors below
    ``smallest`` (or above ``1 - smallest``) sharing one bin. Each pixel gets Alg. 1's step at the mean rank
    of its kind in its bin (an estimate of the mean of its kind's steps over the orders of the bin's pixels),
    scaled so that a bin's steps sum to the Jaccard loss's change over the bin: the loss is exact when the
    errors in a bin are equal (hard predictions, one pixel per bin). Steps are computed in float64: on
    8 x 11 x 352 x 480 logits the gradient is within 3e-4 (relative) of Alg. 1 sorted in float64, random or
    confident, nearer than a float32 sort (1.4e-2 / 2.3e-3; tests compare them on small inputs).

    Args:
        logits: ``(N, K, H, W)``; target: ``(N, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
        mantissa_bits: the bins' relative resolution (8: 0.4%); smallest: the error below which bins merge.
    Returns:
        a scalar float32 tensor in ``[0, 1]``.
    """
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    k = logits.shape[1]
    p = logits.float().softmax(1).permute(0, 2, 3, 1)[valid]  # (P, K)
    y = target[valid]
    rows = torch.arange(y.numel(), device=y.device)
    fg = y[:, None] == torch.arange(k, device=y.device)  # (P, K) bool
    errors = torch.where(fg, 1.0 - p, p)
    with torch.no_grad():
        keys, nb = _lovasz_bin_keys(errors, torch.where(fg, p, 1.0 - p), mantissa_bits, smallest)
        idx = (nb - 1) - keys  # bin 0 holds the largest errors: the order of Alg. 1's sort
        del keys
        idx += torch.arange(k, device=y.device) * nb  # into a (K, nb) table
        idx_fg = idx[rows, y]
        n_all = torch.bincount(idx.flatten(), minlength=k * nb).view(k, nb).double()
        n_fg = torch.bincount(idx_fg, minlength=k * nb).view(k, nb).double()
        n_bg = n_all - n_fg
        g = n_fg.sum(1, keepdim=True)  # G per class
        a0, b0 = n_fg.cumsum(1) - n_fg, n_bg.cumsum(1) - n_bg  # ranked before the bin
        step_fg = 1.0 / (g + b0 + n_bg / 2).clamp(min=1.0)
        b_mid = b0 + (n_bg - 1).clamp(min=0) / 2
        step_bg = (g - a0 - n_fg / 2) / ((g + b_mid) * (g + b_mid + 1)).clamp(min=1.0)
        # the Jaccard loss 1 - (G - a) / (G + b) after the bin minus before it
        jac = lambda a, b: 1.0 - (g - a) / (g + b).clamp(min=1.0)  # noqa: E731
        change = jac(a0 + n_fg, b0 + n_bg) - jac(a0, b0)
        total = n_fg * step_fg + n_bg * step_bg
        scale = torch.where(total > 0, change / total.clamp(min=1e-300), torch.ones_like(total))
        steps = (step_bg * scale).float().flatten()[idx]
        steps[rows, y] = (step_fg * scale).float().flatten()[idx_fg]
        present = g[:, 0] > 0
    return (errors * steps).sum(0)[present].mean()
