"""Dataset registry. A new dataset is one module plus one line in ``DATASETS``."""
from __future__ import annotations

from pathlib import Path

from ..utils.sysinfo import check_torch_pair

check_torch_pair()  # before anything imports torchvision: a mismatched pair gets a clear message

from .ade20k import ADE20K
from .base import IGNORE_INDEX, DataError, SegmentationDataset, read_image, read_label
from .camvid import CamVid
from .cityscapes import Cityscapes
from .coco_stuff import CocoStuff10k, CocoStuff164k
from .folder import FolderDataset
from .pascal_context import PascalContext, PascalContext59
from .transforms import build_eval_transform, build_train_transform
from .voc import PascalVOC

DATASETS: dict[str, type[SegmentationDataset]] = {
    "camvid": CamVid,
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "voc": PascalVOC,
    "pascal_context": PascalContext,
    "pascal_context_59": PascalContext59,
    "coco_stuff164k": CocoStuff164k,
    "coco_stuff10k": CocoStuff10k,
    "folder": FolderDataset,
}


def build_dataset(name: str, root: str, split: str, transform=None, seed: int = 0) -> SegmentationDataset:
    """Instantiate a registered dataset.

    Raises:
        ValueError: an unknown name.
        DataError: ``root`` does not exist (a relative root is read from the current folder, which the
            message names), or the dataset's own layout checks fail.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    path = Path(root)
    if not path.exists():
        where = "" if path.is_absolute() else f" (a relative data.root is read from the current folder, {Path.cwd()})"
        raise DataError(f"{name} data.root {root} not found{where}: set data.root=/path/to/{name}")
    return DATASETS[name](root, split, transform=transform, seed=seed)


__all__ = ["ADE20K", "CamVid", "Cityscapes", "CocoStuff10k", "CocoStuff164k", "FolderDataset", "PascalContext",
           "PascalContext59", "PascalVOC", "DATASETS", "DataError", "IGNORE_INDEX", "SegmentationDataset", "build_dataset",
           "build_eval_transform", "build_train_transform", "read_image", "read_label"]
