"""Confusion matrix over a whole split and the standard scene-parsing scores.

Definitions (as in mmsegmentation / the ADE20K and Cityscapes tools), with
``C[i, j]`` = pixels of true class i predicted as j, ignore pixels excluded:

- IoU_k = C[k,k] / (sum_j C[k,j] + sum_i C[i,k] - C[k,k]); NaN when class k is
  neither present nor predicted (absent classes are left out of the means).
- Acc_k = C[k,k] / sum_j C[k,j]; NaN when class k is absent from the labels.
- aAcc = trace(C) / sum(C); mIoU, mAcc = nan-means of IoU_k, Acc_k.

All scores are reported in percent (0-100).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..constants import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` int64 confusion matrix (rows: ground truth, cols: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predictions ``pred`` (int, any shape) against ``target`` (same shape).

        Raises:
            ValueError: shape mismatch, or target/pred values outside [0, K) that are not the ignore index.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        if target.numel() and (target.min() < 0 or target.max() >= k):
            raise ValueError(f"target values outside [0, {k}) and != {self.ignore_index}")
        if pred.numel() and (pred.min() < 0 or pred.max() >= k):
            raise ValueError(f"prediction values outside [0, {k})")
        self.mat += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        return scores_from_confusion(self.mat, class_names)


def _nanmean(values: torch.Tensor) -> float:
    v = values[~values.isnan()]
    return float(v.mean()) if v.numel() else float("nan")


def scores_from_confusion(mat: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Scores from a confusion matrix: ``{"mIoU", "aAcc", "mAcc", "IoU": {name: v}, "Acc": {name: v}}``.

    Per-class values are ``None`` (JSON null) for classes with no pixels in
    the union (IoU) or in the labels (Acc).

    Raises:
        ValueError: ``class_names`` is not one distinct name per class.
    """
    mat = mat.double()
    k = mat.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k or len(set(names)) != k:  # per-class dicts are keyed by name: a repeat would lose a class
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{k} classes need {k} distinct names, got {len(names)}" + (f" (repeated: {dup})" if dup else ""))
    tp = mat.diag()
    gt, pr = mat.sum(1), mat.sum(0)
    union = gt + pr - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan"))) * 100
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan"))) * 100
    total = mat.sum()
    as_dict = lambda t: {n: (None if math.isnan(x) else x) for n, x in zip(names, t.tolist())}  # noqa: E731
    return {"mIoU": _nanmean(iou), "aAcc": float(tp.sum() / total * 100) if total > 0 else float("nan"),
            "mAcc": _nanmean(acc), "IoU": as_dict(iou), "Acc": as_dict(acc)}


def format_table(scores: dict) -> str:
    """A plain-text per-class table plus the summary line."""
    names = list(scores["IoU"])
    w = max(10, *(len(n) for n in names))
    fmt = lambda v: "   -  " if v is None else f"{v:6.2f}"  # noqa: E731
    lines = [f"{'class':<{w}}  {'IoU':>6}  {'Acc':>6}", "-" * (w + 16)]
    lines += [f"{n:<{w}}  {fmt(scores['IoU'][n])}  {fmt(scores['Acc'][n])}" for n in names]
    lines += ["-" * (w + 16), f"mIoU {scores['mIoU']:.2f}  aAcc {scores['aAcc']:.2f}  mAcc {scores['mAcc']:.2f}"]
    return "\n".join(lines)


def label_boundaries(label: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Boolean ``(H, W)`` map of pixels with a 4-neighbour of another label; pairs touching an
    ignore pixel do not count (the edge of an unlabelled region is not a class boundary)."""
    label = label.long()
    valid = label != ignore_index
    b = torch.zeros_like(label, dtype=torch.bool)
    dh = (label[:, 1:] != label[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    dv = (label[1:] != label[:-1]) & valid[1:] & valid[:-1]
    b[:, 1:] |= dh
    b[:, :-1] |= dh
    b[1:] |= dv
    b[:-1] |= dv
    return b


def _dilate(b: torch.Tensor, d: int) -> torch.Tensor:
    if d == 0:
        return b
    return F.max_pool2d(b[None, None].float(), 2 * d + 1, stride=1, padding=d)[0, 0] > 0


class BoundaryFScore:
    """Boundary F-score with a tolerance of ``tolerance`` pixels (Chebyshev distance), accumulated
    over a split (Csurka et al. 2013 style; the measure the GRN/LRN paper's boundary claims need).

    Precision = predicted boundary pixels within ``tolerance`` of a ground-truth boundary /
    predicted boundary pixels; recall the converse; F = 2PR / (P + R). Pixels whose ground truth
    is ignore are excluded from the predicted boundaries too. Values in percent.
    """

    def __init__(self, tolerance: int = 3, ignore_index: int = IGNORE_INDEX):
        self.tolerance, self.ignore_index = tolerance, ignore_index
        self.counts = torch.zeros(4, dtype=torch.int64)  # matched pred, pred, matched gt, gt

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``, ``target``: ``(H, W)`` or ``(N, H, W)`` integer label maps."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred, target = pred.cpu(), target.cpu()
        for p, t in zip(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])):
            p = torch.where(t == self.ignore_index, torch.full_like(p, self.ignore_index), p)
            bp, bt = label_boundaries(p, self.ignore_index), label_boundaries(t, self.ignore_index)
            self.counts += torch.tensor([(bp & _dilate(bt, self.tolerance)).sum(), bp.sum(),
                                         (bt & _dilate(bp, self.tolerance)).sum(), bt.sum()])

    def compute(self) -> dict:
        mp, np_, mg, ng = self.counts.tolist()
        p = mp / np_ * 100 if np_ else float("nan")
        r = mg / ng * 100 if ng else float("nan")
        f = 2 * p * r / (p + r) if np_ and ng and (p + r) > 0 else float("nan")
        return {"tolerance_px": self.tolerance, "precision": p, "recall": r, "F": f}


def category_iou(conf: torch.Tensor, categories: dict[str, Sequence[int]]) -> dict:
    """IoU of groups of classes (Cityscapes' 7 categories: ``Cityscapes.CATEGORIES``) from a ``(K, K)``
    confusion matrix (rows: ground truth): a pixel counts as right when its predicted class is in the
    true class's group. Returns ``{"mIoU_category": percent, "IoU_category": {name: percent or None}}``."""
    k = len(categories)
    lut = torch.zeros(conf.shape[0], dtype=torch.long)
    for i, ids in enumerate(categories.values()):
        lut[list(ids)] = i
    cat = torch.zeros(k, k, dtype=conf.dtype)
    cat.index_add_(0, lut, torch.zeros(conf.shape[0], k, dtype=conf.dtype).index_add_(1, lut, conf))
    s = scores_from_confusion(cat, list(categories))
    return {"mIoU_category": s["mIoU"], "IoU_category": s["IoU"]}
