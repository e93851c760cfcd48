import pytest
import torch
import torch.nn as nn

from sceneparse import build_model
from sceneparse.models.backbones import ResNetBackbone, build_backbone
from sceneparse.models.heads import PSPHead, PyramidPoolingModule

ALL_BACKBONES = ["resnet18", "resnet34", "resnet50", "resnet101",
                 "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
@pytest.mark.parametrize("arch", ["fcn", "pspnet"])
def test_output_shapes_all_output_strides_odd_sizes(arch, backbone):
    torch.manual_seed(0)
    model = build_model(arch, backbone, num_classes=5, output_stride=32, head_channels=16, aux_channels=8)
    for os_ in (8, 16, 32):
        model.set_output_stride(os_)
        model.train()
        out = model(torch.randn(2, 3, 67, 45))
        assert out["out"].shape == (2, 5, 67, 45)
        if arch == "pspnet":  # auxiliary head on by default for PSPNet, in train mode only
            assert out["aux"].shape == (2, 5, 67, 45)
        else:
            assert "aux" not in out
        model.eval()
        with torch.no_grad():
            assert set(model(torch.randn(1, 3, 33, 71))) == {"out"}


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "efficientnet_lite0"])
def test_output_stride_changes_feature_resolution(backbone):
    net = build_backbone(backbone, output_stride=32).eval()
    x = torch.randn(1, 3, 128, 160)
    for os_ in (8, 16, 32):
        net.set_output_stride(os_)
        with torch.no_grad():
            c1, c2, c3, c4 = net(x)
        assert c4.shape[-2:] == (128 // os_, 160 // os_)
        assert c3.shape[-2:] == (128 // min(os_, 16), 160 // min(os_, 16))
        assert c1.shape[-2:] == (32, 40) and c2.shape[-2:] == (16, 20)
        assert [c.shape[1] for c in (c1, c2, c3, c4)] == net.out_channels


def test_switching_output_stride_keeps_weights():
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", 3, output_stride=16, head_channels=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y16 = model(x)["out"]
        model.set_output_stride(8)
        y8 = model(x)["out"]
        model.set_output_stride(16)
        y16b = model(x)["out"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.allclose(y16, y8)  # a different network function ...
    torch.testing.assert_close(y16, y16b)  # ... and switching back restores it exactly


def test_resnet_dilation_follows_torchvision_convention_and_multi_grid():
    net = ResNetBackbone(50, output_stride=8)
    # OS8: stage 3 dilation 2 (first block keeps 1), stage 4 dilation 4 (first block keeps 2)
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[2].conv2.dilation == (4, 4)
    assert all(b.conv2.stride == (1, 1) for b in (net.layer3[0], net.layer4[0]))
    assert net.layer3[0].downsample[0].stride == (1, 1)
    net = ResNetBackbone(50, output_stride=16, multi_grid=(1, 2, 4))
    # DeepLabv3 Sec. 3.2.1: rates = base rate (2 at OS16) x unit rates (1, 2, 4) in block4
    assert [b.conv2.dilation[0] for b in net.layer4] == [2, 4, 8]
    assert [b.conv2.padding[0] for b in net.layer4] == [2, 4, 8]
    assert net.layer3[1].conv2.dilation == (1, 1)
    net18 = ResNetBackbone(18, output_stride=8, multi_grid=(1, 2))
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in net18.layer4] == [(4, 4), (8, 8)]


def test_deep_stem():
    net = ResNetBackbone(50, output_stride=8, deep_stem=True)
    convs = [m for m in net.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.out_channels) for c in convs] == [((3, 3), 64), ((3, 3), 64), ((3, 3), 128)]
    assert net(torch.randn(1, 3, 64, 64))[-1].shape == (1, 2048, 8, 8)


def test_torchvision_resnet_weights_load_from_local_file(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet18", output_stride=32, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        body = nn.Sequential(*list(ref.children())[:-2])
        torch.testing.assert_close(net(x)[-1], body(x))
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="does not fit"):
        build_backbone("resnet50", pretrained=str(path))


def test_ppm_pooled_sizes_and_channels():
    ppm = PyramidPoolingModule(64, bins=(1, 2, 3, 6))
    x = torch.randn(2, 64, 23, 30)
    assert [tuple(p.shape[-2:]) for p in ppm.pooled(x)] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    assert ppm(x).shape == (2, 64 + 4 * 16, 23, 30)
    # bin 1 with average pooling is the global mean
    torch.testing.assert_close(ppm.pooled(x)[0][..., 0, 0], x.mean((2, 3)))
    # no dimension reduction keeps C channels per level; max pooling takes maxima
    ppm_nr = PyramidPoolingModule(64, bins=(1, 2), pool="max", reduction=False)
    assert ppm_nr(x).shape == (2, 64 * 3, 23, 30)
    torch.testing.assert_close(ppm_nr.pooled(x)[0][..., 0, 0], x.amax((2, 3)))
    with pytest.raises(ValueError):
        PyramidPoolingModule(64, pool="median")
    head = PSPHead(64, 32, 7, bins=(1, 3))
    assert head([x]).shape == (2, 7, 23, 30)


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("segformer", "resnet18", 3)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("pspnet", "vgg16", 3)
    with pytest.raises(ValueError, match="output_stride"):
        build_model("pspnet", "resnet18", 3, output_stride=4)
    with pytest.raises(ValueError, match="arch 'fcn' has no option model.head.bins"):
        build_model("fcn", "resnet18", 3, bins=(1, 2))
    with pytest.raises(ValueError, match="ResNet options"):
        build_model("pspnet", "efficientnet_lite0", 3, multi_grid=(1, 2, 4))


def test_head_options_are_checked_against_the_architecture_with_a_suggestion():
    from sceneparse.models import arch_options

    with pytest.raises(ValueError, match="no option model.head.bnis; did you mean 'bins'"):
        build_model("pspnet", "resnet18", 3, 16, bnis=[1, 2])
    with pytest.raises(ValueError, match="needs model.head.front"):
        build_model("refine", "resnet18", 3, 16)
    assert {"bins", "pool", "reduction"} <= set(arch_options("pspnet"))
    assert "aspp_rates" in arch_options("deeplabv3_cascade")  # forwarded options count too


def test_a_head_option_of_the_wrong_type_is_a_value_error():
    with pytest.raises(ValueError, match="bad option for arch 'pspnet'"):
        build_model("pspnet", "resnet18", 3, 16, bins=3)
