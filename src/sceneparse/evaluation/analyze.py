"""Analysis of a pyramidal-output model (Specialize and Fuse, Sec. 5.5 / Table 9).

For every pixel, the fuse step (Eq. 2) assigns a pyramid level; ``analyze_pyramid`` scores, for
each (assigned level a, predicting level p) pair, the mIoU of level p's own prediction on the
pixels assigned to a -- the diagonal should win if each level specialised in its pixels -- and
reports the share of labelled pixels decided at each level. ``level_mIoU`` scores each level's
prediction on all pixels: its last entry is the "finest level only" output of Table 8 (the
pyramid used as auxiliary supervision), to compare with ``fused_mIoU``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..constants import IGNORE_INDEX
from .metrics import ConfusionMatrix


@torch.inference_mode()
def analyze_pyramid(model, dataset, device="cpu", progress: bool = True) -> dict:
    """Returns ``{"strides", "pixel_share" (percent per assigned level), "mIoU" [a][p] (percent or None),
    "level_mIoU" [p] (percent, all pixels), "fused_mIoU"}`` over ``dataset`` (whole-image inference, batch 1).

    Raises:
        ValueError: the model is not a pyramidal-output model with at least two levels.
    """
    if not hasattr(model, "unity_head") or model.unity_head is None:
        raise ValueError("analyze needs a pyramid_output model with at least two levels")
    model.eval()
    L, k = len(model.strides), dataset.num_classes
    cms = [[ConfusionMatrix(k) for _ in range(L)] for _ in range(L)]
    fused_cm = ConfusionMatrix(k)
    level_cms = [ConfusionMatrix(k) for _ in range(L)]
    counts = torch.zeros(L, dtype=torch.int64)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, generator=torch.Generator())
    for batch in tqdm(loader, desc="analyze", disable=not progress, leave=False):
        x, target = batch["image"].to(device), batch["label"]
        out = model.forward_pyramid(x)
        size = target.shape[-2:]
        level = F.interpolate(out["level"][:, None].float(), size=size, mode="nearest")[:, 0].long().cpu()
        fused_cm.update(out["out"].argmax(1).cpu(), target)
        valid = target != IGNORE_INDEX
        for a in range(L):
            counts[a] += ((level == a) & valid).sum()
        for p, sem in enumerate(out["semantic"]):
            pred = F.interpolate(sem.float(), size=size, mode="bilinear", align_corners=False).argmax(1).cpu()
            level_cms[p].update(pred, target)
            for a in range(L):
                sel = level == a
                if sel.any():
                    cms[a][p].update(pred[sel], target[sel])
    share = (counts.double() / counts.sum().clamp(min=1) * 100).tolist()
    miou = [[(None if cms[a][p].mat.sum() == 0 else cms[a][p].compute()["mIoU"]) for p in range(L)] for a in range(L)]
    return {"strides": list(model.strides), "pixel_share": share, "mIoU": miou,
            "level_mIoU": [cm.compute()["mIoU"] for cm in level_cms],
            "fused_mIoU": fused_cm.compute()["mIoU"], "num_images": len(dataset)}


def plot_analysis(result: dict, out_png: str, title: str = "") -> None:
    """Table 9 as a heatmap: mIoU of each predicting level (columns) on the pixels each level was
    assigned by the fuse step (rows), with the rows' pixel shares; a dark diagonal means each level
    specialised in the pixels it decides."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    strides = result["strides"]
    grid = np.array([[np.nan if v is None else v for v in row] for row in result["mIoU"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(strides) + 2.5, 1.1 * len(strides) + 1.5))
    im = ax.imshow(grid, cmap="viridis")
    for a in range(len(strides)):
        for p in range(len(strides)):
            if not np.isnan(grid[a, p]):
                ax.text(p, a, f"{grid[a, p]:.1f}", ha="center", va="center",
                        color="white" if grid[a, p] < np.nanmean(grid) else "black", fontsize=9)
    ax.set_xticks(range(len(strides)), [f"s{s}" for s in strides])
    ax.set_yticks(range(len(strides)),
                  [f"s{s} ({share:.0f}%)" for s, share in zip(strides, result["pixel_share"])])
    ax.set_xlabel("predicting level")
    ax.set_ylabel("assigned level (share of pixels)")
    ax.set_title(title or f"mIoU per level pair; fused {result['fused_mIoU']:.2f}", fontsize=10)
    fig.colorbar(im, ax=ax, label="mIoU (%)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def format_analysis(result: dict) -> str:
    strides = result["strides"]
    head = "assigned \\ predicting " + "".join(f"  s{s:<5}" for s in strides) + "   share %"
    lines = [head]
    for a, row in enumerate(result["mIoU"]):
        cells = "".join("   -    " if v is None else f"  {v:6.2f}" for v in row)
        lines.append(f"level s{strides[a]:<15}{cells}   {result['pixel_share'][a]:6.2f}")
    if "level_mIoU" in result:
        cells = "".join(f"  {v:6.2f}" for v in result["level_mIoU"])
        lines.append(f"{'all pixels':<22}{cells}")
    lines.append(f"fused mIoU {result['fused_mIoU']:.2f}")
    return "\n".join(lines)
