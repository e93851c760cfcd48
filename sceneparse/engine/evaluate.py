"""Evaluation over a whole split: confusion matrix -> IoU, mIoU, aAcc, mAcc."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..metrics import BoundaryFScore, ConfusionMatrix
from .inference import InferenceConfig, predict_labels


def evaluate_model(model: torch.nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
                   num_workers: int = 0, progress: bool = True, infer: InferenceConfig | None = None,
                   boundary_tolerance: int | None = 3) -> dict:
    """Inference on every pair of ``dataset`` (batch 1, original size); whole-image by default,
    sliding window / multi-scale / flip per ``infer``. With ``boundary_tolerance`` (pixels) the
    boundary F-score is added under ``"boundary"``.

    Returns the dict of ``scores_from_confusion`` (percent) plus ``"num_images"``.
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes)
    bf = BoundaryFScore(boundary_tolerance) if boundary_tolerance is not None else None
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator())  # leaves the global RNG untouched
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        pred = predict_labels(model, batch["image"].to(device), infer)
        cm.update(pred.cpu(), batch["label"])
        if bf is not None:
            bf.update(pred.cpu(), batch["label"])
    model.train(was_training)
    scores = cm.compute(dataset.CLASSES)
    scores["num_images"] = len(dataset)
    scores["confusion_matrix"] = cm.mat.tolist()
    extra = getattr(dataset, "extra_scores", None)  # benchmark-specific scores (ADE20K score, Cityscapes categories)
    if extra is not None:
        scores.update(extra(scores, cm.mat))
    if bf is not None:
        scores["boundary"] = bf.compute()
    return scores
