"""Issue 18: ImageNet weights for every backbone: local files (timm / torchvision format, .pth or
.safetensors), the Hugging Face cache, and one clear error offline. No test touches the network."""
import pytest
import timm
import torch

from sceneparse.models.backbones import build_backbone
from sceneparse.models.backbones import weights as W


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never download in tests, even where the hub is reachable


def _randomised(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.05 + (1.0 if t.ndim == 1 else 0.0))
    return model.eval()


def test_resnet_from_a_timm_file_gives_timm_features(tmp_path):
    ref = _randomised(timm.create_model("resnet18", pretrained=False, num_classes=0))
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet18", output_stride=32, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[-1], ref.forward_features(x))


def test_resnet_from_a_torchvision_file_in_a_container(tmp_path):
    import torchvision

    ref = _randomised(torchvision.models.resnet18())
    path = tmp_path / "tv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)  # DataParallel style
    net = build_backbone("resnet18", output_stride=32, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        y = ref.layer4(ref.layer3(ref.layer2(ref.layer1(y))))
        torch.testing.assert_close(net(x)[-1], y)


def test_hrnet_from_safetensors_gives_timm_features(tmp_path):
    pytest.importorskip("safetensors.torch")  # the extra that provides it
    from safetensors.torch import save_file

    full = _randomised(timm.create_model("hrnet_w18_small", pretrained=False))
    path = tmp_path / "hrnet.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    ref = timm.create_model("hrnet_w18_small", pretrained=False, features_only=True, feature_location="",
                            out_indices=(1, 2, 3, 4))
    ref.load_state_dict(full.state_dict(), strict=False)
    net = build_backbone("hrnet_w18_small", output_stride=32, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(net(x), ref.eval()(x)):
            torch.testing.assert_close(a, b)


def test_efficientnet_lite_from_a_timm_file(tmp_path):
    ref = _randomised(timm.create_model("efficientnet_lite0", pretrained=False))
    path = tmp_path / "lite0.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone("efficientnet_lite0", output_stride=32, pretrained=path)
    own = net.state_dict()
    for k, v in own.items():
        torch.testing.assert_close(v, ref.state_dict()[k])


def test_a_file_of_another_network_is_refused_by_name(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError, match="r34.pth does not fit"):
        build_backbone("resnet18", pretrained=path)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone("resnet18", pretrained=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02junk")
    with pytest.raises(ValueError, match="cannot read pretrained weights"):
        build_backbone("resnet18", pretrained=tmp_path / "junk.pth")


@pytest.mark.parametrize("name", ["resnet50", "hrnet_w18_small"])
def test_offline_without_a_cached_file_says_what_to_do(monkeypatch, name):
    monkeypatch.setattr(W, "_hub_cached_file", lambda repo: None)
    with pytest.raises(ValueError) as e:
        build_backbone(name, output_stride=32 if name.startswith("hrnet") else 8, pretrained=True)
    msg = str(e.value)
    assert "HF_HUB_OFFLINE is set" in msg and f"timm/{name}" in msg and "model.pretrained=/path/" in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(W, "_hub_reachable", lambda endpoint, timeout=3.0: False)
    with pytest.raises(ValueError, match="cannot reach https://huggingface.co.*not in the local cache"):
        build_backbone(name, output_stride=32 if name.startswith("hrnet") else 8, pretrained=True)


def test_weights_in_the_hub_cache_are_used_offline(monkeypatch, tmp_path):
    pytest.importorskip("safetensors.torch")  # the extra that provides it
    from safetensors.torch import save_file

    ref = _randomised(timm.create_model("resnet18", pretrained=False))
    path = tmp_path / "model.safetensors"
    save_file(ref.state_dict(), str(path))
    seen = []
    monkeypatch.setattr(W, "_hub_cached_file", lambda repo: seen.append(repo) or path)
    net = build_backbone("resnet18", output_stride=32, pretrained=True).eval()
    assert seen == ["timm/resnet18.a1_in1k"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[-1], ref.forward_features(x))


def test_hub_probe_is_false_offline_and_for_a_closed_port(monkeypatch):
    assert not W._hub_reachable("https://huggingface.co")  # HF_HUB_OFFLINE=1
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    assert not W._hub_reachable("http://127.0.0.1:9", timeout=1.0)  # discard port: nothing listens


def test_deep_stem_resnet_loads_everything_but_its_stem(tmp_path):
    ref = _randomised(timm.create_model("resnet50", pretrained=False, num_classes=0))
    path = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet50", output_stride=16, pretrained=path, deep_stem=True)
    torch.testing.assert_close(net.layer4[2].conv3.weight, ref.layer4[2].conv3.weight)
    torch.testing.assert_close(net.layer1[1].conv2.weight, ref.layer1[1].conv2.weight)
    assert net.layer1[0].conv1.weight.shape[1] == 128  # the widened first block keeps its init


def test_a_pretrained_file_that_needs_unpickling_is_refused(tmp_path):
    # model.pretrained=<file> goes through the same weights-only loader as checkpoints: nothing in it runs
    import pickle

    from sceneparse.checkpoint import UnsafeCheckpointError
    from sceneparse.models.backbones.weights import load_state_file

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*evil.pth"):
        load_state_file(path)
