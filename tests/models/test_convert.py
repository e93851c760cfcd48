import pytest
import torch

from sceneparse.models.convert import convert_torchvision_deeplabv3, from_torchvision_deeplabv3

tvseg = pytest.importorskip("torchvision.models.segmentation")


def test_torchvision_deeplabv3_round_trip_gives_equal_outputs():
    torch.manual_seed(0)
    ref = tvseg.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=True)
    # give BN non-trivial statistics so that a mis-mapped BN would show
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    ours = from_torchvision_deeplabv3(ref.state_dict()).eval()
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["out"], ref(x)["out"], rtol=1e-4, atol=1e-4)
    ours.train()
    with torch.no_grad():
        assert ours(torch.randn(2, 3, 65, 97))["aux"].shape == (2, 5, 65, 97)  # torchvision's aux head kept


def test_converter_rejects_foreign_keys():
    with pytest.raises(ValueError, match="unexpected key"):
        convert_torchvision_deeplabv3({"encoder.conv1.weight": torch.zeros(1)})
