"""Dataset registry. A new dataset is one module plus one line in ``DATASETS``."""
from __future__ import annotations

from .ade20k import ADE20K
from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_image, read_label
from .camvid import CamVid
from .cityscapes import Cityscapes
from .folder import FolderDataset
from .voc import PascalVOC
from .transforms import build_eval_transform, build_train_transform

DATASETS: dict[str, type[SegmentationDataset]] = {
    "camvid": CamVid,
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "voc": PascalVOC,
    "folder": FolderDataset,
}


def build_dataset(name: str, root: str, split: str, transform=None, seed: int = 0) -> SegmentationDataset:
    """Instantiate a registered dataset. Raises ``ValueError`` for an unknown name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name](root, split, transform=transform, seed=seed)


__all__ = ["ADE20K", "CamVid", "Cityscapes", "FolderDataset", "PascalVOC", "DATASETS", "DataError", "IGNORE_INDEX", "SegmentationDataset", "build_dataset",
           "build_eval_transform", "build_train_transform", "read_image", "read_label"]
