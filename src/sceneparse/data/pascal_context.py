"""Pascal-Context (Mottaghi et al., CVPR 2014): VOC 2010 images with whole-scene labels.

The official annotations (``trainval.tar.gz`` from https://cs.stanford.edu/~roozbeh/pascal-context/)
are one ``trainval/<image>.mat`` per image whose ``LabelMap`` (uint16) holds ids of the 459-class
list ``labels.txt`` (``"<id>: <name>"``). The common benchmark keeps the 59 most frequent classes
(``59_labels.txt``); everything else is "background". ``sceneparse convert-pascal-context`` writes
them as PNGs (0 = background, 1..59 = the classes below) with the VOC 2010 train (4,998) / val
(5,105) split lists, and the two usual variants read them:

- ``pascal_context``: 60 classes, background is class 0 (the PSPNet / DeepLab "60 classes" setting);
- ``pascal_context_59``: 59 classes, background ignored (255) and k -> k-1 (mmsegmentation's
  ``PascalContextDataset59``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_mat, require_layout, read_text
from .voc import voc_palette

CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood")
# their ids in the 459-class labels.txt (ascending: labels.txt is alphabetical)
CONTEXT59_IDS = (2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
                 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
                 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458)


class PascalContext(SegmentationDataset):
    """``root`` = ``VOCdevkit/VOC2010`` after ``sceneparse convert-pascal-context``:
    ``JPEGImages/*.jpg``, ``SegmentationClassContext/*.png`` (0 background, 1..59),
    ``ImageSets/SegmentationContext/{train,val}.txt``. 60 classes, background = class 0."""

    CLASSES = ("background",) + CONTEXT59_CLASSES
    PALETTE = tuple(voc_palette(60))

    def __init__(self, root: str | Path, split: str = "train", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        lst = self.root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"Pascal-Context split list not found: {lst} (run `sceneparse convert-pascal-context` first)")
        for name in read_text(lst).split():
            self.pairs.append((self.root / "JPEGImages" / f"{name}.jpg",
                               self.root / "SegmentationClassContext" / f"{name}.png"))
        self._check_pairs(str(lst))
        self._set_label_map()
        self.label_map[IGNORE_INDEX] = IGNORE_INDEX

    def _set_label_map(self) -> None:
        self.label_map[:60] = np.arange(60)


class PascalContext59(PascalContext):
    """The 59-class variant: background (0) ignored, class k stored as k-1."""

    CLASSES = CONTEXT59_CLASSES
    PALETTE = tuple(voc_palette(60)[1:])

    def _set_label_map(self) -> None:
        self.label_map[0] = IGNORE_INDEX
        self.label_map[1:60] = np.arange(59)


def context_lut(labels_txt: str | Path | None = None) -> np.ndarray:
    """Lookup table 459-class id -> 0 (background) / 1..59, as uint8 of length 65536.

    With ``labels_txt`` (the official ``labels.txt``), the names at ``CONTEXT59_IDS`` are checked
    against ``CONTEXT59_CLASSES`` so that a different label list is refused, not silently mis-mapped.

    Raises:
        DataError: ``labels_txt`` names another class at one of the ids.
    """
    if labels_txt is not None:
        names = {}
        for line in read_text(Path(labels_txt)).splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                names[int(k)] = v.strip()
        for i, name in zip(CONTEXT59_IDS, CONTEXT59_CLASSES):
            if names.get(i) != name:
                raise DataError(f"{labels_txt}: id {i} is {names.get(i)!r}, expected {name!r} "
                                "(not the official 459-class Pascal-Context list)")
    lut = np.zeros(65536, dtype=np.uint8)
    lut[list(CONTEXT59_IDS)] = np.arange(1, 60, dtype=np.uint8)
    return lut


def convert_pascal_context(context_root: str | Path, voc2010_root: str | Path, progress: bool = True) -> dict:
    """Convert the official ``trainval/*.mat`` annotations to 60-class PNGs.

    Args:
        context_root: the extracted ``trainval.tar.gz`` (holds ``trainval/*.mat``; ``labels.txt``
            beside it is used to check the class ids when present).
        voc2010_root: ``VOCdevkit/VOC2010`` (``JPEGImages``, ``ImageSets/Main/{train,val}.txt``).

    Writes ``SegmentationClassContext/<name>.png`` and ``ImageSets/SegmentationContext/{train,val}.txt``
    (VOC 2010 Main train / val restricted to images with an annotation) under ``voc2010_root``.

    Returns:
        ``{"train": n, "val": n}`` image counts.

    Raises:
        DataError: a missing folder or list, or a ``.mat`` without ``LabelMap``.
    """
    from PIL import Image
    from tqdm import tqdm

    context_root, voc = Path(context_root), Path(voc2010_root)
    mat_dir = require_layout(context_root, "trainval", (), "Pascal-Context annotations",
                             "extract trainval.tar.gz there")
    main = require_layout(voc, "ImageSets/Main", ("ImageSets/Main/train.txt", "ImageSets/Main/val.txt"),
                          "VOC 2010 split lists")
    labels = context_root / "labels.txt"
    lut = context_lut(labels if labels.is_file() else None)
    out_dir = voc / "SegmentationClassContext"
    out_dir.mkdir(exist_ok=True)
    palette = [c for rgb in voc_palette(256) for c in rgb]
    done = set()
    for mat_path in tqdm(sorted(mat_dir.glob("*.mat")), desc="pascal-context", disable=not progress):
        mat = read_mat(mat_path)
        if "LabelMap" not in mat:
            raise DataError(f"{mat_path}: no LabelMap field (not a Pascal-Context annotation)")
        im = Image.fromarray(lut[np.asarray(mat["LabelMap"], dtype=np.int64)], mode="P")
        im.putpalette(palette)
        im.save(out_dir / f"{mat_path.stem}.png")
        done.add(mat_path.stem)
    seg = voc / "ImageSets" / "SegmentationContext"
    seg.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val"):
        names = [n for n in read_text(main / f"{split}.txt").split() if n in done]
        (seg / f"{split}.txt").write_text("\n".join(names) + "\n")
        counts[split] = len(names)
    return counts
