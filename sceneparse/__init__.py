"""sceneparse: semantic scene parsing (one class label per pixel) in PyTorch."""
from .models import ARCHS, BACKBONES, SegmentationModel, build_model

__version__ = "0.1.0"
__all__ = ["ARCHS", "BACKBONES", "SegmentationModel", "build_model", "__version__"]
