"""Models: ``build_model(arch, backbone=..., num_classes=..., output_stride=8, **options)`` (the registry,
:mod:`.registry`), backbones, decode heads, the refinement networks and the pyramidal output.

A new architecture is one module whose builder carries ``@register_arch("name")``, imported below.
"""
from __future__ import annotations

from ..utils.sysinfo import check_torch_pair

check_torch_pair()  # before anything imports torchvision: a mismatched pair gets a clear message

from .backbones import BACKBONES
from .base import SceneParser
from .registry import ARCHS, FIXED_OUTPUT_STRIDE, arch_options, build_model, register_arch
from .segmentor import SegmentationModel
# each registers its architectures, in this order: fcn, pspnet, deeplabv3, deeplabv3_cascade, refine, pyramid_output
from . import deeplabv3, heads  # noqa: E402,F401
from .refine import cascade as _refine_cascade  # noqa: E402,F401
from .pyramid import model as _pyramid_model  # noqa: E402,F401


__all__ = ["ARCHS", "BACKBONES", "build_model", "arch_options", "register_arch", "SceneParser",
           "SegmentationModel"]
