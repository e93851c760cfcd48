"""Specialize and Fuse: pyramidal output representation (Sec. 3 of "Specialize and Fuse:
Pyramidal Output Representation for Semantic Segmentation", ICCV 2021).

Levels are numbered as in the paper: l = 1 is the coarsest, l = L the finest; ``strides`` lists
them coarse to fine, e.g. (32, 16, 8, 4), each half the previous (every cell has four children).
Functions here are pure tensor code shared by the pyramid head, its loss and the fuse step.

Ignore handling (a documented choice; the paper does not say): inside a cell, pixels labelled
``ignore_index`` are skipped -- a cell is a unity-cell when all its *labelled* pixels share one
class; a cell with no labelled pixel is ignored at that level (U = Y = ignore).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...constants import IGNORE_INDEX

POLICIES = ("naive", "simple_fix", "final")


def check_strides(strides: Sequence[int]) -> tuple[int, ...]:
    """Validate coarse-to-fine level strides: at least 2 levels, each a power of 2 and a power-of-2
    multiple of the next, e.g. ``(32, 16, 8, 4)`` (Sec. 5) or ``(32, 4)`` (an L=2 pyramid whose coarse
    cell holds 8 x 8 finest cells). Raises ``ValueError``."""
    strides = tuple(int(s) for s in strides)
    if len(strides) < 2:
        raise ValueError(f"a pyramid needs at least 2 levels, got strides {strides}")
    power_of_2 = all(s >= 1 and s & (s - 1) == 0 for s in strides)
    if not power_of_2 or any(a <= b for a, b in zip(strides, strides[1:])):
        raise ValueError(f"strides must be powers of 2, coarse to fine (each larger than the next), got {strides}")
    return strides


def pyramid_ground_truth(label: torch.Tensor, strides: Sequence[int], ignore_index: int = IGNORE_INDEX
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pyramidal ground truth (Sec. 3.1) from a per-pixel label map.

    Args:
        label: ``(N, H, W)`` int64 class ids or ``ignore_index``; H and W divisible by ``strides[0]``.
        strides: coarse-to-fine strides of the L levels.

    Returns:
        ``(unity, semantic)``: lists over levels (coarse to fine) of ``(N, H/s, W/s)`` int64 maps.
        ``unity``: 1 unity-cell, 0 mix-cell, ``ignore_index`` no labelled pixel.
        ``semantic``: the shared class of a unity-cell, ``ignore_index`` for mix / empty cells.

    Raises:
        ValueError: H or W not divisible by the coarsest stride.
    """
    strides = check_strides(strides)
    n, h, w = label.shape
    if h % strides[0] or w % strides[0]:
        raise ValueError(f"label size {h}x{w} is not divisible by the coarsest stride {strides[0]}; "
                         "resize or pad the input first")
    lab = label.long()[:, None].float()
    valid = lab != ignore_index
    big = float(ignore_index + 1)
    hi_src = torch.where(valid, lab, torch.full_like(lab, -1.0))
    lo_src = torch.where(valid, -lab, torch.full_like(lab, -big))
    unity, semantic = [], []
    for s in strides:
        hi = F.max_pool2d(hi_src, s)[:, 0]
        lo = -F.max_pool2d(lo_src, s)[:, 0]
        empty = hi < 0
        same = (hi == lo) & ~empty
        u = torch.where(empty, torch.full_like(hi, ignore_index), same.float())
        y = torch.where(same, hi, torch.full_like(hi, ignore_index))
        unity.append(u.long())
        semantic.append(y.long())
    return unity, semantic


def _up(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Each cell of ``mask`` ``(N, h, w)`` copied onto its children in the ``size`` grid (a multiple)."""
    fy, fx = size[0] // mask.shape[-2], size[1] // mask.shape[-1]
    return mask.repeat_interleave(fy, dim=-2).repeat_interleave(fx, dim=-1)


def relabel(unity: list[torch.Tensor], semantic: list[torch.Tensor], policy: str = "final",
            unity_prob: list[torch.Tensor] | None = None, tau: float = 0.9, ignore_index: int = IGNORE_INDEX
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """"Done by coarser" relabelling for training (Sec. 3.2, Table 7).

    Args:
        unity, semantic: the pyramidal ground truth (``pyramid_ground_truth``), coarse to fine.
        policy: ``"naive"`` (no relabelling), ``"simple_fix"`` (descendants of ground-truth
            unity-cells -> ignore), ``"final"`` (descendants of *predicted true-positive* unity-cells,
            i.e. predicted unity probability >= tau on a ground-truth unity-cell -> ignore; recomputed
            for every batch from ``unity_prob``).
        unity_prob: predicted unity probabilities for levels 1..L-1 (``(N, h_l, w_l)``), "final" only.

    Returns:
        relabelled ``(unity, semantic)`` (new tensors; levels 1 is never relabelled).

    Raises:
        ValueError: unknown policy, or "final" without ``unity_prob``.
    """
    if policy not in POLICIES:
        raise ValueError(f"relabel policy must be one of {POLICIES}, got {policy!r}")
    if policy == "naive":
        return list(unity), list(semantic)
    if policy == "final" and (unity_prob is None or len(unity_prob) < len(unity) - 1):
        raise ValueError("the 'final' policy needs the predicted unity probabilities of levels 1..L-1")
    out_u, out_y = [unity[0]], [semantic[0]]
    done = torch.zeros_like(unity[0], dtype=torch.bool)
    for lvl in range(1, len(unity)):
        parent = unity[lvl - 1] == 1
        if policy == "final":
            parent = parent & (unity_prob[lvl - 1].detach() >= tau)
        done = _up(done | parent, unity[lvl].shape[-2:])
        out_u.append(torch.where(done, torch.full_like(unity[lvl], ignore_index), unity[lvl]))
        out_y.append(torch.where(done, torch.full_like(semantic[lvl], ignore_index), semantic[lvl]))
    return out_u, out_y


def pyramid_loss(semantic_logits: list[torch.Tensor], unity_prob: list[torch.Tensor], unity_gt: list[torch.Tensor],
                 semantic_gt: list[torch.Tensor], ignore_index: int = IGNORE_INDEX,
                 fused_upsample: bool = False, class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Eq. 1: ``mean_l CE(Y_hat_l, Y_l) + mean_{l<L} BCE(U_hat_l, U_l)`` on relabelled ground truth.

    ``semantic_logits``: L tensors ``(N, C, h_l, w_l)``; ``unity_prob``: L-1 probabilities
    ``(N, h_l, w_l)`` (after the sigmoid and min-pooling); targets as from ``relabel``. The finest
    target may be a per-pixel map larger than its logits (``finest_pixel_target``): the logits are
    then bilinearly upsampled to it (``fused_upsample``: by the native kernel that computes the CE of the
    upsampled logits without storing them, :func:`sceneparse.kernels.train_ops.upsample_cross_entropy`,
    where it applies). A level whose cells are all ignored contributes 0. ``class_weight`` ``(C,)`` (our
    addition, ``train.class_weighting``; not in the paper): each level's CE is the class-weighted mean over
    its cells (``F.cross_entropy(weight=...)``); the unity BCE is unweighted; the fused kernel is not used.
    """
    ce = []
    for i, (logits, y) in enumerate(zip(semantic_logits, semantic_gt)):
        if i == len(semantic_logits) - 1 and y.shape[-2:] != logits.shape[-2:]:
            # the finest level on a per-pixel target (``finest_pixel_target``): logits upsampled to it
            if fused_upsample and class_weight is None:
                from ...kernels.train_ops import upsample_cross_entropy

                fused = upsample_cross_entropy(logits, y, ignore_index)
                if fused is not None:
                    ce.append(fused)
                    continue
            logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        weight = None if class_weight is None else class_weight.to(logits.device, torch.float32)
        ce.append(F.cross_entropy(logits.float(), y, weight=weight, ignore_index=ignore_index)
                  if (y != ignore_index).any() else logits.sum() * 0.0)
    bce = []
    for p, u in zip(unity_prob, unity_gt):
        keep = u != ignore_index
        bce.append(F.binary_cross_entropy(p.float()[keep].clamp(1e-6, 1 - 1e-6), u[keep].float()) if keep.any()
                   else p.sum() * 0.0)
    loss_ce = torch.stack(ce).mean()
    loss_bce = torch.stack(bce).mean() if bce else loss_ce * 0.0
    return loss_ce + loss_bce, {"loss": loss_ce.detach(), "loss_unity": loss_bce.detach()}


def finest_pixel_target(label: torch.Tensor, unity: list[torch.Tensor], relabelled_unity: list[torch.Tensor],
                        stride: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-pixel target of the finest level: every labelled pixel, less those "done by coarser".

    The paper (Sec. 3) puts the finest level at stride s_L = 4 and *assumes* its cells are
    unity-cells; it does not say how a mixed finest cell is supervised. Taken literally (cell-level
    targets at every level), the pixels of mixed 4x4 cells are supervised at no level: 8.5 % of
    labelled CamVid train pixels, 76 % of Pole pixels (``scripts/pyramid_supervision_share.py``).
    Our choice: the finest logits are upsampled (bilinear) to the label and trained on every
    labelled pixel, except those whose finest cell was relabelled "done by coarser" (``relabel``),
    as the single-output baseline is trained on every pixel.

    Args:
        label: ``(N, H, W)`` int64 labels; H, W = ``stride`` x the finest level's size.
        unity, relabelled_unity: the finest level's unity map before / after ``relabel``
            (``(N, H/stride, W/stride)``); a cell that went from labelled to ``ignore_index`` is done.

    Returns:
        ``(N, H, W)`` int64: ``label`` with the done pixels set to ``ignore_index``.
    """
    done = (relabelled_unity[-1] == ignore_index) & (unity[-1] != ignore_index)
    done = done.repeat_interleave(stride, dim=-2).repeat_interleave(stride, dim=-1)
    return torch.where(done, torch.full_like(label, ignore_index), label)


def supervised_share(label: torch.Tensor, relabelled_semantic: list[torch.Tensor], strides: Sequence[int],
                     finest_target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """Diagnostic: share (%) of the labelled pixels of ``label`` whose semantic class is supervised at
    each level (``"sup_s32"`` ...; levels above the finest through their cells, the finest through
    ``finest_target``) and at no level (``"sup_none"``)."""
    labelled = label != ignore_index
    n = labelled.sum().clamp_min(1).float()
    covered = torch.zeros_like(labelled)
    out = {}
    for s, y in zip(strides[:-1], relabelled_semantic[:-1]):
        cell = (y != ignore_index).repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1) & labelled
        covered |= cell
        out[f"sup_s{s}"] = float(100.0 * cell.sum() / n)
    fine = finest_target != ignore_index
    covered |= fine
    out[f"sup_s{strides[-1]}"] = float(100.0 * fine.sum() / n)
    out["sup_none"] = float(100.0 * (labelled & ~covered).sum() / n)
    return out


def fuse(semantic: list[torch.Tensor], unity_prob: list[torch.Tensor], tau: float = 0.9
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: every finest-level cell takes the semantic prediction of its coarsest predicted unity-cell.

    Args:
        semantic: L score maps ``(N, C, h_l, w_l)`` coarse to fine (logits or probabilities).
        unity_prob: L-1 maps ``(N, h_l, w_l)``; the finest level is always a unity level.
        tau: unity threshold (a cell is unity when ``U_hat >= tau``).

    Returns:
        ``(fused, level)``: ``(N, C, h_L, w_L)`` scores and ``(N, h_L, w_L)`` int64 index (0-based,
        0 = coarsest) of the level each finest cell was assigned to.
    """
    if len(unity_prob) != len(semantic) - 1:
        raise ValueError(f"{len(semantic)} semantic levels need {len(semantic) - 1} unity levels")
    size = semantic[-1].shape[-2:]
    up = lambda t: F.interpolate(t, size=size, mode="nearest")  # noqa: E731  cells -> their finest children
    fused = semantic[-1].clone()
    n = semantic[-1].shape[0]
    level = torch.full((n, *size), len(semantic) - 1, dtype=torch.long, device=fused.device)
    undecided = torch.ones((n, 1, *size), dtype=torch.bool, device=fused.device)
    for lvl, (y, u) in enumerate(zip(semantic[:-1], unity_prob)):
        take = undecided & (up(u[:, None].float()) >= tau)
        fused = torch.where(take, up(y.float()).to(fused.dtype), fused)
        level = torch.where(take[:, 0], torch.full_like(level, lvl), level)
        undecided = undecided & ~take
    return fused, level
