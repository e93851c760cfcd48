"""Checkpoints: atomic writes, and rebuilding a model from a checkpoint alone.

A checkpoint is a ``torch.save`` dict with ``model`` (state dict), ``config``
(the resolved config as a plain dict), ``meta`` (class names, palette,
mean/std) and, for training checkpoints, ``optimizer``, ``scheduler``,
``scaler``, ``iter`` and ``rng``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..models import SegmentationModel, build_model


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``iter_XXXXXXXX.pt`` files in ``ckpt_dir``, oldest first."""
    files = [p for p in Path(ckpt_dir).glob("iter_*.pt") if re.fullmatch(r"iter_\d+\.pt", p.name)]
    return sorted(files, key=lambda p: int(p.stem.split("_")[1]))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict on CPU. Raises ``FileNotFoundError`` / ``ValueError`` (not a sceneparse checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated / corrupt file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a sceneparse checkpoint (needs 'model' and 'config')")
    return ckpt


def model_from_checkpoint(ckpt: dict | str | Path, output_stride: int | None = None,
                          device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict]:
    """Rebuild the model a checkpoint was trained with and load its weights (float32, eval mode).

    Args:
        ckpt: a checkpoint dict or path.
        output_stride: evaluate at another output_stride than training (same weights).

    Returns:
        ``(model, ckpt)``.

    Raises:
        ValueError: the weights do not fit the architecture in the checkpoint's config
            (the message lists missing / unexpected / mis-shaped keys).
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    m = ckpt["config"]["model"]
    meta = ckpt.get("meta", {})
    num_classes = len(meta["classes"]) if "classes" in meta else ckpt["num_classes"]
    model = build_model(m["arch"], m["backbone"], num_classes, m["output_stride"],
                        pretrained=None, deep_stem=m.get("deep_stem", False), multi_grid=m.get("multi_grid"),
                        **m.get("head", {}))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    load_model_weights(model, state)
    # built as trained, then switched as a whole: a model made of several strided parts (a refinement
    # cascade's front and GRN) must not end up with the parts at different strides
    if output_stride and output_stride != getattr(model, "output_stride", output_stride):
        model.set_output_stride(output_stride)
    return model.to(device).eval(), ckpt


def load_model_weights(model: torch.nn.Module, state: dict, allow_missing: tuple[str, ...] = ("aux_head.",)) -> list:
    """Strict load with a readable mismatch report; returns the missing keys that were allowed.

    Keys starting with a prefix in ``allow_missing`` may be absent (deployment checkpoints drop
    the auxiliary head; a refinement stage starts from the previous stage without its new network).
    """
    own = model.state_dict()
    allowed = [k for k in own if k not in state and k.startswith(allow_missing)]
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError("checkpoint does not fit this model:\n"
                         + (f"  missing: {missing[:8]}{'...' if len(missing) > 8 else ''}\n" if missing else "")
                         + (f"  unexpected: {unexpected[:8]}\n" if unexpected else "")
                         + (f"  shape mismatch: {shapes[:8]}\n" if shapes else ""))
    model.load_state_dict(state, strict=False)
    return allowed
