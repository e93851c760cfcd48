"""The training fast path (train.fast): native BN+act, depthwise and upsampling+CE kernels against the PyTorch
operators they replace (values and gradients), the model patching, and the trainer / benchmark around them."""
import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sceneparse.training import fast_train
from sceneparse.kernels import native, train_ops

from ..conftest import REPO, TINY

CL = torch.channels_last


@pytest.fixture(scope="module", autouse=True)
def kernels():
    if native._compiler() is None:
        pytest.skip("no C compiler: the fast path falls back (tested below with SCENEPARSE_NATIVE=0)")
    assert train_ops.load() is not None, train_ops.error()  # a compiler is there: the kernels must build


def _leaf(t):
    return t.detach().clone().requires_grad_()


@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
@pytest.mark.parametrize("shape", [(4, 40, 9, 11), (2, 130, 5, 3), (3, 16, 1, 2)])
def test_batch_norm_act_matches_pytorch_values_gradients_and_running_stats(act, shape):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=g) * 3 + 2).contiguous(memory_format=CL)  # mean far from 0: cancellation
    w, b = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    dy = torch.randn(shape, generator=g).contiguous(memory_format=CL)
    ours = [_leaf(t) for t in (x, w, b)]
    ref = [_leaf(t) for t in (x, w, b)]
    rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
    rm2, rv2 = rm.clone(), rv.clone()
    y = train_ops.batch_norm_act(*ours, rm, rv, 0.1, 1e-3, act)
    r = F.batch_norm(ref[0], rm2, rv2, ref[1], ref[2], True, 0.1, 1e-3)
    r = {"none": r, "relu": F.relu(r), "relu6": F.relu6(r)}[act]
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm, rm2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rv, rv2, rtol=1e-5, atol=1e-6)  # unbiased variance, as F.batch_norm
    y.backward(dy)
    r.backward(dy)
    for a, e in zip(ours, ref):
        torch.testing.assert_close(a.grad, e.grad, rtol=1e-4, atol=1e-4 * e.grad.abs().max().item())


def test_batch_norm_act_does_not_apply_to_what_it_cannot_compute():
    x = torch.randn(2, 8, 4, 4)  # contiguous (not channels_last)
    assert train_ops.batch_norm_act(x, None, None, None, None, 0.1, 1e-5) is None
    assert train_ops.batch_norm_act(x.contiguous(memory_format=CL).double(), None, None, None, None, 0.1, 1e-5) is None
    assert train_ops.batch_norm_act(torch.randn(1, 8, 1, 1), None, None, None, None, 0.1, 1e-5) is None  # one value
    assert train_ops.batch_norm_act(x.contiguous(memory_format=CL), None, None, None, None, 0.1, 1e-5, "gelu") is None


@pytest.mark.parametrize("cfg", [(40, 9, 11, 3, 1, 1, 1), (40, 9, 11, 5, 1, 4, 2), (70, 12, 13, 3, 2, 1, 1),
                                 (16, 10, 10, 5, 2, 2, 1), (33, 7, 9, 3, 1, 0, 1), (144, 6, 8, 5, 1, 2, 1),
                                 # channels a multiple of 16, square 3x3 / 5x5: the register-blocked kernels
                                 (32, 12, 14, 3, 1, 1, 1), (48, 13, 15, 3, 1, 2, 2), (64, 11, 12, 3, 2, 1, 1),
                                 (32, 16, 19, 5, 1, 4, 2),
                                 # rates 3 / 4 at stride 1 (the last stage of EfficientNet-Lite at OS8): rows
                                 # whose taps all read inside and rows that read padding
                                 (32, 13, 10, 5, 1, 8, 4), (16, 11, 9, 3, 1, 3, 3), (20, 14, 12, 3, 1, 4, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_conv_matches_pytorch_values_and_gradients(cfg, bias):
    c, h, w, k, s, p, d = cfg
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, c, h, w, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(c, 1, k, k, generator=g)
    bs = torch.randn(c, generator=g) if bias else None
    ours = [_leaf(t) for t in (x, wt)] + ([_leaf(bs)] if bias else [None])
    ref = [_leaf(t) for t in (x, wt)] + ([_leaf(bs)] if bias else [None])
    y = train_ops.depthwise_conv2d(ours[0], ours[1], ours[2], (s, s), (p, p), (d, d))
    r = F.conv2d(ref[0], ref[1], ref[2], s, p, d, c)
    assert y.shape == r.shape and y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    dy = torch.randn(r.shape, generator=g)
    y.backward(dy)
    r.backward(dy)
    for a, e in zip(ours, ref):
        if e is not None:
            torch.testing.assert_close(a.grad, e.grad, rtol=1e-4, atol=1e-4 * e.grad.abs().max().item())


@pytest.mark.parametrize("sizes", [((23, 30), (360, 480)), ((5, 7), (17, 31)), ((8, 8), (8, 8))])
def test_upsample_cross_entropy_matches_interpolate_then_cross_entropy(sizes):
    (h, w), (H, W) = sizes
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 11, h, w, generator=g) * 3).contiguous(memory_format=CL)
    target = torch.randint(0, 11, (3, H, W), generator=g)
    target[0, : H // 3] = 255
    target[2] = 255  # an image with no labelled pixel
    a, b = _leaf(logits), _leaf(logits)
    loss = train_ops.upsample_cross_entropy(a, target)
    ref = F.cross_entropy(F.interpolate(b, (H, W), mode="bilinear", align_corners=False), target, ignore_index=255)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    (2.0 * loss).backward()
    (2.0 * ref).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * b.grad.abs().max().item())


def test_upsample_cross_entropy_with_an_ignore_index_that_is_a_class_id():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(1, 3, 3, 3, generator=g)
    target = torch.randint(0, 3, (1, 6, 6), generator=g)
    a, b = _leaf(logits), _leaf(logits)
    loss = train_ops.upsample_cross_entropy(a, target, ignore_index=1)
    ref = F.cross_entropy(F.interpolate(b, (6, 6), mode="bilinear", align_corners=False), target, ignore_index=1)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)  # ignored pixels add no one-hot term


def test_bf16_kernels_keep_nan_a_nan():
    x = torch.randn(2, 16, 5, 5).bfloat16().contiguous(memory_format=CL)
    x[0, 3, 2, 2] = float("nan")
    y = train_ops.depthwise_conv2d(x, torch.ones(16, 1, 3, 3), None, (1, 1), (1, 1), (1, 1))
    assert torch.isnan(y[0, 3, 1:4, 1:4]).all() and torch.isfinite(y[:, :3]).all()


def test_bf16_activations_only_for_models_whose_layers_take_them():
    model = _pspnet()
    assert fast_train._takes_bf16_activations(model)
    model.decode_head.extra = nn.Linear(4, 4)  # would meet a bf16 input with float32 weights
    assert not fast_train._takes_bf16_activations(model)
    plan = fast_train.enable(model.train(), __import__("sceneparse.training.losses", fromlist=["SegLoss"]).SegLoss(),
                             torch.device("cpu"), bf16=True)
    assert plan.bf16_convs and not plan.bf16_activations


def test_upsample_cross_entropy_edge_cases():
    logits = torch.randn(1, 4, 3, 3, requires_grad=True)
    loss = train_ops.upsample_cross_entropy(logits, torch.full((1, 12, 12), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max().item() == 0.0  # nothing labelled: 0, as SegLoss
    with pytest.raises(ValueError, match="class 7"):
        train_ops.upsample_cross_entropy(logits, torch.full((1, 12, 12), 7))
    bad = torch.randn(1, 4, 3, 3)
    bad[0, 1, 1, 1] = float("nan")
    assert train_ops.upsample_cross_entropy(bad, torch.zeros(1, 12, 12, dtype=torch.int64)) is None  # PyTorch's NaN


def test_segloss_fused_upsampling_gives_the_same_loss_and_gradient():
    from sceneparse.training.losses import SegLoss

    g = torch.Generator().manual_seed(4)
    out, aux = torch.randn(2, 5, 6, 8, generator=g), torch.randn(2, 5, 6, 8, generator=g)
    target = torch.randint(0, 5, (2, 48, 64), generator=g)
    plain, fused = SegLoss(), SegLoss()
    assert fused.supports_fused_upsample() and not SegLoss(ohem_thresh=0.7).supports_fused_upsample()
    fused.fused_upsample = True
    a = {"out": _leaf(out), "aux": _leaf(aux)}
    b = {"out": _leaf(out), "aux": _leaf(aux)}
    (ta, pa), (tb, pb) = fused(a, target), plain(b, target)
    torch.testing.assert_close(ta, tb)
    torch.testing.assert_close(pa["loss_aux"], pb["loss_aux"])
    ta.backward()
    tb.backward()
    for k in a:
        torch.testing.assert_close(a[k].grad, b[k].grad, rtol=1e-4, atol=1e-7)


def _pspnet():
    from sceneparse import build_model

    torch.manual_seed(0)
    return build_model("pspnet", "efficientnet_lite0", 11, 16, pretrained=None, head_channels=32,
                       aux_channels=16).to(memory_format=CL)


def test_patched_model_trains_like_the_original_and_keeps_its_state_dict():
    ref = _pspnet().train()
    fast = copy.deepcopy(ref)
    counts = fast_train.patch_model(fast)
    assert counts["batch_norm_act"] > 0 and counts["depthwise_conv"] > 0 and counts["batch_norm"] > 0
    assert fast_train.patch_model(fast) == {k: 0 for k in counts}  # idempotent
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=CL)
    y = torch.randint(0, 11, (2, 64, 96))
    for m in (ref, fast):
        torch.manual_seed(1)  # the same dropout masks
        out = m(x)
        (F.cross_entropy(out["out"], y) + 0.4 * F.cross_entropy(out["aux"], y)).backward()
    twice = []
    for m in (fast, ref):
        torch.manual_seed(2)
        twice.append(m(x)["out"])
    torch.testing.assert_close(*twice, rtol=1e-3, atol=1e-3)
    # per-op values are checked tightly above; through ~50 BN+ReLU6 layers on 4x6 feature maps a rounding-level
    # flip of one ReLU6 mask element moves a channel's statistics by 1/48, so whole-model gradients agree in
    # direction (cosine), not to float rounding
    for (n, p), q in zip(ref.named_parameters(), fast.parameters()):
        if p.grad.abs().max() > 1e-6:
            cos = F.cosine_similarity(q.grad.flatten(), p.grad.flatten(), dim=0).item()
            assert cos > 0.99, (n, cos)
    for (n, a), b in zip(ref.named_buffers(), fast.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")
    ref.eval(), fast.eval()
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():  # eval mode: the original modules' forward, bit for bit
        assert torch.equal(fast(x)["out"], ref(x)["out"])
    twin = copy.deepcopy(fast)  # the EMA copies the model
    fast_train.unpatch_model(twin)
    assert all(not hasattr(type(m), "_sp_original") for m in twin.modules())


def test_bf16_convolutions_only_for_dense_layers_above_the_intensity_threshold():
    model = _pspnet().train()
    counts = fast_train.patch_model(model, bf16_convs=True)
    assert counts["bf16_conv"] > 0
    for m in model.modules():
        if isinstance(m, fast_train._Bf16Conv):
            assert m.groups == 1 and fast_train.conv_intensity(m) >= fast_train.BF16_MIN_INTENSITY
    conv = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=CL)
    fast_train.patch_model(conv, bf16_convs=True)
    x = torch.randn(2, 64, 8, 8, requires_grad=True).contiguous(memory_format=CL)
    y = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = nn.Conv2d.forward(conv, x)
    assert y.dtype == torch.float32 and torch.equal(y, r.float())  # what autocast computes for this layer
    with torch.no_grad():
        assert conv(x).dtype == torch.float32 and not torch.equal(conv(x), y)  # eval: fp32


def test_precision_choice():
    cpu = torch.device("cpu")
    assert fast_train.choose_precision(cpu, "bf16", False) == "bf16"  # asked for
    assert fast_train.choose_precision(cpu, False, "auto") == "fp32"
    assert fast_train.choose_precision(cpu, True, False) == "fp32"  # no fast path: today's default
    assert fast_train.choose_precision(torch.device("meta"), True, "auto") == "fp32"


@pytest.mark.parametrize("flags, expect", [({"amx_bf16", "amx_tile", "avx512_bf16"}, "bf16"),  # Intel Xeon (AMX)
                                           ({"avx512_bf16", "avx512f"}, "bf16"),  # AMD EPYC Zen 4
                                           ({"avx2", "avx512f"}, "fp32")])  # neither: bf16 would be emulated
def test_precision_follows_the_cpu_family(monkeypatch, flags, expect):
    monkeypatch.setattr(fast_train, "_cpu_flags", lambda: frozenset(flags))
    assert fast_train.choose_precision(torch.device("cpu"), True, "auto") == expect
    assert fast_train.choose_precision(torch.device("cpu"), False, "auto") == "fp32"  # train.amp=false wins


def _tiny_cfg(camvid_root, work, *extra):
    from sceneparse.config import load_config

    return load_config(REPO / "configs/camvid/pspnet_effl0.yaml",
                       TINY + [f"data.root={camvid_root}", f"work_dir={work}", "train.iters=3", *extra])


def test_fast_and_reference_training_give_the_same_losses(tmp_path, camvid_root, caplog):
    from sceneparse.training.trainer import train

    logs = {}
    for fast in (True, False):
        with caplog.at_level("INFO"):
            train(_tiny_cfg(camvid_root, tmp_path / str(fast), f"train.fast={str(fast).lower()}", "train.amp=false"),
                  progress=False)
        rows = (tmp_path / str(fast) / "log.csv").read_text().splitlines()[1:]
        logs[fast] = [float(r.split(",")[3]) for r in rows if r.split(",")[3]]
    assert "train.fast: native BN+act / depthwise kernels; upsampling fused with the CE" in caplog.text
    assert len(logs[True]) == 3
    assert abs(logs[True][0] - logs[False][0]) < 1e-4  # the same weights and batch: the same loss
    # later steps drift apart by float rounding amplified through BN on 6x8 feature maps (see above)
    torch.testing.assert_close(torch.tensor(logs[True]), torch.tensor(logs[False]), rtol=2e-2, atol=0)


def test_without_native_kernels_training_falls_back(tmp_path, camvid_root, monkeypatch, caplog):
    from sceneparse.training.trainer import train

    monkeypatch.setenv("SCENEPARSE_NATIVE", "0")
    with caplog.at_level("INFO"):
        train(_tiny_cfg(camvid_root, tmp_path / "run", "train.iters=2"), progress=False)
    assert "native kernels unavailable" in caplog.text and (tmp_path / "run" / "final.pt").is_file()


def test_benchmark_train_writes_the_json(tmp_path, camvid_root, capsys, monkeypatch):
    from sceneparse.cli import main

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)  # restored after the test

    out = tmp_path / "train.json"
    args = ["benchmark", "--train", str(REPO / "configs/camvid/pspnet_effl0.yaml"), *TINY, f"data.root={camvid_root}",
            "--variants", "reference fp32", "fast fp32", "--repeats", "1", "--warmup", "0",
            "--no-own-process-reference", "--out", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    for key in ("images_per_s", "precision", "cpu", "s_per_step", "peak_gflops", "cpu_flags", "variants"):
        assert key in r, key
    assert set(r["variants"]) == {"reference fp32", "fast fp32"} and r["trainer_path"] == f"fast {r['precision']}"
    assert r["peak_gflops"] > 0 and r["forward_gflops_per_image"] > 0 and r["variants"]["fast fp32"]["top_ops"]
    assert "fast fp32 / reference fp32" in r["speedups"] and "the trainer uses" in capsys.readouterr().out
    assert r["onednn_primitive_cache_capacity"] == "8192"  # several models' primitives in one process


def _bf16_close(got, want, what):
    """bf16 results against the float32 computation on the same (bf16-valued) inputs: within bf16 rounding."""
    assert got.dtype == torch.bfloat16, what
    scale = want.abs().max().item()
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("act", ["none", "relu6"])
def test_batch_norm_act_on_bf16_activations(act):
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(3, 48, 7, 9, generator=g) * 2 + 1).bfloat16().contiguous(memory_format=CL)
    w, b = torch.randn(48, generator=g), torch.randn(48, generator=g)
    dy = torch.randn(3, 48, 7, 9, generator=g).bfloat16().contiguous(memory_format=CL)
    xa, xr = _leaf(x), _leaf(x.float())
    wa, wr, ba, br = _leaf(w), _leaf(w), _leaf(b), _leaf(b)
    y = train_ops.batch_norm_act(xa, wa, ba, None, None, 0.1, 1e-3, act)
    r = F.batch_norm(xr, None, None, wr, br, True, 0.1, 1e-3)
    r = F.relu6(r) if act == "relu6" else r
    _bf16_close(y, r, "output")
    y.backward(dy)
    r.backward(dy.float())
    _bf16_close(xa.grad, xr.grad, "input gradient")
    torch.testing.assert_close(wa.grad, wr.grad, rtol=1e-3, atol=1e-3)  # float32 parameters, float32 sums
    torch.testing.assert_close(ba.grad, br.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("cfg", [(32, 12, 14, 3, 1, 1, 1), (48, 9, 11, 5, 1, 4, 2), (40, 9, 11, 3, 2, 1, 1)])
def test_depthwise_conv_on_bf16_activations(cfg):
    c, h, w, k, s, p, d = cfg
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, c, h, w, generator=g).bfloat16().contiguous(memory_format=CL)
    wt = torch.randn(c, 1, k, k, generator=g)
    xa, xr, wa, wr = _leaf(x), _leaf(x.float()), _leaf(wt), _leaf(wt)
    y = train_ops.depthwise_conv2d(xa, wa, None, (s, s), (p, p), (d, d))
    r = F.conv2d(xr, wr, None, s, p, d, c)
    _bf16_close(y, r, "output")
    dy = torch.randn(r.shape, generator=g).bfloat16()
    y.backward(dy)
    r.backward(dy.float())
    _bf16_close(xa.grad, xr.grad, "input gradient")
    torch.testing.assert_close(wa.grad, wr.grad, rtol=1e-4, atol=1e-4 * wr.grad.abs().max().item())


def test_bf16_activations_train_like_autocast_and_evaluate_in_float32():
    ref = _pspnet().train()
    fast = copy.deepcopy(ref)
    counts = fast_train.patch_model(fast, bf16_activations=True)
    assert counts["bf16_conv"] > 0
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=CL)
    y = torch.randint(0, 11, (2, 64, 96))
    torch.manual_seed(1)
    out = fast(x)
    assert out["out"].dtype == torch.bfloat16  # activations stay bf16 to the logits, as under autocast
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = ref(x)
    la, lr = F.cross_entropy(out["out"].float(), y), F.cross_entropy(want["out"].float(), y)
    assert abs(la.item() - lr.item()) < 2e-2 * lr.item()
    (la + 0.4 * F.cross_entropy(out["aux"].float(), y)).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in fast.parameters() if p.requires_grad)
    fast.eval(), ref.eval()
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert torch.equal(fast(x)["out"], ref(x)["out"])  # evaluation: float32, the original modules


def test_decoded_pairs_are_cached_once_and_give_the_same_samples(camvid_root, monkeypatch):
    from sceneparse.data import base, build_dataset, build_train_transform

    tf = build_train_transform((96, 128), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ds = build_dataset("camvid", camvid_root, "train", tf, seed=3)
    ds.pairs = ds.pairs[:3]
    plain = [ds[(1, i)] for i in range(3)]
    assert not ds.cache_decoded(max_bytes=1000) and not getattr(ds, "_decoded", None)  # above the limit
    assert ds.cache_decoded()

    def no_reads(*args, **kwargs):
        raise AssertionError("a cached pair was decoded again")

    monkeypatch.setattr(base, "read_image", no_reads)
    monkeypatch.setattr(base, "read_label", no_reads)
    for i, want in enumerate(plain):  # the same augmented samples, without touching the files
        got = ds[(1, i)]
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["label"], want["label"])


def test_pyramid_output_gets_bf16_activations_in_its_backbone_and_decoder_and_float32_features():
    """The pyramid head (attention, softmaxes) keeps float32 activations; its backbone and its fusion decoder
    are plain convolutions and BN, so they run bf16 activations like an encoder-decoder model (the backbone
    hands bf16 features to the decoder); the decoder's bf16 output goes straight into the two convolutions
    that read it, whose outputs are float32."""
    from sceneparse import build_model
    from sceneparse.training.losses import SegLoss

    torch.manual_seed(0)
    ref = build_model("pyramid_output", "efficientnet_lite0", 11, 32, pretrained=None, strides=[32, 16, 8, 4],
                      decoder_channels=32, unity_channels=16, semantic_channels=16).to(memory_format=CL).train()
    fast = copy.deepcopy(ref)
    plan = fast_train.enable(fast, SegLoss(), torch.device("cpu"), bf16=True)
    assert plan.bf16_backbone_activations and not plan.bf16_activations and plan.bf16_convs
    assert plan.bf16_decoder and "bf16 backbone and decoder activations" in plan.describe()
    cas = [m for m in fast.modules() if type(m).__name__ == "ContextAggregation"]
    assert cas and all(m.matmul_dtype == torch.bfloat16 for m in cas) and plan.bf16_attention
    assert fast.fused_upsample_loss and plan.fused_loss  # its own loss: the finest level's CE fused
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=CL)
    y = torch.randint(0, 11, (2, 64, 96))
    feats = fast.backbone(x)
    assert all(f.dtype == torch.bfloat16 for f in feats)  # the decoder reads them in bf16
    assert fast.decoder.reduce[0](feats[0]).dtype == torch.bfloat16  # inside the decoder too
    dec = fast.decoder(feats)
    assert dec.dtype == torch.bfloat16 and plan.bf16_decoder_out  # handed to the heads' first convolutions as is
    assert fast.semantic_head.proj[0](dec).dtype == torch.float32 and fast.unity_head.reduce(dec).dtype == torch.float32
    assert fast.backbone.conv_stem(x).dtype == torch.bfloat16  # inside, the activations are bf16
    torch.manual_seed(1)
    loss_fast = fast.loss(fast(x), y)[0]
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ref = ref.loss(ref(x), y)[0]
    assert abs(loss_fast.item() - loss_ref.item()) < 3e-2 * loss_ref.item()
    loss_fast.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.dtype == torch.float32
               for p in fast.parameters() if p.requires_grad and p.grad is not None)
    assert sum(p.grad is not None for p in fast.backbone.parameters()) > 0
    assert sum(p.grad is not None for p in fast.decoder.parameters()) > 0
    fast_train.unpatch_model(fast)
    assert not fast.decoder._forward_hooks and type(fast.backbone) is type(ref.backbone)
    assert all(m.matmul_dtype is None for m in cas) and not fast.fused_upsample_loss
    assert type(fast.decoder.fuse[0]) is nn.Conv2d


@pytest.mark.parametrize("bf16", [False, True])
def test_auxiliary_loss_reaches_the_backbone_below_its_tap_on_the_fast_path(bf16):
    """PSPNet Sec. 3.4 / Table 2 on the path that trains it: the auxiliary CE (weight 0.4) changes the
    gradients of the backbone up to the stage the auxiliary head reads (blocks.0-4, 112 channels on Lite0)
    and of the auxiliary head, and leaves those of the later stages and the decode head as without it."""
    from sceneparse.training.losses import SegLoss

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 64, 96, generator=g).contiguous(memory_format=CL)
    y = torch.randint(0, 11, (2, 64, 96), generator=g)
    grads = {}
    for w in (0.4, 0.0):
        model, loss = _pspnet().train(), SegLoss(aux_weight=w)
        fast_train.enable(model, loss, torch.device("cpu"), bf16=bf16)
        torch.manual_seed(5)  # the heads' dropout masks alike in both runs
        total, _ = loss(model(x), y)
        total.backward()
        grads[w] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    with_aux, without = grads[0.4], grads[0.0]
    assert any(n.startswith("aux_head.") for n in with_aux) and not any(n.startswith("aux_head.") for n in without)
    for n, gw in without.items():
        changed = (with_aux[n] - gw).abs().max().item() > 1e-3 * gw.abs().max().item()
        below_tap = n.startswith(("backbone.conv_stem", "backbone.bn1")) or any(
            n.startswith(f"backbone.blocks.{i}.") for i in range(5))
        assert changed == below_tap, n
