"""A generic dataset for custom data: ``root/images/<split>/*`` + ``root/labels/<split>/<stem>.png``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_text
from ..constants import IMAGE_SUFFIXES



class FolderDataset(SegmentationDataset):
    """Custom data: ``root/classes.txt`` (one class name per line, id = line number from 0, optional
    ``name r g b`` colour), images ``root/images/<split>/`` and single-channel label PNGs
    ``root/labels/<split>/<image stem>.png`` with ids ``0..K-1`` or 255 (ignore)."""

    def __init__(self, root: str | Path, split: str = "train", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        classes = self.root / "classes.txt"
        if not classes.is_file():
            raise DataError(f"class list not found: {classes} (one class name per line)")
        names, colours = [], []
        rng = np.random.default_rng(0)
        for line in read_text(classes).splitlines():
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
                names.append(" ".join(parts[:-3]))
                colours.append(tuple(int(p) for p in parts[-3:]))
                if max(colours[-1]) > 255:
                    raise DataError(f"{classes}: colour of {names[-1]!r} is {colours[-1]}; RGB values are 0..255")
            else:
                names.append(line.strip())
                colours.append(tuple(int(c) for c in rng.integers(0, 256, 3)))
        if not names or len(names) > 255:
            raise DataError(f"{classes} must list 1..255 classes, found {len(names)}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"{classes}: class names must be distinct; repeated: {repeated}")
        self.CLASSES, self.PALETTE = tuple(names), tuple(colours)
        img_dir, lbl_dir = self.root / "images" / split, self.root / "labels" / split
        if not img_dir.is_dir():
            raise DataError(f"image folder not found: {img_dir}")
        for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            self.pairs.append((img, lbl_dir / f"{img.stem}.png"))
        stems: dict[str, Path] = {}
        for img, _ in self.pairs:  # a.jpg and a.png would both be paired with labels/a.png
            if img.stem in stems:
                raise DataError(f"{stems[img.stem]} and {img} share the stem {img.stem!r}, so both would use "
                                f"{lbl_dir / (img.stem + '.png')}; rename or remove one")
            stems[img.stem] = img
        self._check_pairs(str(img_dir))
        self.label_map[: len(names)] = np.arange(len(names))
        self.label_map[IGNORE_INDEX] = IGNORE_INDEX
