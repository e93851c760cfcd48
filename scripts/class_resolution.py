"""How much of each class an output of stride s can win by plurality: for s in (4, 8, 16), the share of each
class's labelled pixels that lie in an s x s cell of the label map where that class is the most frequent.

A classifier reading one feature per cell and trained with per-pixel CE is pulled toward the cell's plurality
class, so a class with a low share at a model's output stride is one it rarely predicts (bilinear upsampling of
the logits recovers part of a cell, not a thin object inside it). Reads the CamVid train labels (11 = Unlabelled,
ignored); writes results/camvid/class_resolution.json and prints the table.

Usage: python scripts/class_resolution.py [CAMVID_ROOT=../shared/data/camvid] [SPLIT=train]
"""
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist")
STRIDES = (4, 8, 16)


def plurality_share(labels: np.ndarray, stride: int, k: int) -> np.ndarray:
    """``(k, 2)``: per class, its labelled pixels in the whole cells of ``labels`` (H, W ints, 255 ignored) and
    those of them in cells where it is the plurality class (ties: the lower class id)."""
    h, w = labels.shape[0] // stride * stride, labels.shape[1] // stride * stride
    cells = labels[:h, :w].reshape(h // stride, stride, w // stride, stride).transpose(0, 2, 1, 3)
    cells = cells.reshape(h // stride, w // stride, stride * stride)
    counts = np.stack([(cells == c).sum(-1) for c in range(k)], -1)
    plural = counts.argmax(-1)
    return np.array([[counts[..., c].sum(), counts[..., c][plural == c].sum()] for c in range(k)], dtype=np.int64)


def main(root: str = str(REPO.parent / "shared/data/camvid"), split: str = "train") -> dict:
    from sceneparse.data import build_dataset

    ds = build_dataset("camvid", root, split)  # its pairs and label mapping (void -> 255)
    pairs = ds.pairs
    totals = {s: np.zeros((len(CLASSES), 2), dtype=np.int64) for s in STRIDES}
    for _, label in pairs:
        y = ds.load_label(label).astype(np.int64)
        for s in STRIDES:
            totals[s] += plurality_share(y, s, len(CLASSES))
    out = {"split": f"CamVid {split} ({len(pairs)} label maps, 360x480)",
           "measure": "percent of a class's labelled pixels inside a stride x stride cell where it is the plurality class",
           "share": {c: {f"stride_{s}": round(100 * totals[s][i, 1] / max(totals[s][i, 0], 1), 1) for s in STRIDES}
                     for i, c in enumerate(CLASSES)}}
    (REPO / "results/camvid/class_resolution.json").write_text(json.dumps(out, indent=1) + "\n")
    print("class        " + "  ".join(f"s={s:<3d}" for s in STRIDES))
    for c, v in out["share"].items():
        print(f"{c:12s} " + "  ".join(f"{v[f'stride_{s}']:5.1f}" for s in STRIDES))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:])
