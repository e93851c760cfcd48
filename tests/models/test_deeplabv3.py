import pytest
import torch

from sceneparse import build_model
from sceneparse.models.deeplabv3 import ASPP


def test_aspp_rates_double_when_output_stride_halves():
    aspp = ASPP(32, 16, rates=(6, 12, 18), output_stride=16)
    assert aspp.rates == (6, 12, 18)
    aspp.set_output_stride(8)
    assert aspp.rates == (12, 24, 36)
    assert [b[0].padding[0] for b in aspp.branches[1:]] == [12, 24, 36]
    assert ASPP(32, 16, rates=(6, 12, 18, 24), output_stride=8).rates == (12, 24, 36, 48)  # Table 5 extra rate


def test_image_pooling_switch_and_branch_count():
    on = ASPP(32, 16, image_pooling=True)
    off = ASPP(32, 16, image_pooling=False)
    assert on.project[0].in_channels == 5 * 16 and off.project[0].in_channels == 4 * 16
    x = torch.randn(2, 32, 9, 11)
    on.eval()
    # the image-level branch is constant over space (pooled then upsampled)
    y = on.image_pool(x)
    assert torch.allclose(y, y[..., :1, :1].expand_as(y))
    assert on(x).shape == (2, 16, 9, 11)


def test_image_pooling_gives_every_position_the_whole_image_and_trains():
    """The tie of DeepLabv3 Table 5's image-pooling row is not a disconnected branch: with it, a corner
    of the output depends on the far corner of a 23x30 feature map (no atrous rate reaches that far), and
    its parameters get gradients in training mode."""
    torch.manual_seed(0)
    on, off = ASPP(8, 8, rates=(1, 2, 3), image_pooling=True), ASPP(8, 8, rates=(1, 2, 3), image_pooling=False)
    x = torch.randn(2, 8, 23, 30, requires_grad=True)
    for aspp, reaches in ((on, True), (off, False)):
        aspp.eval()  # running statistics: in training mode BatchNorm itself would mix every position
        y = aspp(x)
        (grad,) = torch.autograd.grad(y[:, :, 0, 0].sum(), x)
        assert (grad[:, :, -1, -1].abs().sum() > 0) == reaches  # 22 rows / 29 columns away
    on.train().zero_grad()
    on(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on.image_pool.parameters())


def test_model_output_stride_switch_updates_backbone_and_aspp():
    m = build_model("deeplabv3", "resnet50", 4, output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in m.backbone.layer4] == [2, 4, 8]
    m.set_output_stride(8)
    assert m.decode_head.aspp.rates == (12, 24, 36)
    assert [b.conv2.dilation[0] for b in m.backbone.layer4] == [4, 8, 16]
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 67, 53))["out"].shape == (1, 4, 67, 53)


def test_cascade_blocks_double_rates_with_multi_grid():
    m = build_model("deeplabv3_cascade", "resnet50", 4, output_stride=16, multi_grid=(1, 2, 1))
    blocks = m.backbone.cascade.blocks
    assert len(blocks) == 3  # block5..block7
    assert [[u.conv2.dilation[0] for u in b] for b in blocks] == [[4, 8, 4], [8, 16, 8], [16, 32, 16]]
    m.train()
    feats = m.backbone(torch.randn(2, 3, 64, 64))
    assert feats[-1].shape == (2, 2048, 4, 4)  # still output_stride 16 after three more blocks
    with pytest.raises(ValueError, match="Bottleneck"):
        build_model("deeplabv3_cascade", "resnet18", 4)


def test_cascaded_model_has_no_aspp_and_its_new_blocks_learn_at_the_head_rate():
    """Sec. 3.2 / Tables 1-3: block7 -> classifier, no ASPP (aspp=true adds it); block5-7 are random
    layers inside the backbone, so they must not learn at the pretrained backbone's lr."""
    from sceneparse.models.deeplabv3 import ASPPHead
    from sceneparse.models.heads import FCNHead

    m = build_model("deeplabv3_cascade", "resnet50", 4, output_stride=16, multi_grid=(1, 2, 1))
    assert type(m.decode_head) is FCNHead and m.decode_head.classifier.in_channels == 2048
    assert not any(isinstance(mod, ASPPHead) for mod in m.modules())
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64))["out"].shape == (1, 4, 64, 64)
    backbone_group, head_group = m.param_groups(0.01, 10.0)
    assert backbone_group["lr"] == 0.01 and head_group["lr"] == pytest.approx(0.1)
    cascade = {id(p) for p in m.backbone.cascade.parameters()}
    body = {id(p) for p in m.backbone.body.parameters()}
    assert cascade <= {id(p) for p in head_group["params"]}
    assert body == {id(p) for p in backbone_group["params"]}
    with_aspp = build_model("deeplabv3_cascade", "resnet50", 4, aspp=True, head_channels=32)
    assert isinstance(with_aspp.decode_head, ASPPHead) and with_aspp.decode_head.classifier.in_channels == 32
    with pytest.raises(ValueError, match="aspp_rates is an ASPP option"):
        build_model("deeplabv3_cascade", "resnet50", 4, aspp_rates=[6, 12, 18])
