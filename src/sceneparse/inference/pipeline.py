"""One way from a checkpoint to a model ready for inference, used by ``sceneparse.load``, ``predict``,
``evaluate``, ``benchmark`` and the demo: read the file safely, rebuild the model (or open an OpenVINO IR),
then prepare it for the backend and precision asked (:func:`sceneparse.deploy.backends.prepare_model`)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import load_checkpoint
from ..deploy.backends import OpenVINOModel, prepare_model
from ..models import factory


def load_model(checkpoint: str | Path | dict, *, output_stride: int | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model of a checkpoint (dict or ``.pt`` / ``.safetensors`` / OpenVINO IR ``.xml`` path) in eval
    mode, float32, on ``device``; an IR gives an :class:`~sceneparse.deploy.backends.OpenVINOModel` (its
    float layers between the int8 ones run in fp32 until prepared otherwise).

    Returns:
        ``(model, checkpoint dict)``.

    Raises:
        FileNotFoundError, CheckpointError, NonFiniteModelError: see :func:`~sceneparse.checkpoint.load_checkpoint`
            and :func:`~sceneparse.models.factory.model_from_checkpoint`.
        ValueError: an IR asked for another output stride than it was compiled at; weights that do not fit.
    """
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if "openvino_ir" not in ckpt:
        model, _ = factory.model_from_checkpoint(ckpt, output_stride=output_stride, device=device)
        return model, ckpt
    trained = ckpt["config"]["model"]["output_stride"]
    if output_stride and output_stride != trained:
        raise ValueError(f"{ckpt['openvino_ir']} is a compiled graph at output_stride {trained}; "
                         f"it cannot run at {output_stride}")
    return OpenVINOModel(ckpt["openvino_ir"], output_stride=trained, input_geometry=ir_geometry(ckpt)), ckpt


def ir_geometry(ckpt: dict) -> dict | None:
    """The input geometry (:func:`~sceneparse.models.segmentor.training_geometry`) of an IR checkpoint: the
    stored one, else (an IR written before it was stored) that of the model its config and meta describe,
    built without weights (None where that fails: the IR then runs the sizes it is given)."""
    if "input_geometry" in ckpt:
        return ckpt["input_geometry"]
    from ..models.segmentor import training_geometry

    front = ckpt.get("meta", {}).get("front")
    if ckpt["config"]["model"].get("arch") == "refine" and front is None:  # (its front would be read from a file)
        return None
    try:
        model, _ = factory.build_model_from_config(ckpt["config"]["model"], ckpt["num_classes"], front=front,
                                                   weights_follow=True)
    except Exception:
        return None
    factory.set_train_size(model, (ckpt["config"].get("data") or {}).get("crop_size"))
    return training_geometry(model)


def prepare(checkpoint: str | Path | dict, *, backend: str = "torch", bf16: bool = False, fold_bn: bool = True,
            compile: bool | str = False, output_stride: int | None = None, device: str | torch.device = "cpu",
            threads: int | None = None) -> tuple[nn.Module, dict]:
    """:func:`load_model` then :func:`~sceneparse.deploy.backends.prepare_model`: the model ready for the
    inference engine (eval logits at the decode head's resolution where the model supports it).

    ``fold_bn``: fold BatchNorm into the convolutions (outputs equal up to float rounding; bf16 always
    folds). ``evaluate`` and ``predict`` pass ``False`` unless asked, so that their scores and label maps are
    those of the trained weights exactly; ``sceneparse.load`` and ``benchmark`` keep the default.

    Returns:
        ``(model, checkpoint dict)``.

    Raises:
        as :func:`load_model` and :func:`~sceneparse.deploy.backends.prepare_model`.
    """
    model, ckpt = load_model(checkpoint, output_stride=output_stride, device=device)
    return prepare_model(model, backend, bf16=bf16, fold_bn=fold_bn, compile=compile, threads=threads,
                         device=device), ckpt
