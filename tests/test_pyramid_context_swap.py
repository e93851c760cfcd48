"""scripts/pyramid_context_swap.py: the fused output with each image's own context, and with a donor image's."""
import math

import pytest
import torch

from sceneparse import build_model
from sceneparse.evaluation.metrics import ConfusionMatrix
from sceneparse.models.pyramid.model import _avg_pools

from .conftest import load_script


def _model(context=True):
    torch.manual_seed(0)
    model = build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, decoder_channels=16,
                        unity_channels=8, semantic_channels=16, context=context).eval()
    with torch.no_grad():  # scores that vary across the image, as trained weights give
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.1, 0.3)
    return model


def _decoder_features(model, x):
    """The semantic head's input for ``x`` (the fusion decoder's stride-4 features)."""
    seen = []
    h = model.semantic_head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        model.forward_pyramid(x)
    finally:
        h.remove()
    return seen[0]


def test_the_swap_reads_every_level_the_donors_context_chain_and_the_images_own_features():
    """Reference written apart from the hooks: the donor's context chain (theta_0 = PyramidPool(X_L), then
    theta_l = CU_l(CA_l(X_l, theta_{l-1}), theta_{l-1}), Eqs. 4-6) and the image's own level features, through
    each level's CA and ConvBlock (Eq. 7)."""
    pcs = load_script("pyramid_context_swap")
    model, head = _model(), None
    head = model.semantic_head
    g = torch.Generator().manual_seed(0)
    image, donor = torch.randn(1, 3, 64, 96, generator=g), 3 * torch.randn(1, 3, 64, 96, generator=g)
    with torch.inference_mode():
        lev_i = _avg_pools(head.proj(_decoder_features(model, image)), head.pool_factors)
        lev_d = _avg_pools(head.proj(_decoder_features(model, donor)), head.pool_factors)
        theta, thetas = head.pool0(head.proj(_decoder_features(model, donor))), []
        for lvl in range(head.num_levels):
            thetas.append(theta)
            if lvl < head.num_levels - 1:
                theta = head.cu[lvl](head.ca[lvl](lev_d[lvl], theta), theta)
        expect = [head.blocks[lvl](head.ca[lvl](lev_i[lvl], thetas[lvl])) for lvl in range(head.num_levels)]
        recorded = pcs.record_context(model, donor)
        own = model.forward_pyramid(image)["semantic"]
        with pcs.injected_context(model, recorded):
            swapped = model.forward_pyramid(image)["semantic"]
        after = model.forward_pyramid(image)["semantic"]
    assert len(recorded) == 4
    for r, t in zip(recorded, thetas):
        torch.testing.assert_close(r, t)
    for s, e, o, a in zip(swapped, expect, own, after):
        torch.testing.assert_close(s, e)
        torch.testing.assert_close(a, o)  # the hooks are gone after the block
    assert all((s - o).abs().amax() > 1e-3 for s, o in zip(swapped, own))  # the donor's context changes each level


def test_own_reading_is_the_models_output_and_the_donor_is_half_the_split_away():
    pcs = load_script("pyramid_context_swap")
    model = _model()
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(3, 64, 96, generator=g) * (1 + i), "label": torch.randint(0, 3, (64, 96), generator=g)}
            for i in range(4)]
    res = pcs.context_swap_confusions(model, data, 3)
    ref, swapped, changed = ConfusionMatrix(3), ConfusionMatrix(3), 0
    with torch.inference_mode():
        for i, item in enumerate(data):
            own = model.forward_pyramid(item["image"][None])["out"].argmax(1)
            ref.update(own, item["label"][None])
            with pcs.injected_context(model, pcs.record_context(model, data[(i + 2) % 4]["image"][None])):
                lab = model.forward_pyramid(item["image"][None])["out"].argmax(1)
            swapped.update(lab, item["label"][None])
            changed += int((lab != own).sum())
    assert torch.equal(res["own"].mat, ref.mat) and torch.equal(res["swapped"].mat, swapped.mat)
    assert res["changed_pixels"] == changed > 0 and res["pixels"] == 4 * 64 * 96
    assert len(res["attention_entropy"]) == 4 and all(0 < e <= math.log(110) + 1e-6 for e in res["attention_entropy"])


def test_attention_entropy_is_log_t_for_a_flat_attention_and_lower_for_a_peaked_one():
    pcs = load_script("pyramid_context_swap")
    model = _model()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for ca in model.semantic_head.ca:  # zero queries (BN scale and shift 0): every logit 0, a uniform softmax
            ca.query[1].weight.zero_()
            ca.query[1].bias.zero_()
    assert pcs.attention_entropy(model, x) == pytest.approx([math.log(110)] * 4, abs=1e-4)
    with torch.no_grad():
        for ca in model.semantic_head.ca:
            ca.query[1].bias.fill_(50.0)  # large positive queries: the softmax follows the keys' spread
    assert max(pcs.attention_entropy(model, x)) < math.log(110) - 0.5


def test_a_model_without_context_modules_is_refused():
    pcs = load_script("pyramid_context_swap")
    with pytest.raises(ValueError, match="no context modules"):
        pcs.record_context(_model(context=False), torch.zeros(1, 3, 64, 96))
    with pytest.raises(ValueError, match="need 4 context tensors"):
        with pcs.injected_context(_model(), []):
            pass
