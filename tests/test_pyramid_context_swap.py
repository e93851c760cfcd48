"""scripts/pyramid_context_swap.py: the fused output with each image's own context, and with another image's."""
import pytest
import torch

from sceneparse import build_model
from sceneparse.evaluation.metrics import ConfusionMatrix

from .conftest import load_script


def _model(context=True):
    torch.manual_seed(0)
    model = build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, decoder_channels=16,
                        unity_channels=8, semantic_channels=16, context=context).eval()
    with torch.no_grad():  # scores that vary across the image, as trained weights give
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.02, 0.1)
    return model


def test_own_reading_is_the_models_output_and_the_swap_changes_only_the_context():
    pcs = load_script("pyramid_context_swap")
    model = _model()
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(3, 64, 96, generator=g) * (1 + 2 * i), "label": torch.randint(0, 3, (64, 96), generator=g)}
            for i in range(3)]
    cms = pcs.context_swap_confusions(model, data, 3)
    ref = ConfusionMatrix(3)
    with torch.inference_mode():
        for item in data:
            ref.update(model.forward_pyramid(item["image"][None])["out"].argmax(1), item["label"][None])
        assert torch.equal(cms["own"].mat, ref.mat)
        assert not torch.equal(cms["swapped"].mat, ref.mat)  # another image's context changes the labels
        x = torch.stack([data[0]["image"], data[1]["image"]])
        own = model.forward_pyramid(x)["out"]
        with pcs.swapped_context(model):
            swapped = model.forward_pyramid(x)["out"]
            same = model.forward_pyramid(torch.stack([data[0]["image"]] * 2))["out"]
        after = model.forward_pyramid(x)["out"]
    torch.testing.assert_close(same[0], own[0], rtol=1e-4, atol=1e-4)  # an identical neighbour: its own context
    assert (swapped - own).abs().amax() > 1e-3
    torch.testing.assert_close(after, own)  # the hooks are gone after the block


def test_a_model_without_context_modules_is_refused():
    pcs = load_script("pyramid_context_swap")
    with pytest.raises(ValueError, match="no context modules"):
        with pcs.swapped_context(_model(context=False)):
            pass
