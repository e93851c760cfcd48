"""Dataset checking: every problem of a split, by file, before training starts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import DataError, SegmentationDataset, read_image


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of the fully decoded image: the same ``read_image`` training uses, so a truncated JPEG (whose
    header ``verify()`` accepts) is found here and not mid-training. Raises DataError naming the file."""
    return read_image(path).shape[:2]


def check_dataset(ds: SegmentationDataset, progress: bool = True, max_problems: int = 1000) -> dict:
    """Scan every pair of ``ds`` and report problems and class pixel frequencies.

    Checks (decoding every file as training does): missing / unreadable / truncated image or label, multi-channel (e.g. a palette label saved as RGB)
    labels, label values outside the class range other than the ignore index, image/label size
    mismatch. Returns ``{"num_pairs", "problems": [{"image", "label", "problem"}], "class_pixels":
    {name: count}, "ignore_pixels"}``.
    """
    problems, counts, ignore = [], np.zeros(256, dtype=np.int64), 0
    for img_path, lbl_path in tqdm(ds.pairs, desc="check-data", disable=not progress, leave=False):
        try:
            size = _image_size(Path(img_path))
            label = ds.load_label(Path(lbl_path))
            if label.shape != size:
                raise DataError(f"size mismatch: image {img_path} is {size[1]}x{size[0]}, "
                                f"label {lbl_path} is {label.shape[1]}x{label.shape[0]}")
            counts += np.bincount(label.ravel(), minlength=256)
        except DataError as e:
            problems.append({"image": str(img_path), "label": str(lbl_path), "problem": str(e)})
            if len(problems) >= max_problems:
                break
    k = ds.num_classes
    ignore = int(counts[255])
    return {"num_pairs": len(ds.pairs), "problems": problems,
            "class_pixels": {name: int(counts[i]) for i, name in enumerate(ds.CLASSES[:k])},
            "ignore_pixels": ignore}


def format_report(report: dict) -> str:
    lines = [f"{report['num_pairs']} pairs, {len(report['problems'])} problem(s)"]
    lines += [f"  PROBLEM {p['problem']}" for p in report["problems"][:50]]
    if len(report["problems"]) > 50:
        lines.append(f"  ... and {len(report['problems']) - 50} more")
    total = sum(report["class_pixels"].values()) or 1
    n_bad = len({p["label"] for p in report["problems"]})
    left_out = f" (the {n_bad} file{'s' * (n_bad > 1)} with problems left out)" if n_bad else ""
    lines.append(f"class pixel shares{left_out}:")
    lines += [f"  {name:<20} {100 * n / total:6.2f}%" + ("   (absent)" if n == 0 else "")
              for name, n in report["class_pixels"].items()]
    return "\n".join(lines)


def label_pixel_counts(ds: SegmentationDataset, progress: bool = False) -> np.ndarray:
    """Pixels per class ``(K,)`` int64 over every label of ``ds`` (train ids; ignore excluded)."""
    counts = np.zeros(256, dtype=np.int64)
    for _, lbl_path in tqdm(ds.pairs, desc="class pixels", disable=not progress, leave=False):
        counts += np.bincount(ds.load_label(Path(lbl_path)).ravel(), minlength=256)
    return counts[: ds.num_classes]
