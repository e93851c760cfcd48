"""Inference optimisations (BN folding, bf16), peer comparison, ONNX export, dense CRF."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from sceneparse.models import build_model
from sceneparse.deploy.optimize import fold_batchnorm, optimize_for_inference


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("arch,backbone", [("pspnet", "resnet18"), ("deeplabv3", "resnet18"),
                                           ("fcn", "efficientnet_lite0")])
def test_bn_folding_leaves_outputs_equal(arch, backbone):
    torch.manual_seed(0)
    model = _randomise_bn(build_model(arch, backbone, 5, output_stride=16, head_channels=32, aux_head=False))
    x = torch.randn(2, 3, 67, 91)
    with torch.no_grad():
        ref = model(x)["out"]
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert folded == n_bn  # every BN of these models follows a convolution
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        err = (model(x)["out"] - ref).abs().max().item()
    # float32 rounding of the re-associated products: 1e-5 of the logits' scale
    assert err <= 1e-5 * max(1.0, ref.abs().max().item()), (err, ref.abs().max().item())


def test_bn_folding_of_the_pyramid_is_checked_before_its_unity_threshold():
    """The pyramidal output's fused scores jump where a unity probability crosses tau (Specialize and Fuse
    Eq. 2): a rounding change from folding may flip a cell there. The fold is checked on the levels
    (semantic scores and unity probabilities) before the threshold, so it succeeds, with each tau placed on
    a cell's unity probability in turn."""
    torch.manual_seed(0)
    model = _randomise_bn(build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False,
                                      decoder_channels=16, unity_channels=8, semantic_channels=16))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = model.forward_pyramid(x)
    for tau in ref["unity"][1].flatten()[:30].tolist():
        folded = copy.deepcopy(model)
        folded.tau = tau
        fold_batchnorm(folded, x)
        with torch.no_grad():
            got = folded.forward_pyramid(x)
        for a, b in zip(got["semantic"] + got["unity"], ref["semantic"] + ref["unity"]):
            assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_bn_folding_refuses_training_mode_and_keeps_timm_activations():
    model = build_model("fcn", "efficientnet_lite0", 3, output_stride=16, head_channels=8, aux_head=False)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(model.train())
    n_act = sum(isinstance(m, nn.ReLU6) for m in model.modules())  # inside timm's BatchNormAct2d
    fold_batchnorm(model.eval())
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == n_act > 0  # BatchNormAct2d -> its act


def test_bf16_fast_path_stays_close_to_fp32():
    from sceneparse.inference.engine import InferenceConfig, infer_probs

    torch.manual_seed(0)
    model = _randomise_bn(build_model("pspnet", "resnet18", 4, output_stride=16, head_channels=32, aux_head=False))
    x = torch.randn(1, 3, 64, 80)
    p32 = infer_probs(model, x, InferenceConfig())
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert next(fast.parameters()).dtype == torch.bfloat16
    p16 = infer_probs(fast, x, InferenceConfig())  # the input is cast to the weights' dtype
    assert p16.dtype == torch.float32 and (p16 - p32).abs().max() < 0.1


def test_prepadded_dilated_convs_compute_the_same_function():
    from sceneparse.deploy.optimize import PrePaddedConv2d, prepad_dilated_convs

    torch.manual_seed(0)
    model = build_model("deeplabv3", "resnet18", 4, output_stride=8, head_channels=16, aux_head=False).eval()
    x = torch.randn(1, 3, 64, 72)
    with torch.no_grad():
        ref = model(x)["out"]
    n_dilated = sum(type(m) is nn.Conv2d and max(m.dilation) > 1 for m in model.modules())
    # resnet18's widest map has 512 channels: the default rule (rate >= 4 and > 1024 input channels, where
    # oneDNN's bf16 kernel is slow) pads none of them; with the thresholds lowered, every dilated one
    assert prepad_dilated_convs(model) == 0
    assert prepad_dilated_convs(model, min_dilation=2, min_in_channels=1) == n_dilated > 3  # ASPP + backbone
    assert sum(isinstance(m, PrePaddedConv2d) for m in model.modules()) == n_dilated
    with torch.no_grad():
        assert torch.allclose(model(x)["out"], ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="zero padding"):
        PrePaddedConv2d(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("mode", [True, "aot"])  # torch.compile with freezing, AOTInductor
def test_compiled_inference_matches_eager(mode):
    torch.manual_seed(0)
    model = _randomise_bn(build_model("fcn", "resnet18", 3, output_stride=16, head_channels=8, aux_head=False))
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)["out"]
    fast = optimize_for_inference(model, compile=mode)
    with torch.inference_mode():
        out = fast(x.contiguous(memory_format=torch.channels_last))["out"]
        again = fast(x.contiguous(memory_format=torch.channels_last))["out"]  # the cached graph / package
    assert out.shape == ref.shape and torch.equal(out, again)
    assert torch.allclose(out, ref, atol=1e-4 * max(1.0, ref.abs().max().item()), rtol=0)
    if mode == "aot":
        assert len(fast._runners) == 1


def test_compare_with_torchvision_same_weights_equal_outputs():
    from sceneparse.benchmark.compare import alternate_timings, compare_with_peer

    r = compare_with_peer("torchvision", size=(64, 64), num_classes=3, repeats=2, warmup=1)
    assert r["max_abs_diff_logits"] < 1e-3 and r["argmax_agreement"] > 0.999
    assert r["gflops_per_image"]["peer"] == pytest.approx(r["gflops_per_image"]["ours"], rel=1e-6)
    assert len(r["latency_s_all"]["peer"]) == 2 and r["speedup_ours_over_peer"] > 0
    order = []
    alternate_timings({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2, warmup=0)
    assert order == ["a", "b", "a", "b"]  # alternating, not one block after the other


def test_compare_with_smp_runs():
    pytest.importorskip("segmentation_models_pytorch")
    from sceneparse.benchmark.compare import compare_with_peer

    r = compare_with_peer("smp", arch="pspnet", size=(64, 64), num_classes=3, repeats=1, warmup=0)
    assert r["images_per_s"]["peer"] > 0 and r["gflops_per_image"]["ours"] > r["gflops_per_image"]["peer"]


def _onnx_roundtrip(tmp_path, arch, backbone="resnet18", **kw):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sceneparse.deploy.export import export_onnx, onnx_parity

    torch.manual_seed(0)
    model = _randomise_bn(build_model(arch, backbone, 5, output_stride=16, **kw))
    path = export_onnx(model, tmp_path / f"{arch}.onnx", (96, 128))
    # other sizes than the tracing example: adaptive pooling must not be baked in
    r = onnx_parity(path, model, [(96, 128), (70, 150), (128, 64)])
    # float32 rounding grows with the logits' scale (a random ResNet-50 gives logits in the hundreds)
    assert r["max_abs_diff"] < 1e-4 * max(1.0, r["ref_max_abs"] / 10) and r["argmax_agreement"] > 0.999, r


def test_onnx_export_pspnet_dynamic_size(tmp_path):
    _onnx_roundtrip(tmp_path, "pspnet", head_channels=16, aux_head=False)


@pytest.mark.slow
@pytest.mark.parametrize("arch,kw", [("fcn", {"head_channels": 16}), ("deeplabv3", {"head_channels": 16}),
                                     ("deeplabv3_cascade", {"backbone": "resnet50"}),
                                     ("pyramid_output", {"decoder_channels": 16, "semantic_channels": 16})])
def test_onnx_export_every_arch(tmp_path, arch, kw):
    _onnx_roundtrip(tmp_path, arch, **kw)


def test_dense_crf_cleans_a_flipped_pixel_and_keeps_clear_regions():
    pytest.importorskip("pydensecrf")
    from sceneparse.inference.crf import DenseCRF

    # left half black, right half white; the model is confident except one wrong pixel in the left half
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 255
    probs = torch.full((2, 20, 30), 0.1)
    probs[0, :, :15], probs[1, :, 15:] = 0.9, 0.9
    probs[:, 10, 5] = torch.tensor([0.4, 0.6])  # noisy pixel
    out = DenseCRF()(probs, img)
    assert out.shape == (2, 20, 30)
    torch.testing.assert_close(out.sum(0), torch.ones(20, 30), atol=1e-4, rtol=0)
    labels = out.argmax(0)
    assert labels[10, 5] == 0 and (labels[:, :15] == 0).all() and (labels[:, 15:] == 1).all()
    with pytest.raises(ValueError, match="uint8"):
        DenseCRF()(probs, img.astype(np.float32))


def test_export_safe_adaptive_pooling_matches_pytorch(monkeypatch):
    import torch.nn.functional as F

    from sceneparse.models.heads import adaptive_pool2d

    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)  # take the export path
    for h, w in [(6, 8), (5, 9), (13, 7), (2, 3)]:
        x = torch.randn(2, 4, h, w)
        for b in (1, 2, 3, 6):
            torch.testing.assert_close(adaptive_pool2d(x, b, "avg"), F.adaptive_avg_pool2d(x, b))
            torch.testing.assert_close(adaptive_pool2d(x, b, "max"), F.adaptive_max_pool2d(x, b))


def test_export_rgb8_graph_normalises_inside_and_carries_the_classes(tiny_run, camvid_root, tmp_path, capfd):
    """Issue 18: uint8 RGB in, labels (and logits) out, class names and palette in the metadata; export
    prints a few lines, not the exporter's hundreds; labels equal sceneparse.load's on a real photo."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import numpy as np
    from PIL import Image

    import sceneparse
    from sceneparse.cli import main
    from sceneparse.deploy.export import read_metadata

    out = tmp_path / "m.onnx"
    capfd.readouterr()
    assert main(["export", "--checkpoint", str(tiny_run / "final.pt"), "--out", str(out), "--size", "96", "128",
                 "--outputs", "both"]) == 0
    printed = capfd.readouterr()
    assert len((printed.out + printed.err).strip().splitlines()) <= 4, printed
    assert "class agreement 100.000%" in printed.out
    meta = read_metadata(out)
    seg = sceneparse.load(tiny_run / "final.pt", device="cpu", fold_bn=False)
    assert meta["classes"] == seg.classes and meta["palette"] == seg.palette and meta["input_format"] == "rgb8"
    # a size with the training crops' geometry (96x128, both multiples of 16), which sceneparse.load runs as it
    # is; at another size the engine first resizes to such a size (input_size_for), the bare graph does not
    image = np.asarray(Image.open(sorted((camvid_root / "val").iterdir())[0]).convert("RGB").resize((160, 128)))
    assert seg.model.input_size_for(128, 160) == (128, 160)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, labels = sess.run(["out", "labels"], {"input": image[None]})
    assert labels.dtype == np.uint8 and labels.shape == (1, 128, 160) and logits.shape == (1, 11, 128, 160)
    assert (labels[0] == seg(image)).mean() > 0.999
    np.testing.assert_allclose(logits.argmax(1), labels)
    # the file carries the input-size rule: its metadata sizes an input as the engine does
    from sceneparse.models.segmentor import congruent_input_size

    g = meta["input_geometry"]
    assert g == {"crop_size": [96, 128], "output_stride": seg.model.output_stride}
    for size in ((120, 150), (70, 90), (96, 128)):
        assert congruent_input_size(*size, g["crop_size"], g["output_stride"]) == seg.model.input_size_for(*size)


def test_a_file_loaded_onnx_runtime_sizes_inputs_as_the_torch_model(tiny_run, tmp_path):
    """An exported file run by the engine's onnxruntime backend (``ONNXRuntimeModel(path)``) reads the input
    geometry from the file's metadata: at a size off the training crops' geometry (120x150 against 96x128
    crops at OS16) its labels are the PyTorch model's, which the engine runs at 128x144."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sceneparse.deploy.backends import ONNXRuntimeModel
    from sceneparse.deploy.export import export_onnx
    from sceneparse.inference.engine import predict_labels
    from sceneparse.models.factory import model_from_checkpoint
    from sceneparse.models.segmentor import training_geometry

    model, ckpt = model_from_checkpoint(tiny_run / "final.pt")
    path = export_onnx(model, tmp_path / "m.onnx", (96, 128), input_format="float", outputs="logits",
                       meta=ckpt["meta"])
    runtime = ONNXRuntimeModel(path, threads=1)
    assert runtime.input_geometry == training_geometry(model) == {"crop_size": [96, 128], "output_stride": 16}
    assert runtime.input_size_for(120, 150) == model.input_size_for(120, 150) == (128, 144)
    x = torch.randn(1, 3, 120, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = predict_labels(model, x)
    assert (predict_labels(runtime, x) == ref).float().mean() > 0.999
    bare = ONNXRuntimeModel(path, threads=1, input_geometry={})  # told there is no rule: runs 120x150 as given
    assert bare.input_size_for(120, 150) == (120, 150)


def test_only_wide_highly_dilated_convs_are_padded_first():
    from sceneparse.deploy.optimize import PrePaddedConv2d, prepad_dilated_convs

    model = nn.Sequential(nn.Conv2d(2048, 8, 3, padding=12, dilation=12),  # ASPP-like: padded first
                          nn.Conv2d(8, 8, 3, padding=4, dilation=4),  # narrow: native padding
                          nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8))  # depthwise: native padding
    assert prepad_dilated_convs(model) == 1
    assert [isinstance(m, PrePaddedConv2d) for m in model] == [True, False, False]


def test_dilated_depthwise_convs_run_in_float32_with_the_bf16_values():
    from sceneparse.deploy.optimize import Float32Conv2d, float32_dilated_depthwise, optimize_for_inference

    torch.manual_seed(0)
    convs = [nn.Conv2d(32, 32, 5, padding=4, dilation=2, groups=32),  # dilated depthwise: float32
             nn.Conv2d(32, 32, 3, padding=1, groups=32),  # not dilated: bf16
             nn.Conv2d(32, 32, 3, padding=2, dilation=2)]  # dense: bf16
    model = nn.Sequential(*convs).eval()
    x = torch.randn(1, 32, 23, 30)
    with torch.no_grad():
        ref = model.bfloat16()(x.bfloat16())  # all in bf16: the values the float32 layer must keep
    assert float32_dilated_depthwise(model) == 1
    assert [type(m) for m in model] == [Float32Conv2d, nn.Conv2d, nn.Conv2d]
    assert model[0].conv.weight.dtype == torch.float32 and model[1].weight.dtype == torch.bfloat16
    with torch.no_grad():
        got = model(x.bfloat16())
    assert got.dtype == torch.bfloat16
    # bf16 inputs and weights are exact in float32 and both accumulate in float32: at most a last-bit
    # difference from the summation order
    torch.testing.assert_close(got.float(), ref.float(), rtol=2 ** -7, atol=1e-3)
    # the bf16 fast path applies it on CPUs with AMX (EfficientNet-style dilated stages), not on others,
    # whatever this machine is; a later .to(bf16) still runs
    fast = optimize_for_inference(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)),
                                  dtype=torch.bfloat16, fold_bn=False, cpu_flags=["amx_bf16", "avx512_bf16"])
    assert isinstance(fast[1], Float32Conv2d)
    other = optimize_for_inference(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)),
                                   dtype=torch.bfloat16, fold_bn=False, cpu_flags=["avx512_bf16"])
    assert type(other[1]) is nn.Conv2d and other[1].weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert fast.bfloat16()(torch.randn(1, 3, 9, 9).bfloat16()).dtype == torch.bfloat16


def test_float32_dilated_depthwise_twice_changes_nothing():
    from sceneparse.deploy.optimize import Float32Conv2d, float32_dilated_depthwise

    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)).bfloat16()
    assert float32_dilated_depthwise(model) == 1 and float32_dilated_depthwise(model) == 0
    assert isinstance(model[0], Float32Conv2d) and type(model[0].conv) is nn.Conv2d
    with torch.no_grad():
        assert model(torch.randn(1, 8, 7, 7).bfloat16()).shape == (1, 8, 7, 7)


def test_inference_rules_follow_the_cpu_family():
    from sceneparse.deploy.optimize import inference_rules

    amx = inference_rules(["amx_bf16", "amx_tile", "avx512_bf16", "avx512f"])  # Intel Xeon with AMX
    avx = inference_rules(["avx512_bf16", "avx512f"])  # AMD EPYC: native bf16 dot products, no AMX
    assert amx == {"prepad_dense_dilated": True, "float32_dilated_depthwise": True, "prepad_depthwise": False,
                   "native_depthwise_bf16": False}
    assert avx == {"prepad_dense_dilated": False, "float32_dilated_depthwise": False, "prepad_depthwise": True,
                   "native_depthwise_bf16": True}
    # CPUs of neither measured family (older x86, ARM, flags unknown) keep the rules from before the choice
    assert inference_rules([]) == amx and inference_rules(["avx512f", "avx512_vnni"]) == amx
    assert inference_rules(["fp", "asimd", "bf16"]) == amx  # ARM's flags
    assert set(inference_rules()) == set(avx)  # this machine's flags by default


def test_only_depthwise_convs_padding_more_than_six_are_padded_first():
    from sceneparse.deploy.optimize import PrePaddedConv2d, prepad_depthwise_convs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 5, padding=8, dilation=4, groups=8),  # 5x5 rate 4: padded first
                          nn.Conv2d(8, 8, 3, padding=8, dilation=8, groups=8),  # 3x3 rate 8: padded first
                          nn.Conv2d(8, 8, 5, padding=6, dilation=3, groups=8),  # padding 6: oneDNN's fast kernel
                          nn.Conv2d(8, 8, 3, padding=12, dilation=12),  # dense: not this rule's
                          nn.Conv2d(8, 16, 3, padding=8, dilation=8, groups=4)).eval()  # grouped, not depthwise
    x = torch.randn(2, 8, 19, 23)
    with torch.no_grad():
        ref = model(x)
    assert prepad_depthwise_convs(model) == 2
    assert [isinstance(m, PrePaddedConv2d) for m in model] == [True, True, False, False, False]
    assert model[0].conv.padding == (0, 0) and model[0].pad == (8, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("flags", [["amx_bf16", "avx512_bf16"], ["avx512_bf16"]], ids=["amx", "avx512_bf16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_each_cpu_familys_rewrites_keep_the_models_output(flags, dtype):
    """Both families' layer rewrites, whatever CPU runs the test: which layers change, and the output
    against the same model without rewrites (same dtype)."""
    from sceneparse.deploy.optimize import Float32Conv2d, PrePaddedConv2d

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 1032, 1), nn.Conv2d(1032, 16, 3, padding=4, dilation=4),  # ASPP-like
                             nn.Conv2d(16, 16, 5, padding=8, dilation=4, groups=16),  # dilated depthwise, padding 8
                             nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)).eval()  # rate 2, padding 2

    x = torch.randn(1, 3, 17, 21)
    with torch.no_grad():
        ref = net().to(memory_format=torch.channels_last).to(dtype)(x.to(dtype).contiguous(memory_format=torch.channels_last))
    fast = optimize_for_inference(net(), dtype=dtype, fold_bn=False, cpu_flags=flags)
    kinds = [type(m) for m in fast]
    if "amx_bf16" in flags:
        bf16 = dtype == torch.bfloat16
        assert kinds == [nn.Conv2d, PrePaddedConv2d if bf16 else nn.Conv2d, Float32Conv2d if bf16 else nn.Conv2d,
                         Float32Conv2d if bf16 else nn.Conv2d]
    else:
        assert kinds == [nn.Conv2d, nn.Conv2d, PrePaddedConv2d, nn.Conv2d]
    with torch.no_grad():
        out = fast(x.to(dtype).contiguous(memory_format=torch.channels_last))
    assert out.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 2e-2 * max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=tol)


def test_an_os8_efficientnet_model_keeps_its_output_through_each_familys_rewrites():
    """A real model whose last stage dilates 5x5 depthwise convolutions by 4 (EfficientNet-Lite0 at OS8: padding
    8), through BN folding, channels_last and both families' rewrites (fp32, so the outputs compare to 1e-4)."""
    from sceneparse.deploy.optimize import rewrite_counts

    torch.manual_seed(0)
    ref = _randomise_bn(build_model("pspnet", "efficientnet_lite0", 5, output_stride=8, pretrained=None,
                                    aux_head=False)).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        want = ref(x)["out"]
    for flags, counts in ((["avx512_bf16"], {"prepadded_dense": 0, "prepadded_depthwise": 3, "float32_depthwise": 0,
                                             "native_depthwise_bf16": 0}),  # fp32: the bf16 kernel not used
                          (["amx_bf16", "avx512_bf16"], {"prepadded_dense": 0, "prepadded_depthwise": 0,
                                                         "float32_depthwise": 0, "native_depthwise_bf16": 0})):
        fast = optimize_for_inference(copy.deepcopy(ref), cpu_flags=flags)
        assert rewrite_counts(fast) == counts
        with torch.no_grad():
            got = fast(x.contiguous(memory_format=torch.channels_last))["out"]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * max(1.0, want.abs().max().item()))
    amx_bf16 = optimize_for_inference(copy.deepcopy(ref), dtype=torch.bfloat16, cpu_flags=["amx_bf16", "avx512_bf16"])
    assert rewrite_counts(amx_bf16)["float32_depthwise"] > 3  # every dilated depthwise layer, AMX's bf16 rule
