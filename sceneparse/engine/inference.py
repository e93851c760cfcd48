"""Inference: logits / class probabilities for one image at its own resolution."""
from __future__ import annotations

import torch


@torch.inference_mode()
def infer_logits(model: torch.nn.Module, image: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """Whole-image inference.

    Args:
        image: ``(3, H, W)`` or ``(N, 3, H, W)`` normalised float tensor on the model's device.

    Returns:
        float32 logits ``(N, K, H, W)``.
    """
    x = image[None] if image.ndim == 3 else image
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)["out"].float()


def predict_labels(model: torch.nn.Module, image: torch.Tensor, **kw) -> torch.Tensor:
    """Argmax class map ``(N, H, W)`` int64."""
    return infer_logits(model, image, **kw).argmax(1)
