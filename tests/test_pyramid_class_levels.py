"""scripts/pyramid_class_levels.py: the fused output at several tau and each level alone, on hand-checkable data."""
import torch

from sceneparse import build_model
from sceneparse.evaluation.metrics import ConfusionMatrix

from .conftest import load_script


def test_readings_equal_the_models_own_output_and_levels():
    pcl = load_script("pyramid_class_levels")
    torch.manual_seed(0)
    model = build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, decoder_channels=16,
                        unity_channels=8, semantic_channels=16).eval()
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(3, 64, 96, generator=g), "label": torch.randint(0, 3, (64, 96), generator=g)}
            for _ in range(2)]
    cms = pcl.level_confusions(model, data, [model.tau, 1.01], 3)
    assert set(cms) == {f"fused_tau{model.tau:g}", "fused_tau1.01", "level_s32", "level_s16", "level_s8", "level_s4"}
    ref, finest = ConfusionMatrix(3), ConfusionMatrix(3)
    with torch.inference_mode():
        for item in data:
            out = model.forward_pyramid(item["image"][None])
            ref.update(torch.nn.functional.interpolate(out["out"], size=(64, 96), mode="bilinear",
                                                       align_corners=False).argmax(1), item["label"][None])
            finest.update(torch.nn.functional.interpolate(out["semantic"][-1].float(), size=(64, 96), mode="bilinear",
                                                          align_corners=False).argmax(1), item["label"][None])
    assert torch.equal(cms[f"fused_tau{model.tau:g}"].mat, ref.mat)  # the model's own fused output
    assert torch.equal(cms["level_s4"].mat, finest.mat)
    assert torch.equal(cms["fused_tau1.01"].mat, finest.mat)  # no cell passes tau > 1: the finest level decides
    assert int(ref.mat.sum()) == 2 * 64 * 96
