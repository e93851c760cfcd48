"""Where does a model go wrong: near label boundaries or inside regions? On the first N images of a split
(the eval transform, whole 360x480 images, single scale): the share of its wrong labelled pixels by their
distance (Chebyshev, pixels) to the nearest label boundary, and the mIoU it would score if an oracle fixed
only the errors inside regions (farther than ``--band`` px from a boundary: what a refiner of the same
output stride as its front, such as the GRN on an OS16 front, could reach at most by global reasoning)
or only those near boundaries (what a local, full-resolution refiner such as the LRN addresses).

Usage: python scripts/front_errors.py CHECKPOINT [--split train] [--n 64] [--band 8] [--out FILE.json]
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sceneparse.config import load_config
from sceneparse.data import build_dataset, build_eval_transform
from sceneparse.models.factory import model_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
RADII = (2, 4, 8, 16)


def boundary_distance_bands(label: torch.Tensor, radii=RADII) -> torch.Tensor:
    """For a ``(N, H, W)`` integer label map: per pixel, the index of the smallest radius r in ``radii``
    such that the (2r+1) x (2r+1) window around it holds another label (255 counts as a label: a
    void border is a boundary), or ``len(radii)`` where none does. ``(N, H, W)`` int64."""
    lab = label.float().unsqueeze(1)
    band = torch.full(label.shape, len(radii), dtype=torch.long)
    for i, r in reversed(list(enumerate(radii))):
        k = 2 * r + 1
        hi = F.max_pool2d(lab, k, 1, r)  # window max / min, edge windows cut at the border
        lo = -F.max_pool2d(-lab, k, 1, r)
        band[(hi != lo).squeeze(1)] = i
    return band


def confusion(pred: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    m = y != 255
    return torch.bincount(y[m] * k + pred[m], minlength=k * k).view(k, k)


def miou(c: torch.Tensor) -> float:
    """Mean IoU (%) over the classes present in the labels."""
    iou = c.diag() / (c.sum(0) + c.sum(1) - c.diag()).clamp(min=1)
    return 100 * iou[c.sum(1) > 0].mean().item()


def analyse(preds: list[torch.Tensor], labels: list[torch.Tensor], k: int, band_px: int = 8, radii=RADII) -> dict:
    """Error shares by boundary distance and the two oracle mIoUs (see the module docstring).

    Args:
        preds, labels: ``(H, W)`` int64 maps (255 in ``labels``: ignored), one pair per image.
        band_px: a radius in ``radii``; errors within it are "near a boundary".
    """
    if band_px not in radii:
        raise ValueError(f"band {band_px} must be one of {radii}")
    counts = torch.zeros(len(radii) + 1, dtype=torch.long)
    c_all = c_fix_inner = c_fix_near = torch.zeros(k, k, dtype=torch.long)
    cut = radii.index(band_px)
    for p, y in zip(preds, labels):
        b = boundary_distance_bands(y[None], radii)[0]
        wrong = (p != y) & (y != 255)
        counts += torch.bincount(b[wrong], minlength=len(radii) + 1)
        near = b <= cut
        c_all = c_all + confusion(p, y, k)
        c_fix_inner = c_fix_inner + confusion(torch.where(near, p, y), y, k)
        c_fix_near = c_fix_near + confusion(torch.where(near, y, p), y, k)
    total = max(1, counts.sum().item())
    names = [f"<= {r} px" for r in radii] + [f"> {radii[-1]} px"]
    return {"images": len(preds), "wrong_share_by_boundary_distance": {n: round(100 * c / total, 1)
                                                                        for n, c in zip(names, counts.tolist())},
            "band_px": band_px, "mIoU": round(miou(c_all), 2),
            "mIoU_if_errors_inside_regions_fixed": round(miou(c_fix_inner), 2),
            "mIoU_if_errors_near_boundaries_fixed": round(miou(c_fix_near), 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--band", type=int, default=8)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    model, _ = model_from_checkpoint(a.checkpoint)
    model.eval()
    d = load_config(REPO / "configs/camvid/pspnet_effl0.yaml", [f"data.root={REPO.parent / 'shared/data/camvid'}"]).data
    ds = build_dataset(d.dataset, d.root, a.split, build_eval_transform(d.mean, d.std))
    preds, labels = [], []
    for i in range(min(a.n, len(ds))):
        s = ds[i]
        with torch.no_grad():
            preds.append(model(s["image"][None])["out"].argmax(1)[0])
        labels.append(s["label"].long())
    res = {"checkpoint": str(a.checkpoint), "split": a.split, **analyse(preds, labels, len(ds.CLASSES), a.band)}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
