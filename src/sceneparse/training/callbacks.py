"""What a training run writes for people to read: ``log.csv`` (one row per logged iteration), ``curves.png``,
a plain-text ``train.log`` (the messages logged while it trains, from the data loading on, and one line per
logged iteration) and, with ``train.tensorboard``, TensorBoard scalars (loss terms, lr, val mIoU / aAcc / mAcc,
per-class IoU) and validation overlays."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

# loss_front / val_mIoU_front: a refinement stage's frozen front on the same batches / at step 0, so that a
# refiner worse than its input shows in the first log lines
LOG_FIELDS = ["iter", "epoch", "lr", "loss", "loss_aux", "loss_front", "val_mIoU", "val_aAcc", "val_mAcc",
              "val_mIoU_front", "time_s"]

_ROW_ORDER = ("iter", "epoch", "lr", "loss", "loss_aux", "loss_front", "val_mIoU", "val_aAcc", "val_mAcc", "time_s")


def format_row(row: dict) -> str:
    """One ``log.csv`` row as a line, e.g. ``iter 10  epoch 0.22  lr 9.97e-03  loss 1.0606 ...`` (empty and NaN
    values left out)."""
    parts = []
    for key in sorted(row, key=lambda k: (_ROW_ORDER.index(k) if k in _ROW_ORDER else len(_ROW_ORDER), k)):
        value = row[key]
        if value in ("", None) or (isinstance(value, float) and math.isnan(value)):
            continue
        if key == "lr":
            parts.append(f"lr {value:.2e}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4g}" if key.startswith("loss") else f"{key} {value:g}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class RunLog:
    """``train.log`` in ``work_dir`` (appended on resume) and an optional TensorBoard writer in
    ``work_dir/tensorboard`` (events after ``start_iter`` of an earlier, interrupted run are dropped on resume).

    Raises:
        ImportError: ``tensorboard`` requested but not installed (``pip install 'sceneparse[tensorboard]'``).
    """

    def __init__(self, work_dir: str | Path, tensorboard: bool = False, start_iter: int = 0):
        work_dir = Path(work_dir)
        self.handler = logging.FileHandler(work_dir / "train.log", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                                    "%Y-%m-%d %H:%M:%S"))
        self.handler.setLevel(logging.INFO)
        self.logger = logging.getLogger("sceneparse")
        self.old_level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                self.close()
                raise ImportError("train.tensorboard=true needs the tensorboard package "
                                  "(pip install 'sceneparse[tensorboard]')") from e
            self.writer = SummaryWriter(str(work_dir / "tensorboard"), purge_step=start_iter + 1 if start_iter else None)

    def row(self, row: dict) -> None:
        """An iteration's ``log.csv`` row: a line in ``train.log``; its losses and lr as scalars."""
        record = logging.LogRecord("sceneparse.run", logging.INFO, __file__, 0, format_row(row), None, None)
        self.handler.handle(record)
        if self.writer is None:
            return
        it = int(row["iter"])
        for key, value in row.items():
            if key.startswith("loss") or key == "lr":
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"train/{key}", value, it)

    def validation(self, it: int, scores: dict, overlays: Sequence[tuple[str, np.ndarray]] = ()) -> None:
        """Validation scores (percent) as ``val/*`` and ``val_IoU/<class>`` scalars; ``overlays``
        ``[(name, (H, W, 3) uint8)]`` as images."""
        if self.writer is None:
            return
        for key in ("mIoU", "aAcc", "mAcc"):
            self.writer.add_scalar(f"val/{key}", scores[key], it)
        for name, value in (scores.get("IoU") or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"val_IoU/{name}", value, it)
        for name, image in overlays:
            self.writer.add_image(f"val_overlay/{name}", torch.from_numpy(image).permute(2, 0, 1), it)
        self.writer.flush()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)
        self.handler.close()
        if self.writer is not None:
            self.writer.close()


@torch.no_grad()
def validation_overlays(model: torch.nn.Module, dataset, indices: Sequence[int], device: torch.device,
                        mean: Sequence[float], std: Sequence[float], palette: Sequence[Sequence[int]],
                        infer=None) -> list[tuple[str, np.ndarray]]:
    """``[(file name, (H, 2W, 3) uint8)]``: the prediction (left) and the ground truth (right) blended over
    each image of ``dataset`` at ``indices``, with the validation's inference settings ``infer`` (an
    ``InferenceConfig``; default whole image); ignored pixels stay unblended."""
    from ..data.transforms import normalize_image
    from ..inference.engine import InferenceConfig, predict_labels
    from ..inference.vis import overlay

    was_training = model.training
    model.eval()
    out = []
    for i in indices:
        image, label = dataset.load_pair(i)
        x = normalize_image(image, mean, std)[None].to(device)
        pred = predict_labels(model, x, infer or InferenceConfig())[0].cpu().numpy()
        pair = np.concatenate([overlay(image, pred, palette), overlay(image, label, palette)], axis=1)
        out.append((Path(dataset.pairs[i][0]).stem, pair))
    model.train(was_training)
    return out


def append_log_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in LOG_FIELDS})


def plot_curves(log_csv: str | Path, out_png: str | Path) -> None:
    """Loss, learning rate and validation mIoU against iteration, from ``log.csv``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv) as f:
        rows = list(csv.DictReader(f))

    def series(key):
        pts = [(int(r["iter"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
        return [p for p in pts if not math.isnan(p[1])]

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, label in (("loss", "main CE"), ("loss_aux", "aux CE"), ("loss_front", "front CE (same batch)")):
        pts = series(key)
        if pts:
            axes[0].plot(*zip(*pts), label=label)
    axes[0].set(title="training loss", xlabel="iteration")
    axes[0].legend()
    if series("lr"):
        axes[1].plot(*zip(*series("lr")))
    axes[1].set(title="backbone learning rate (poly)", xlabel="iteration")
    if series("val_mIoU"):
        axes[2].plot(*zip(*series("val_mIoU")), marker="o", label="model")
    if series("val_mIoU_front"):
        axes[2].axhline(series("val_mIoU_front")[0][1], color="gray", ls="--", label="frozen front")
        axes[2].legend()
    axes[2].set(title="validation mIoU (%)", xlabel="iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
