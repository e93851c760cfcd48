"""The one place a config or a checkpoint becomes a model: ``build_model_from_config`` (a ``config.model``
section, a refinement cascade's front included) and ``model_from_checkpoint`` (rebuild + weights)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_checkpoint, require_finite, require_torch_weights
from ..hub import resolve_weights
from . import build_model
from .segmentor import SegmentationModel


def front_spec(ckpt: dict) -> dict:
    """The architecture of a checkpoint's model as the ``front`` of a refinement cascade: its
    ``config.model`` entries plus ``num_classes`` and the input normalisation (``mean``/``std``)."""
    m, meta = ckpt["config"]["model"], ckpt.get("meta", {})
    spec = {k: m[k] for k in ("arch", "backbone", "output_stride", "head", "deep_stem", "multi_grid") if k in m}
    spec["num_classes"] = len(meta["classes"]) if "classes" in meta else int(ckpt["num_classes"])
    spec.update({k: list(meta[k]) for k in ("mean", "std") if k in meta})
    return spec


def build_model_from_config(m: dict, num_classes: int, pretrained=None, front: dict | None = None,
                            weights_follow: bool = False) -> tuple[SegmentationModel, dict | None]:
    """The one place a ``config.model`` section becomes a model.

    For ``arch: refine`` the front comes from ``front`` (a :func:`front_spec`, e.g. stored in a
    refinement checkpoint's ``meta.front``) or else from the checkpoint file named by
    ``model.head.front``, whose weights are then loaded into ``model.front``.

    Returns:
        ``(model, front spec or None)``; the spec is what a checkpoint must keep to be rebuilt alone.

    Raises:
        ValueError / CheckpointError: bad options, or an unreadable front checkpoint.
    """
    head = dict(m.get("head") or {})
    front_state = None
    if m["arch"] == "refine":
        if front is None:
            if not isinstance(head.get("front"), str):
                raise ValueError("model.head.front must name the front model's checkpoint")
            front_ckpt = load_checkpoint(resolve_weights(head["front"]))
            if front_ckpt["config"]["model"]["arch"] == "refine":
                raise ValueError(f"model.head.front={head['front']} is itself a refinement cascade; the front must "
                                 "be a single model (fcn, pspnet, deeplabv3, ...): continue a cascade with "
                                 "model.init_weights instead")
            require_finite(front_ckpt["model"], f"model.head.front={head['front']}")
            front, front_state = front_spec(front_ckpt), front_ckpt["model"]
        head["front"] = front
    model = build_model(m["arch"], m["backbone"], num_classes, m["output_stride"], pretrained=pretrained,
                        deep_stem=m.get("deep_stem", False), multi_grid=m.get("multi_grid"),
                        weights_follow=weights_follow, **head)
    if front_state is not None:
        load_model_weights(model.front, {k: v.float() if v.is_floating_point() else v for k, v in front_state.items()})
    return model, front


def model_from_checkpoint(ckpt: dict | str | Path, output_stride: int | None = None,
                          device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict]:
    """Rebuild the model a checkpoint was trained with and load its weights (float32, eval mode).

    Args:
        ckpt: a checkpoint dict or path.
        output_stride: evaluate at another output_stride than training (same weights).

    Returns:
        ``(model, ckpt)``.

    Raises:
        CheckpointError: unreadable / not a checkpoint (see :func:`~sceneparse.checkpoint.load_checkpoint`), or
            an OpenVINO IR (no PyTorch weights: :func:`sceneparse.inference.pipeline.load_model` runs those).
        NonFiniteModelError: weights hold NaN/inf (such a model predicts one class everywhere).
        ValueError: the weights do not fit the architecture in the checkpoint's config
            (the message lists missing / unexpected / mis-shaped keys).
    """
    source = "checkpoint"
    if not isinstance(ckpt, dict):
        source = str(ckpt)
        ckpt = load_checkpoint(ckpt)
    require_torch_weights(ckpt, source, "building a PyTorch model")
    require_finite(ckpt["model"], f"{source} (a diverged training)")
    meta = ckpt.get("meta", {})
    num_classes = len(meta["classes"]) if "classes" in meta else ckpt["num_classes"]
    # a refinement checkpoint keeps its front's architecture in meta.front (its weights are front.*); one
    # written before that reads the front's file named in its config (which must still exist)
    model, _ = build_model_from_config(_with_options_of_older_files(ckpt["config"]["model"], ckpt["model"]),
                                       num_classes, front=meta.get("front"), weights_follow=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    load_model_weights(model, state)
    crop = (ckpt["config"].get("data") or {}).get("crop_size")
    set_train_size(model, crop)
    # built as trained, then switched as a whole: a model made of several strided parts (a refinement
    # cascade's front and GRN) must not end up with the parts at different strides
    if output_stride and output_stride != getattr(model, "output_stride", output_stride):
        model.set_output_stride(output_stride)
    return model.to(device).eval(), ckpt


def _with_options_of_older_files(m: dict, state: dict) -> dict:
    """``config.model`` with the options a checkpoint written before they existed was trained with: a
    pyramidal-output model whose context modules have bare Conv1x1 query / key / value transforms
    (``semantic_head.ca.<i>.query.weight``, no BN) gets ``head.context_transform: conv``."""
    head = m.get("head") or {}
    if m.get("arch") != "pyramid_output" or "context_transform" in head:
        return m
    if any(k.startswith("semantic_head.ca.") and k.endswith(".query.weight") for k in state):
        m = {**m, "head": {**head, "context_transform": "conv"}}
    return m


def set_train_size(model: torch.nn.Module, crop_size) -> None:
    """Tell every ``SegmentationModel`` in ``model`` the ``(H, W)`` of its training crops (``data.crop_size``;
    nothing for None), which sets the input sizes of whole-image inference
    (:meth:`SegmentationModel.input_size_for`)."""
    if not crop_size or len(crop_size) != 2:
        return
    for m in model.modules():
        if isinstance(m, SegmentationModel):
            m.train_size = (int(crop_size[0]), int(crop_size[1]))


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
        hint = ""
        if any(k.startswith("semantic_head.ca.") and k.endswith(".query.weight") for k in unexpected):
            hint = ("  (weights of context modules with bare Conv1x1 query / key / value, written before "
                    "model.head.context_transform: set model.head.context_transform=conv)\n")
        raise ValueError("checkpoint does not fit this model:\n" + hint
                         + (f"  missing: {missing[:8]}{'...' if len(missing) > 8 else ''}\n" if missing else "")
                         + (f"  unexpected: {unexpected[:8]}\n" if unexpected else "")
                         + (f"  shape mismatch: {shapes[:8]}\n" if shapes else ""))
    model.load_state_dict(state, strict=False)
    return allowed
