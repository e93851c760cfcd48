"""ADE20K SceneParsing (Zhou et al. 2017), ADEChallengeData2016 layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegmentationDataset

# the official objectInfo150 names, first synonym of each (as in the SceneParsing toolkit and mmsegmentation;
# objectInfo150.csv joins the words of a name with ';', so splitting it there cuts 'chest of drawers' to 'chest')
ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence',
    'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
    'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
    'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle',
    'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
    'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven',
    'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake',
    'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray',
    'ashcan', 'fan', 'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator',
    'glass', 'clock', 'flag',
)


def _palette(n: int) -> tuple[tuple[int, int, int], ...]:
    # deterministic, well-spread colours (the official ADE colours are not redistributed here)
    rng = np.random.default_rng(150)
    return tuple(tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(n))


class ADE20K(SegmentationDataset):
    """ADE20K in the official layout.

    ``root/images/<split>/*.jpg`` with ``root/annotations/<split>/*.png``
    (split ``training`` or ``validation``). "Reduce zero label": 0 ("other")
    maps to 255 and k to k-1, giving ids 0..149.
    """

    CLASSES = ADE20K_CLASSES
    # older sceneparse releases cut every name to its first word (149 distinct: 'screen' twice)
    LEGACY_CLASS_NAMES = (tuple(n.split()[0] for n in ADE20K_CLASSES),)
    PALETTE = _palette(150)

    def extra_scores(self, scores: dict, conf) -> dict:
        """The SceneParsing challenge's ``score`` = mean(mIoU, pixel accuracy)."""
        return {"score": (scores["mIoU"] + scores["aAcc"]) / 2}

    def __init__(self, root: str | Path, split: str = "training", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        img_dir, ann_dir = self.root / "images" / split, self.root / "annotations" / split
        if not img_dir.is_dir():
            raise DataError(f"ADE20K images not found: {img_dir}")
        for img in sorted(img_dir.glob("*.jpg")):
            lbl = ann_dir / (img.stem + ".png")
            if not lbl.is_file():
                raise DataError(f"ADE20K label missing for {img}: expected {lbl}")
            self.pairs.append((img, lbl))
        self._check_pairs(str(img_dir))
        self.label_map[0] = IGNORE_INDEX
        self.label_map[1:151] = np.arange(150)
