"""sceneparse: semantic scene parsing (one class label per pixel) in PyTorch.

    >>> import sceneparse
    >>> seg = sceneparse.load()            # the packaged CamVid model (or a name from list_models(), or a file)
    >>> labels = seg(sceneparse.sample_image())  # (H, W) uint8 class ids; seg.probs(...), seg.overlay(...)

The names below are imported on first use, so ``import sceneparse`` and ``sceneparse --help`` do not load
torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
_LAZY = {"Segmenter": ".api", "list_models": ".api", "load": ".api", "sample_image": ".api",
         "ARCHS": ".models", "BACKBONES": ".models", "SegmentationModel": ".models", "build_model": ".models"}
__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sceneparse' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
