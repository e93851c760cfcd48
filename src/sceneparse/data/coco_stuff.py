"""COCO-Stuff (Caesar et al., CVPR 2018): 164k (2017 images) and the earlier 10k release.

Label encodings as downloaded:

- **164k** (``stuffthingmaps_trainval2017.zip``): ``annotations/{train2017,val2017}/*.png`` whose
  values are COCO category id - 1 (0 = person ... 181 = wood) and 255 = unlabeled. Read as is.
- **10k** (``cocostuff-10k-v1.1.zip``): ``annotations/*.mat`` with field ``S`` = COCO category id
  (1..182) and 0 = unlabeled; split lists ``imageLists/{train,test}.txt``.
  ``sceneparse convert-cocostuff10k ROOT`` writes them as PNGs in the 164k encoding
  (``annotations_png/*.png``), after which both read the same way.

Of the 182 COCO ids, 11 thing ids were never annotated (street sign, hat, shoe, eye glasses, plate,
mirror, window, desk, door, blender, hair brush); the 171 used classes are mapped to contiguous
ids 0..170 in COCO order (80 things, then 91 stuff classes), as the benchmark evaluates them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_mat, read_text
from .voc import voc_palette

# COCO category ids 1..182 (index = id - 1); None = id unused in COCO-Stuff
COCO_STUFF_182 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", None,
    # stuff, ids 92..182
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood")
COCO_STUFF_CLASSES = tuple(n for n in COCO_STUFF_182 if n is not None)


def coco_stuff_label_map() -> np.ndarray:
    """uint8 (256,): 164k PNG value (COCO id - 1) -> contiguous class 0..170; unused ids and 255 -> 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    used = [i for i, n in enumerate(COCO_STUFF_182) if n is not None]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


class CocoStuff164k(SegmentationDataset):
    """``root/images/<split>/*.jpg`` + ``root/annotations/<split>/*.png`` (split ``train2017`` /
    ``val2017``), 171 classes."""

    CLASSES = COCO_STUFF_CLASSES
    PALETTE = tuple(voc_palette(256)[1:172])

    def __init__(self, root: str | Path, split: str = "train2017", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        img_dir, ann_dir = self.root / "images" / split, self.root / "annotations" / split
        if not img_dir.is_dir():
            raise DataError(f"COCO-Stuff images not found: {img_dir}")
        for img in sorted(img_dir.glob("*.jpg")):
            self.pairs.append((img, ann_dir / f"{img.stem}.png"))
        self._check_pairs(str(img_dir))
        self.label_map[:] = coco_stuff_label_map()


class CocoStuff10k(SegmentationDataset):
    """``root/images/*.jpg`` + ``root/annotations_png/*.png`` (written by
    ``sceneparse convert-cocostuff10k``), split lists ``root/imageLists/{train,test}.txt``; 171 classes."""

    CLASSES = COCO_STUFF_CLASSES
    PALETTE = CocoStuff164k.PALETTE

    def __init__(self, root: str | Path, split: str = "train", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        lst = self.root / "imageLists" / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"COCO-Stuff 10k split list not found: {lst}")
        if not (self.root / "annotations_png").is_dir():
            raise DataError(f"{self.root / 'annotations_png'} not found: run `sceneparse convert-cocostuff10k {root}`")
        for name in read_text(lst).split():
            self.pairs.append((self.root / "images" / f"{name}.jpg", self.root / "annotations_png" / f"{name}.png"))
        self._check_pairs(str(lst))
        self.label_map[:] = coco_stuff_label_map()


def convert_cocostuff10k(root: str | Path, progress: bool = True) -> int:
    """``root/annotations/*.mat`` (field ``S``: COCO id 1..182, 0 unlabeled) -> ``root/annotations_png/*.png``
    in the 164k encoding (id - 1, 255 unlabeled). Returns the number of files written.

    Raises:
        DataError: missing folder, a ``.mat`` without ``S``, or values above 182.
    """
    from PIL import Image
    from tqdm import tqdm

    root = Path(root)
    src = root / "annotations"
    mats = sorted(src.glob("*.mat")) if src.is_dir() else []
    if not mats:
        raise DataError(f"no COCO-Stuff 10k annotations (*.mat) in {src}")
    out = root / "annotations_png"
    out.mkdir(exist_ok=True)
    for path in tqdm(mats, desc="cocostuff10k", disable=not progress):
        mat = read_mat(path)
        if "S" not in mat:
            raise DataError(f"{path}: no field S (not a COCO-Stuff 10k annotation)")
        s = np.asarray(mat["S"], dtype=np.int64)
        if s.min() < 0 or s.max() > 182:
            raise DataError(f"{path}: label values {s.min()}..{s.max()} outside 0..182")
        Image.fromarray(np.where(s == 0, 255, s - 1).astype(np.uint8)).save(out / f"{path.stem}.png")
    return len(mats)
