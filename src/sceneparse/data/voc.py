"""PASCAL VOC 2012 segmentation (21 classes), with the SBD augmented training set."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_mat, require_layout, read_text


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The standard VOC colour map (bit-interleaved)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


class PascalVOC(SegmentationDataset):
    """``root`` = ``VOCdevkit/VOC2012``: ``JPEGImages/*.jpg``, labels in ``SegmentationClass/*.png``
    (palette PNGs: their pixel values are the class ids; 255 marks object borders, ignored), split
    lists ``ImageSets/Segmentation/<split>.txt``. Split ``train_aug`` reads
    ``SegmentationClassAug/`` and ``ImageSets/Segmentation/train_aug.txt`` written by
    ``sceneparse convert-sbd``."""

    CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
    PALETTE = tuple(voc_palette(21))

    def __init__(self, root: str | Path, split: str = "train", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        lst = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not lst.is_file():
            hint = " (run `sceneparse convert-sbd` first)" if split == "train_aug" else ""
            raise DataError(f"VOC split list not found: {lst}{hint}")
        label_dir = self.root / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        for name in read_text(lst).split():
            self.pairs.append((self.root / "JPEGImages" / f"{name}.jpg", label_dir / f"{name}.png"))
        self._check_pairs(str(lst))
        self.label_map[:21] = np.arange(21)
        self.label_map[IGNORE_INDEX] = IGNORE_INDEX


def convert_sbd(sbd_root: str | Path, voc_root: str | Path) -> int:
    """Convert the SBD (Hariharan et al. 2011) ``cls/*.mat`` annotations to palette PNGs in
    ``VOC2012/SegmentationClassAug`` (VOC's own labels copied over where both exist) and write
    ``ImageSets/Segmentation/train_aug.txt`` = (SBD train + SBD val + VOC train) - VOC val
    (the 10,582 images of the usual protocol). Returns the number of training images.

    Raises:
        DataError: a missing folder or list.
    """
    from PIL import Image

    sbd_root, voc_root = Path(sbd_root), Path(voc_root)
    cls_dir = require_layout(sbd_root, "cls", (), "SBD class annotations", "expected benchmark_RELEASE/dataset")
    seg = require_layout(voc_root, "ImageSets/Segmentation", ("ImageSets/Segmentation/train.txt",
                                                              "ImageSets/Segmentation/val.txt"), "VOC split lists")
    out_dir = voc_root / "SegmentationClassAug"
    out_dir.mkdir(exist_ok=True)
    palette = [c for rgb in voc_palette(256) for c in rgb]
    sbd_names = []
    for f in ("train.txt", "val.txt"):
        if (sbd_root / f).is_file():
            sbd_names += read_text(sbd_root / f).split()
    for name in sbd_names:
        mat = read_mat(cls_dir / f"{name}.mat", mat_dtype=True, squeeze_me=True, struct_as_record=False)
        label = np.asarray(mat["GTcls"].Segmentation, dtype=np.uint8)
        im = Image.fromarray(label, mode="P")
        im.putpalette(palette)
        im.save(out_dir / f"{name}.png")
    voc_train = read_text(seg.joinpath("train.txt")).split()
    voc_val = set(read_text(seg.joinpath("val.txt")).split())
    for name in voc_train:  # VOC's own (finer) labels win
        src = voc_root / "SegmentationClass" / f"{name}.png"
        if src.is_file():
            (out_dir / f"{name}.png").write_bytes(src.read_bytes())
    names = sorted((set(sbd_names) | set(voc_train)) - voc_val)
    (seg / "train_aug.txt").write_text("\n".join(names) + "\n")
    return len(names)
