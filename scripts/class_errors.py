"""Where one class's errors lie, on a split's whole images (single scale, the packaged inference of
``sceneparse.load``): its false-positive pixels by distance to the nearest true pixel of the class, its missed
pixels by distance to the nearest predicted one (a near miss of a few pixels is a localisation error; one far
from any is a spurious detection or a missed object), the share of each labelled object (connected component)
that is hit, by the object's mean width, and the class IoU with the prediction shifted by a few pixels
(a peak away from zero shift would be a misalignment between prediction and labels).

Usage: python scripts/class_errors.py [MODEL] [--class Pole] [--split val] [--out FILE.json]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
BINS = (0, 1.5, 2.5, 4.5, 8.5, 16.5, 1e9)  # Euclidean px: 1, 2, 3-4, 5-8, 9-16, farther


def error_distances(pred: np.ndarray, gt: np.ndarray, c: int, bins=BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` integer maps (labels >= the class count or 255 are to be masked by the caller). Returns the
    histograms (counts, ``len(bins) - 1``) of class ``c``'s false positives by Euclidean distance (px) to the
    nearest pixel labelled ``c`` and of its misses by distance to the nearest pixel predicted ``c``; with no
    such pixel in the image every one counts as infinitely far (last bin)."""
    g, p = gt == c, pred == c
    out = []
    for err, ref in ((p & ~g, g), (g & ~p, p)):
        d = ndi.distance_transform_edt(~ref) if ref.any() else np.full(err.shape, np.inf)
        out.append(np.histogram(np.minimum(d[err], bins[-1] - 1), bins)[0])
    return out[0], out[1]


def object_hits(pred: np.ndarray, gt: np.ndarray, c: int, min_px: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per connected component (8-connected) of class ``c`` in ``gt`` with at least ``min_px`` pixels: the
    share of its pixels predicted ``c`` and its mean width (pixels / rows it spans). Two float arrays."""
    lab, k = ndi.label(gt == c, structure=np.ones((3, 3)))
    hits, widths = [], []
    for i in range(1, k + 1):
        m = lab == i
        n = int(m.sum())
        if n < min_px:
            continue
        hits.append(float((pred[m] == c).mean()))
        widths.append(n / int(m.any(1).sum()))
    return np.array(hits), np.array(widths)


def shifted_iou(pred: np.ndarray, gt: np.ndarray, c: int, num_classes: int, shifts=(-3, -2, -1, 0, 1, 2, 3),
                margin: int = 4) -> dict:
    """``(N, H, W)`` maps: class ``c``'s IoU (%) with the prediction rolled by ``(dy, dx)`` for every pair of
    ``shifts``, on the image minus a ``margin`` px border (so the roll's wrap-around is not scored)."""
    g = gt[:, margin:-margin, margin:-margin]
    valid = g < num_classes
    table = {}
    for dy in shifts:
        for dx in shifts:
            p = np.roll(pred, (dy, dx), axis=(1, 2))[:, margin:-margin, margin:-margin]
            tp = ((p == c) & (g == c)).sum()
            fp = ((p == c) & (g != c) & valid).sum()
            fn = ((p != c) & (g == c)).sum()
            table[(dy, dx)] = 100.0 * tp / max(tp + fp + fn, 1)
    return table


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="a model name or checkpoint (default: the packaged default)")
    ap.add_argument("--class", dest="cls", default="Pole")
    ap.add_argument("--split", default="val")
    ap.add_argument("--root", default=str(REPO.parent / "shared/data/camvid"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import sceneparse

    from sceneparse.data import build_dataset

    seg = sceneparse.load(a.model)
    names = list(seg.classes)
    c = names.index(a.cls)
    ds = build_dataset("camvid", a.root, a.split)  # its pairs and label mapping (void -> 255)
    fp = fn = 0
    hits, widths, preds, gts = [], [], [], []
    for img_path, label_path in ds.pairs:
        img = np.array(Image.open(img_path).convert("RGB"))
        gt = ds.load_label(label_path).astype(np.int64)
        pred = np.asarray(seg(img)).astype(np.int64)
        a_fp, a_fn = error_distances(np.where(gt < len(names), pred, -1), gt, c)  # unlabelled pixels: no false positive
        fp, fn = fp + a_fp, fn + a_fn
        h, w = object_hits(pred, gt, c)
        hits.append(h), widths.append(w), preds.append(pred), gts.append(gt)
    hits, widths = np.concatenate(hits), np.concatenate(widths)
    shift = shifted_iou(np.stack(preds), np.stack(gts), c, len(names))
    edges = [f"{lo:g}-{hi:g}" if hi < 1e8 else f">{lo:g}" for lo, hi in zip(BINS[:-1], BINS[1:])]
    width_rows = {}
    for lo, hi in ((0, 3), (3, 6), (6, 1e9)):
        m = (widths >= lo) & (widths < hi)
        width_rows[f"{lo:g}-{hi:g}" if hi < 1e8 else f">={lo:g}"] = {
            "objects": int(m.sum()), "mean_share_hit": round(float(hits[m].mean()), 3) if m.any() else None}
    result = {
        "model": str(a.model or "default"), "class": a.cls, "split": a.split, "images": len(ds),
        "distance_bins_px": edges,
        "false_positive_share_by_distance_to_truth": [round(100 * x / max(fp.sum(), 1), 1) for x in fp],
        "miss_share_by_distance_to_prediction": [round(100 * x / max(fn.sum(), 1), 1) for x in fn],
        "false_positive_px": int(fp.sum()), "missed_px": int(fn.sum()),
        "objects": int(len(hits)), "objects_missed_entirely": round(float((hits == 0).mean()), 3),
        "objects_hit_under_25pct": round(float((hits < 0.25).mean()), 3),
        "objects_hit_over_50pct": round(float((hits > 0.5).mean()), 3), "by_mean_width_px": width_rows,
        "iou_by_shift_dy_dx": {f"{dy},{dx}": round(v, 2) for (dy, dx), v in shift.items()},
    }
    text = json.dumps(result, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
