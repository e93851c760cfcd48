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
    with torch.no_grad():  # scores that vary across the image, and unity probabilities around tau
        for mod in model.modules():  # (milder statistics would leave the scores near flat; stronger ones saturate)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.1, 0.3)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(3, 64, 96, generator=g), "label": torch.randint(0, 3, (64, 96), generator=g)}
            for _ in range(2)]
    with torch.inference_mode():
        unity = torch.cat([u.flatten() for u in model.forward_pyramid(data[0]["image"][None])["unity"]])
    taus = [float(unity.quantile(q)) for q in (0.3, 0.7)] + [1.01]
    cms = pcl.level_confusions(model, data, taus, 3)
    assert set(cms) == {f"fused_tau{t:g}" for t in taus} | {"level_s32", "level_s16", "level_s8", "level_s4"}
    finest, finest_logprob = ConfusionMatrix(3), ConfusionMatrix(3)
    for t in taus[:2]:  # the model's own fused output at that threshold
        model.tau, ref, labels = t, ConfusionMatrix(3), []
        with torch.inference_mode():
            for item in data:
                out = model.forward_pyramid(item["image"][None])
                labels.append(out["out"].argmax(1))
                ref.update(labels[-1], item["label"][None])
                if t == taus[0]:
                    for cm, scores in ((finest, out["semantic"][-1].float()),
                                       (finest_logprob, out["semantic"][-1].float().log_softmax(1))):
                        cm.update(torch.nn.functional.interpolate(scores, size=(64, 96), mode="bilinear",
                                                                  align_corners=False).argmax(1), item["label"][None])
        assert len(torch.cat(labels).unique()) == 3  # not a constant map: the check can tell readings apart
        assert torch.equal(cms[f"fused_tau{t:g}"].mat, ref.mat), t
    assert not torch.equal(cms[f"fused_tau{taus[0]:g}"].mat, cms[f"fused_tau{taus[1]:g}"].mat)
    assert torch.equal(cms["level_s4"].mat, finest.mat)
    # no cell passes tau > 1: the finest level decides (its log-probabilities upsampled, as the fused output is)
    assert torch.equal(cms["fused_tau1.01"].mat, finest_logprob.mat)
    assert int(finest.mat.sum()) == 2 * 64 * 96
