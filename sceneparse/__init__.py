"""sceneparse: semantic scene parsing (one class label per pixel) in PyTorch.

    >>> import sceneparse
    >>> seg = sceneparse.load()            # the packaged CamVid model (or a name from list_models(), or a file)
    >>> labels = seg("street.jpg")         # (H, W) uint8 class ids; seg.probs(...), seg.overlay(...)
"""
from .api import Segmenter, list_models, load
from .models import ARCHS, BACKBONES, SegmentationModel, build_model

__version__ = "0.1.0"
__all__ = ["ARCHS", "BACKBONES", "SegmentationModel", "Segmenter", "build_model", "list_models", "load",
           "__version__"]
