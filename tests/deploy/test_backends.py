"""Inference backends (torch / OpenVINO / ONNX Runtime), int8 quantization, runtime comparison, the fused
upsample + argmax and the end-to-end predict latency breakdown."""
import json

import pytest
import torch
import torch.nn.functional as F

from sceneparse import build_model
from sceneparse.inference.engine import (InferenceConfig, infer_probs, predict_labels, upsample_argmax, upsample_argmax_planes)


def _small(upsample=True):
    torch.manual_seed(0)
    m = build_model("pspnet", "resnet18", 5, output_stride=8, aux_head=False, head_channels=16).eval()
    for mod in m.modules():  # non-trivial BN statistics, as trained weights have
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    m.set_eval_logit_upsampling(upsample)
    return m


def _native_or_skip():
    import os

    from sceneparse.kernels import native
    if native._compiler() is None or os.environ.get("SCENEPARSE_NATIVE") == "0":
        pytest.skip("no C compiler (or SCENEPARSE_NATIVE=0): the engine uses the planes path")
    assert native.load() is not None, native.error()  # a compiler is there: the kernel must build
    return native


IMPLS = ["native", "planes"]


def _impl(name):
    if name == "planes":
        return upsample_argmax_planes
    native = _native_or_skip()
    return lambda logits, size: native.upsample_argmax(logits, size)


def _assert_same_labels(got, logits, size, exact):
    """``got`` equals the full-resolution argmax; the native kernel may differ only where the reference's
    two best upsampled scores are within rounding (1e-6 relative) of each other."""
    up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    ref = up.argmax(1)
    assert got.shape == ref.shape and got.dtype == torch.int64
    if exact:
        assert torch.equal(got, ref)
        return
    diff = got != ref
    top2 = up.topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1]).abs()
    assert bool((gap[diff] <= 1e-6 * top2[:, 0].abs().clamp_min(1)[diff]).all()), int(diff.sum())
    assert int(diff.sum()) <= max(2, ref.numel() // 10000)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n,k,h,w,size", [(1, 11, 23, 30, (360, 480)), (2, 3, 5, 7, (41, 13)), (1, 300, 4, 4, (9, 33)),
                                          (1, 4, 8, 8, (8, 8)), (1, 5, 1, 1, (6, 7)), (1, 3, 40, 40, (20, 20))])
def test_upsample_argmax_equals_full_upsampling(impl, n, k, h, w, size):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(n, k, h, w, generator=g)
    logits[:, 1] = logits[:, 0]  # exact ties: the lower class id wins, as argmax
    _assert_same_labels(_impl(impl)(logits, size), logits, size, exact=impl == "planes")


@pytest.mark.parametrize("impl", IMPLS)
def test_upsample_argmax_sweep_of_shapes_ties_and_flat_regions(impl):
    f = _impl(impl)
    for seed in range(24):
        g = torch.Generator().manual_seed(seed)
        n, k = 1 + seed % 2, [2, 3, 11, 19, 150][seed % 5]
        h, w = 3 + seed % 17, 4 + (seed * 7) % 23
        size = (h * (1 + seed % 9) + seed % 5, w * (1 + seed % 8) + seed % 3)
        logits = torch.randn(n, k, h, w, generator=g) * (1 + seed)
        if seed % 3 == 0:
            logits[:, 1] = logits[:, 0]
        if seed % 4 == 0:  # near-ties everywhere
            logits = torch.randn(n, k, 1, 1, generator=g).expand(n, k, h, w) + 1e-6 * torch.randn(n, k, h, w, generator=g)
        _assert_same_labels(f(logits, size), logits, size, exact=impl == "planes")


@pytest.mark.parametrize("h,w", [(23, 30), (45, 60)])  # CamVid 360x480 at output stride 16 and 8
def test_native_upsample_argmax_is_exact_at_the_shipped_models_shapes(h, w):
    """PyTorch's arithmetic exactly: no label differs, even on integer-valued logits full of exact ties."""
    native = _native_or_skip()
    g = torch.Generator().manual_seed(3)
    for logits in (torch.randn(2, 11, h, w, generator=g) * 5, torch.randint(0, 3, (1, 11, h, w), generator=g).float()):
        up = F.interpolate(logits, size=(360, 480), mode="bilinear", align_corners=False)
        assert torch.equal(native.upsample_argmax(logits, (360, 480)), up.argmax(1))
    assert native.upsample_argmax(torch.randn(1, 11, h, w), (0, 480)).shape == (1, 0, 480)  # empty, no crash


def test_native_upsample_argmax_threaded_path_and_a_half_precision_default_dtype():
    """Above ~8 M scores the rows are split over threads; torch's default dtype never sizes the C buffers."""
    native = _native_or_skip()
    threads, default = torch.get_num_threads(), torch.get_default_dtype()
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 19, 64, 64, generator=g) * 3  # 2 x 19 x 512 x 512 = 10 M scores: threaded
    try:
        torch.set_num_threads(2)
        torch.set_default_dtype(torch.bfloat16)
        got = native.upsample_argmax(logits, (512, 512))
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(default)
    _assert_same_labels(got, logits, (512, 512), exact=False)


def test_upsample_argmax_falls_back_when_the_kernel_cannot_be_built(monkeypatch, tmp_path):
    from sceneparse.kernels import native
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setenv("SCENEPARSE_CACHE", str(tmp_path))
    logits = torch.randn(1, 4, 6, 8)
    assert native.upsample_argmax(logits, (24, 32)) is None and "no C compiler" in native.error()
    _assert_same_labels(upsample_argmax(logits, (24, 32)), logits, (24, 32), exact=True)


def test_upsample_argmax_falls_back_without_the_native_kernel(monkeypatch):
    from sceneparse.kernels import native
    monkeypatch.setenv("SCENEPARSE_NATIVE", "0")
    logits = torch.randn(1, 4, 6, 8)
    assert native.upsample_argmax(logits, (24, 32)) is None
    _assert_same_labels(upsample_argmax(logits, (24, 32)), logits, (24, 32), exact=True)


def test_native_kernel_builds_into_the_cache_folder_only(monkeypatch, tmp_path):
    native = _native_or_skip()
    monkeypatch.setenv("SCENEPARSE_CACHE", str(tmp_path))
    lib = native._build()
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].endswith(".so"), built  # no temporary file left behind
    assert lib.sp_vargmax is not None
    native._build()  # cached: nothing rebuilt or added
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == built


def test_native_kernel_never_loads_from_a_folder_others_can_write(monkeypatch, tmp_path):
    native = _native_or_skip()
    shared = tmp_path / "shared"
    (shared / "kernels").mkdir(parents=True)
    (shared / "kernels").chmod(0o777)  # e.g. a cache folder in /tmp: anyone could plant a library there
    monkeypatch.setenv("SCENEPARSE_CACHE", str(shared))
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    lib = native._build()
    assert list((shared / "kernels").iterdir()) == []  # built elsewhere, privately
    assert lib.sp_vargmax is not None and not str(lib._name).startswith(str(shared))
    assert list((tmp_path / "tmp").iterdir()) == []  # and that folder is removed once the library is loaded
    assert lib.sp_vargmax is not None  # still callable from memory


@pytest.mark.parametrize("impl", IMPLS)
def test_upsample_argmax_upsamples_bf16_logits_in_float32(impl):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(1, 11, 23, 30, generator=g) * 4).bfloat16()
    _assert_same_labels(_impl(impl)(logits, (360, 480)), logits, (360, 480), exact=impl == "planes")


def test_openvino_backend_labels_go_through_the_engines_upsample_argmax():
    pytest.importorskip("openvino")
    from sceneparse.deploy.backends import OpenVINOModel

    q = OpenVINOModel(_small(False), "fp32")
    x = torch.randn(1, 3, 67, 91, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        logits = q(x)["out"]
    assert logits.shape[-2:] == (9, 12)  # the runtime's graph stops at the decode head
    labels = predict_labels(q, x, InferenceConfig(channels_last=False))
    assert torch.equal(labels, upsample_argmax(logits, (67, 91)))
    _assert_same_labels(labels, logits, (67, 91), exact=False)
    q.set_precision("bf16")
    assert q.config["INFERENCE_PRECISION_HINT"] == "bf16" and not q._compiled
    assert (predict_labels(q, x, InferenceConfig(channels_last=False)) == labels).float().mean() > 0.98


def test_low_resolution_logits_give_the_same_labels_and_probabilities():
    full, low = _small(True), _small(False)
    x = torch.randn(1, 3, 67, 91)
    with torch.inference_mode():
        assert low(x)["out"].shape[-2:] == (9, 12) and full(x)["out"].shape[-2:] == (67, 91)
    whole = InferenceConfig()
    assert torch.equal(predict_labels(low, x, whole), predict_labels(full, x, whole))
    assert torch.equal(predict_labels(low, x, whole), infer_probs(full, x, whole).argmax(1))
    for cfg in (InferenceConfig(scales=(0.75, 1.0), flip=True),
                InferenceConfig(mode="slide", crop_size=(48, 48), stride=(32, 32))):
        torch.testing.assert_close(infer_probs(low, x, cfg), infer_probs(full, x, cfg), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_every_engine_mode_runs_on_every_backend(backend):
    pytest.importorskip(backend)
    if backend == "onnxruntime":
        pytest.importorskip("onnxscript")
    from sceneparse.deploy.backends import RuntimeModel, prepare_model

    ref_model = _small(True)
    runtime = prepare_model(_small(True), backend)
    assert isinstance(runtime, RuntimeModel) and runtime.output_stride == 8
    x = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():  # the runtime's graph stops at the decode head; the engine upsamples
        low = _small(False)(x)["out"].shape[-2:]
        assert runtime(x)["out"].shape[-2:] == low and low[-1] < x.shape[-1]
    for cfg in (InferenceConfig(), InferenceConfig(scales=(0.75, 1.25), flip=True),
                InferenceConfig(mode="slide", crop_size=(64, 64), stride=(40, 40))):
        p_ref, p_rt = infer_probs(ref_model, x, cfg), infer_probs(runtime, x, cfg)
        torch.testing.assert_close(p_rt, p_ref, rtol=0, atol=1e-4)
        agree = (predict_labels(runtime, x, cfg) == p_ref.argmax(1)).float().mean().item()
        assert agree > 0.999, (cfg, agree)


@pytest.mark.parametrize("backend", ["openvino", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_the_pyramid_model_runs_on_every_backend_at_sizes_that_need_its_resize(backend):
    """The pyramidal output model resizes its input to a multiple of its coarsest stride (32). A runtime graph
    traced at a size that is already a multiple (the converters' 64x64 example) must keep that resize: at
    CamVid's 360x480 the unity head's levels would otherwise not line up (OpenVINO: a broadcast error)."""
    pytest.importorskip(backend)
    if backend == "onnxruntime":
        pytest.importorskip("onnxscript")
    from sceneparse.deploy.backends import prepare_model

    def pyramid():
        torch.manual_seed(0)
        return build_model("pyramid_output", "efficientnet_lite0", 3, pretrained=False, decoder_channels=16,
                           unity_channels=8, semantic_channels=16).eval()

    runtime = prepare_model(pyramid(), backend)
    for h, w in ((90, 120), (64, 96), (75, 101)):
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        ref, got = infer_probs(pyramid(), x), infer_probs(runtime, x)
        assert got.shape == ref.shape == (1, 3, h, w)
        assert (got.argmax(1) == ref.argmax(1)).float().mean() > 0.999, (h, w)


def test_bf16_openvino_backend_agrees_with_fp32():
    pytest.importorskip("openvino")
    from sceneparse.deploy.backends import prepare_model

    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    ref = infer_probs(_small(True), x)
    runtime = prepare_model(_small(True), "openvino", bf16=True)
    assert runtime.precision == "bf16" and runtime.config["INFERENCE_PRECISION_HINT"] == "bf16"
    got = infer_probs(runtime, x)
    compiled = next(iter(runtime._compiled.values())).get_compiled_model()
    from sceneparse.utils.sysinfo import cpu_flags

    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if {"avx512_bf16", "amx_bf16"} & set(cpu_flags()):  # the hint really took (a CPU without bf16 runs f32)
        assert "bfloat16" in hint or "bf16" in hint, hint
    assert (got.argmax(1) == ref.argmax(1)).float().mean() > 0.97
    assert (got - ref).abs().max() < 0.2


def test_backend_errors_are_one_clear_line():
    from sceneparse.deploy.backends import prepare_model

    with pytest.raises(ValueError, match="backend must be one of"):
        prepare_model(_small(), "tensorrt")
    with pytest.raises(ValueError, match="no bf16"):
        prepare_model(_small(), "onnxruntime", bf16=True)
    with pytest.raises(ValueError, match="--compile applies to the torch backend"):
        prepare_model(_small(), "openvino", compile=True)


def test_quantize_to_int8_ir_then_evaluate_and_predict(tiny_run, tmp_path, camvid_root, capsys):
    pytest.importorskip("nncf")
    from sceneparse.cli import main
    from sceneparse.checkpoint import load_ir_checkpoint

    ckpt = tiny_run / "final.pt"
    ir = tmp_path / "int8.xml"
    assert main(["quantize", "--checkpoint", str(ckpt), "--out", str(ir), "--num-images", "3", "--no-progress",
                 f"data.root={camvid_root}"]) == 0
    assert ir.is_file() and ir.with_suffix(".bin").is_file()
    info = load_ir_checkpoint(ir)
    assert info["quantization"]["calibration"] == {"split": "train", "num_images": 3, "seed": 0, "dataset": "camvid"}
    assert info["meta"]["classes"][0] == "Sky" and info["config"]["model"]["arch"] == "pspnet"
    assert info["logits"].startswith("decode-head resolution")  # what a direct OpenVINO user gets, recorded
    ir_text = ir.read_text()
    assert "FakeQuantize" in ir_text or "FakeConvert" in ir_text or "i8" in ir_text  # int8 layers present
    # the int8 model as --checkpoint: scores and labels close to the float model's on the same images
    out_q, out_f = tmp_path / "q.json", tmp_path / "f.json"
    assert main(["evaluate", "--checkpoint", str(ir), "--out", str(out_q), "--no-progress",
                 "data.max_val_samples=2", f"data.root={camvid_root}"]) == 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(out_f), "--no-progress",
                 "data.max_val_samples=2", f"data.root={camvid_root}"]) == 0
    q, f = json.loads(out_q.read_text()), json.loads(out_f.read_text())
    assert q["inference"]["backend"] == "openvino" and q["inference"]["int8"] and not f["inference"]["int8"]
    assert abs(q["aAcc"] - f["aAcc"]) < 2.0, (q["aAcc"], f["aAcc"])
    image = sorted((camvid_root / "val").glob("*.png"))[0]
    assert main(["predict", str(image), "--checkpoint", str(ir), "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    assert (tmp_path / "pred" / f"{image.stem}.png").is_file()
    # never over its input; an IR cannot be quantized again
    with pytest.raises(ValueError, match="already an OpenVINO IR"):
        from sceneparse.deploy.quantize import run_quantize
        run_quantize(ir, tmp_path / "again.xml")
    capsys.readouterr()
    # an IR holds no PyTorch weights: export and pack say so in one line (no 200-line export traceback)
    for argv in (["export", "--checkpoint", str(ir), "--out", str(tmp_path / "m.onnx")],
                 ["pack", str(ir), str(tmp_path / "p.pt")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "OpenVINO IR" in err and "PyTorch" in err
        assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p.pt").exists()
    # an existing IR is not replaced without --force (neither its .xml nor its .bin)
    xml_before, bin_before = ir.read_bytes(), ir.with_suffix(".bin").read_bytes()
    assert main(["quantize", "--checkpoint", str(ckpt), "--out", str(ir), "--num-images", "1", "--no-progress",
                 f"data.root={camvid_root}"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert ir.read_bytes() == xml_before and ir.with_suffix(".bin").read_bytes() == bin_before
    # a truncated weights file: named, with its size, without OpenVINO's C++ source lines
    broken = tmp_path / "broken.xml"
    broken.write_bytes(xml_before)
    broken.with_suffix(".bin").write_bytes(bin_before[: len(bin_before) // 3])
    assert main(["evaluate", "--checkpoint", str(broken), "--no-progress", f"data.root={camvid_root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.bin" in err and ".cpp" not in err, err


def test_a_bad_ir_file_is_one_line_error(tmp_path, capsys):
    pytest.importorskip("openvino")
    from sceneparse.cli import main

    bad = tmp_path / "model.xml"
    bad.write_text("<net>not a model")
    assert main(["evaluate", "--checkpoint", str(bad), "--no-progress"]) == 2  # no .bin: named
    assert "model.bin" in capsys.readouterr().err
    bad.with_suffix(".bin").write_bytes(b"")
    assert main(["evaluate", "--checkpoint", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(bad) in err and len(err.splitlines()) == 1 and "is empty" in err
    bad.with_suffix(".bin").write_bytes(b"\0" * 64)
    assert main(["evaluate", "--checkpoint", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and len(err.splitlines()) == 1 and ".cpp" not in err, err


def test_an_ir_of_another_tool_or_with_odd_metadata_is_refused_in_one_line(tmp_path):
    ov = pytest.importorskip("openvino")
    from sceneparse.checkpoint import IR_META_KEY, CheckpointError, load_ir_checkpoint, read_ir_info

    m = _small(upsample=False)
    ov_model = ov.convert_model(m, example_input=torch.zeros(1, 3, 32, 32))
    assert read_ir_info(ov_model) is None  # no sceneparse rt_info
    plain = tmp_path / "plain.xml"
    ov.save_model(ov_model, str(plain))
    with pytest.raises(CheckpointError, match="without sceneparse metadata"):
        load_ir_checkpoint(plain)
    for text, expected in (('[1, 2]', None), ('not json', None), ('{"input_geometry": {}}', {"input_geometry": {}})):
        ov_model.set_rt_info(text, [IR_META_KEY])
        assert read_ir_info(ov_model) == expected
    odd = tmp_path / "odd.xml"
    ov.save_model(ov_model, str(odd))  # a dict, but no config / classes
    with pytest.raises(CheckpointError, match="no config / meta.classes"):
        load_ir_checkpoint(odd)


def test_compare_with_runtime_reports_ratio_and_agreement():
    pytest.importorskip("openvino")
    from sceneparse.benchmark.compare import compare_with_runtime

    r = compare_with_runtime("openvino", _small(True), "tiny pspnet", (64, 64), repeats=2, warmup=1, compile=False)
    assert r["runtime"] == "openvino" and r["precision"] == "fp32" and r["ours_best"] == "ours_eager"
    assert set(r["images_per_s"]) == {"openvino", "ours_eager"}
    assert r["ratio_ours_over_runtime"] == pytest.approx(r["latency_s_median"]["openvino"] /
                                                         r["latency_s_median"]["ours_eager"])
    assert r["max_abs_diff_vs_fp32_torch"]["openvino"] < 1e-3 and r["argmax_agreement_ours_vs_runtime"] > 0.999
    assert r["cpu"] and r["threads"] == torch.get_num_threads() and r["settle"] == 1
    assert set(r["settings"]["ours_eager"]["layer_rewrites"]) == {"prepadded_dense", "prepadded_depthwise",
                                                                  "float32_depthwise", "native_depthwise_bf16"}
    # labels: also our engine with the OpenVINO backend (what predict --backend openvino runs), apart from "ours"
    r = compare_with_runtime("openvino", _small(True), "tiny pspnet", (64, 64), repeats=2, warmup=1, compile=False,
                             output="labels", settle=0)
    assert set(r["images_per_s"]) == {"openvino", "ours_eager", "engine_openvino_backend"}
    assert r["ours_best"] == "ours_eager" and r["settle"] == 0
    assert r["ratio_engine_openvino_backend_over_runtime"] == pytest.approx(
        r["latency_s_median"]["openvino"] / r["latency_s_median"]["engine_openvino_backend"])
    assert r["argmax_agreement_vs_fp32_torch"]["engine_openvino_backend"] > 0.999
    with pytest.raises(ValueError, match="no bf16"):
        compare_with_runtime("onnxruntime", _small(True), "x", (64, 64), bf16=True, repeats=1)


def test_end_to_end_latency_breakdown_of_predict(camvid_root, tmp_path, capsys):
    from sceneparse.cli import main

    image = camvid_root / "val" / sorted(p.name for p in (camvid_root / "val").glob("*.png"))[0]
    out = tmp_path / "e2e.json"
    # the PSPNet model by name (OS16 logits, upsampled by the engine), whichever model is the default
    assert main(["benchmark", "--end-to-end", str(image), "--checkpoint", "camvid_pspnet_effl0", "--repeats", "2",
                 "--warmup", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    stages = ["decode", "normalise", "network", "upsample_argmax", "palette_encode", "write"]
    assert list(r["stages_s_median"]) == stages and all(v > 0 for v in r["stages_s_median"].values())
    assert r["total_s_median"] == pytest.approx(sum(r["stages_s_median"].values()))
    assert r["image"] == [360, 480] and r["logits"] == [11, 23, 30]  # low-resolution logits (OS16)
    assert r["labels_equal"] is True and r["cpu"] and r["backend"] == "torch"
    assert "upsample_argmax" in capsys.readouterr().out


def test_prepared_model_labels_equal_the_unprepared_full_resolution_path(camvid_root):
    """The PSPNet model on a real image: fused low-resolution path == full-resolution logits + softmax + argmax."""
    from sceneparse.data.base import read_image
    from sceneparse.deploy.backends import prepare_model
    from sceneparse.models.factory import model_from_checkpoint
    from sceneparse.hub import resolve_weights
    from sceneparse.data.transforms import normalize_image as normalise

    model, ckpt = model_from_checkpoint(resolve_weights("camvid_pspnet_effl0"))  # OS16 logits, whatever the default
    image = read_image(sorted((camvid_root / "val").glob("*.png"))[3])
    x = normalise(image, ckpt["meta"]["mean"], ckpt["meta"]["std"])[None]
    ref = infer_probs(model, x).argmax(1)  # eval logits upsampled inside the model, softmax, argmax
    fast = prepare_model(model, "torch", fold_bn=False)
    with torch.inference_mode():
        assert fast(x)["out"].shape[-2:] == (23, 30)
    assert torch.equal(predict_labels(fast, x), ref)


def test_ir_files_refuse_what_they_cannot_do_in_one_line(tiny_run, tmp_path, camvid_root):
    pytest.importorskip("nncf")
    from sceneparse.deploy.backends import prepare_model
    from sceneparse.inference.pipeline import load_model
    from sceneparse.deploy.quantize import run_quantize

    ckpt = tiny_run / "final.pt"
    # the .bin beside --out must not be an input either
    victim = tmp_path / "weights.bin"
    victim.write_bytes(b"user data")
    with pytest.raises(ValueError, match="refusing to write over it"):
        run_quantize(victim, tmp_path / "weights.xml")
    assert victim.read_bytes() == b"user data"
    ir = tmp_path / "q.xml"
    run_quantize(ckpt, ir, overrides=[f"data.root={camvid_root}"], num_images=2)
    model, _ = load_model(ir)
    # the IR carries the input-size rule: the engine sizes its inputs as for the PyTorch model
    torch_model, _ = load_model(ckpt)
    assert model.input_geometry == {"crop_size": [96, 128], "output_stride": torch_model.output_stride}
    assert model.input_size_for(120, 150) == torch_model.input_size_for(120, 150) == (128, 144)
    from sceneparse.deploy.backends import OpenVINOModel
    from sceneparse.models.segmentor import training_geometry

    assert OpenVINOModel(ir).input_geometry == model.input_geometry  # the path alone: read from the IR
    assert OpenVINOModel(torch_model).input_geometry == training_geometry(torch_model)  # a module: its own
    with pytest.raises(ValueError, match="--compile applies to the torch backend"):
        prepare_model(model, compile=True)
    with pytest.raises(ValueError, match="--backend onnxruntime cannot run it"):
        prepare_model(model, "onnxruntime")
    assert prepare_model(model, bf16=True).config["INFERENCE_PRECISION_HINT"] == "bf16"
    from sceneparse.checkpoint import CheckpointError
    from sceneparse.models.factory import model_from_checkpoint

    with pytest.raises(CheckpointError, match="is an OpenVINO IR"):  # a graph has no PyTorch weights to build from
        model_from_checkpoint(ir)
    ir.with_suffix(".bin").unlink()
    with pytest.raises(FileNotFoundError, match="q.bin"):
        load_model(ir)


def test_export_of_a_prepared_model_still_gives_full_resolution_labels(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sceneparse.deploy.export import export_onnx, onnx_parity

    low = _small(False)  # as prepare_model leaves it: eval logits at the decode head's resolution
    path = export_onnx(low, tmp_path / "m.onnx", (64, 80), input_format="float", outputs="both")
    r = onnx_parity(path, _small(True), [(64, 80)])
    assert r["per_size"]["64x80"] < 1e-3 and r["argmax_agreement"] > 0.999
