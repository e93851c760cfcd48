"""Cityscapes (Cordts et al. 2016), fine annotations, 19 training classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegmentationDataset

# official labelId -> trainId for the 19 evaluated classes (cityscapesscripts/helpers/labels.py)
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
TRAIN_TO_LABEL = {v: k for k, v in LABEL_TO_TRAIN.items()}
# categories of the 19 classes, for category IoU
CATEGORIES = {"flat": (0, 1), "construction": (2, 3, 4), "object": (5, 6, 7), "nature": (8, 9), "sky": (10,),
              "human": (11, 12), "vehicle": (13, 14, 15, 16, 17, 18)}


class Cityscapes(SegmentationDataset):
    """``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``root/gtFine/<split>/<city>/*_gtFine_labelIds.png`` (mapped to the 19 train ids, the rest 255)
    or, when present, ``*_gtFine_labelTrainIds.png`` (used as is)."""

    CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
               "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
               "bicycle")
    CATEGORIES = CATEGORIES  # groups of classes scored together (category IoU)
    PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
               (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
               (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))

    def __init__(self, root: str | Path, split: str = "train", transform=None, seed: int = 0,
                 label_type: str = "auto"):
        super().__init__(transform, seed)
        self.root = Path(root)
        img_dir = self.root / "leftImg8bit" / split
        if not img_dir.is_dir():
            raise DataError(f"Cityscapes images not found: {img_dir}")
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if label_type == "auto":
            probe = images[0] if images else None
            label_type = "trainIds" if probe is not None and self._label(probe, "trainIds").is_file() else "labelIds"
        self.label_type = label_type
        for img in images:
            lbl = self._label(img, label_type)
            if not lbl.is_file():
                raise DataError(f"Cityscapes label missing for {img}: expected {lbl}")
            self.pairs.append((img, lbl))
        self._check_pairs(str(img_dir))
        if label_type == "trainIds":
            self.label_map[:19] = np.arange(19)
            self.label_map[IGNORE_INDEX] = IGNORE_INDEX
        else:
            self.label_map[:] = IGNORE_INDEX  # every labelId (-1..33) is legal; unevaluated ones are ignored
            for lid, tid in LABEL_TO_TRAIN.items():
                self.label_map[lid] = tid

    def _label(self, img: Path, label_type: str) -> Path:
        stem = img.name.replace("_leftImg8bit.png", "")
        city = img.parent.name
        suffix = "_gtFine_labelTrainIds.png" if label_type == "trainIds" else "_gtFine_labelIds.png"
        return self.root / "gtFine" / img.parent.parent.name / city / (stem + suffix)


def train_ids_to_label_ids(pred: np.ndarray) -> np.ndarray:
    """Convert a train-id prediction ``(H, W)`` to Cityscapes labelIds (the format the official
    evaluation and benchmark server read). Ids outside 0..18 become 0 (unlabeled)."""
    lut = np.zeros(256, dtype=np.uint8)
    for tid, lid in TRAIN_TO_LABEL.items():
        lut[tid] = lid
    return lut[pred.astype(np.uint8)]
