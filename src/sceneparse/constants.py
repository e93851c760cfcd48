"""Constants shared by every package (this module imports nothing of ours)."""
from pathlib import Path


IGNORE_INDEX = 255  # label value excluded from losses and metrics (ADE20K "other", VOC boundaries, padding)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1]: the normalisation of every ImageNet-pretrained backbone
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what a folder of images holds
# images above this many pixels are refused before decoding (a PNG header can declare 20000x20000 in a few
# bytes: a decompression bomb). 8K UHD is 33 MP; PIL's own hard limit is ~179 MP
MAX_IMAGE_PIXELS = 100_000_000
# the packaged models (``sceneparse.list_models()``) and the one ``predict`` / ``load()`` use by default
PACKAGED_WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "camvid_pyramid_effl0"
# the shipped configs (``configs/`` in the repository is a link to this folder): ``sceneparse train
# camvid/pspnet_effl0`` finds them after a wheel install too
PACKAGED_CONFIGS_DIR = Path(__file__).parent / "configs"

#: who can run a network in the inference engine (deploy.backends)
BACKENDS = ("torch", "openvino", "onnxruntime")
