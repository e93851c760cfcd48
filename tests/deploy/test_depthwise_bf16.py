"""The AVX512-BF16 depthwise kernel (kernels/depthwise_bf16.py) and the inference layer that uses it."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sceneparse.deploy.optimize import NativeDepthwiseBF16, native_depthwise_bf16, optimize_for_inference, rewrite_counts
from sceneparse.kernels import depthwise_bf16 as dw
from sceneparse.models import build_model

needs_kernel = pytest.mark.skipif(not dw.available(), reason="this CPU (or compiler) has no AVX512-BF16")


@needs_kernel
@pytest.mark.parametrize("n,c,h,w,k,stride,dilation,padding", [
    (2, 64, 13, 17, 3, 1, 1, 1),   # plain 3x3
    (1, 32, 20, 23, 5, 1, 4, 8),   # 5x5 rate 4 (EfficientNet-Lite at OS8), padding beyond oneDNN's 6
    (2, 96, 15, 16, 5, 2, 1, 2),   # stride 2
    (1, 64, 9, 11, 3, 1, 2, 0),    # no padding
    (1, 32, 6, 5, 5, 1, 3, 5),     # more padding than image: many taps read zeros
])
def test_kernel_equals_conv2d_on_bf16_values(n, c, h, w, k, stride, dilation, padding):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w).bfloat16().contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(c, 1, k, k).bfloat16(), torch.randn(c).bfloat16()
    packed, bias_bits = dw.pack(weight, bias)
    y = dw.depthwise_bf16(x, packed, bias_bits, [k, k], [stride, stride], [padding, padding], [dilation, dilation])
    ref = F.conv2d(x.float(), weight.float(), bias.float(), stride, padding, dilation, c)
    assert y.dtype == torch.bfloat16 and y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    # exact products, float32 sums, one rounding to bf16: within half a bf16 step of the float32 result
    torch.testing.assert_close(y.float(), ref, rtol=2 ** -8, atol=1e-5 * ref.abs().max().item())


@needs_kernel
def test_pack_refuses_channel_counts_the_kernel_cannot_do():
    with pytest.raises(ValueError, match="multiple of 32"):
        dw.pack(torch.randn(48, 1, 3, 3), None)


@needs_kernel
def test_layer_replaces_supported_depthwise_convs_and_keeps_the_function():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 64, 1), nn.Conv2d(64, 64, 5, padding=8, dilation=4, groups=64),
                          nn.Conv2d(64, 48, 1), nn.Conv2d(48, 48, 3, padding=1, groups=48)).eval().bfloat16()
    x = torch.randn(1, 32, 19, 22).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x).float()
    assert native_depthwise_bf16(model, min_padding=0) == 1  # 48 channels: not a multiple of 32, left to oneDNN
    assert [type(m) for m in model] == [nn.Conv2d, NativeDepthwiseBF16, nn.Conv2d, nn.Conv2d]
    with torch.no_grad():
        out = model(x).float()
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
    model.float()  # a later cast leaves the packed weights and bias bits alone; float32 inputs go to the conv
    assert model[1].packed.dtype == torch.int16 and model[1].bias_bits.dtype == torch.int32
    with torch.no_grad():
        h = torch.randn(1, 64, 9, 9)
        torch.testing.assert_close(model[1](h), model[1].conv(h))


@needs_kernel
def test_os8_efficientnet_bf16_on_the_kernel_matches_oneDNN_and_compiles():
    """EfficientNet-Lite0 at OS8 (5x5 rate-4 depthwise layers, padding 8) through the AMD family's bf16 rules:
    its depthwise layers of 32k channels go to the kernel (including the pre-padded ones), the output stays
    that of the same rules without it, and torch.compile calls the kernel as a custom op."""
    torch.manual_seed(0)
    ref = build_model("pspnet", "efficientnet_lite0", 5, output_stride=8, pretrained=None, aux_head=False).eval()
    x = torch.randn(1, 3, 64, 80).bfloat16().contiguous(memory_format=torch.channels_last)
    flags = ["avx512_bf16", "avx512f"]
    fast = optimize_for_inference(copy.deepcopy(ref), dtype=torch.bfloat16, cpu_flags=flags)
    counts = rewrite_counts(fast)
    # the three 1152-channel 5x5 rate-4 layers (padding 8); the others stay on oneDNN, which pads them itself
    assert counts["native_depthwise_bf16"] == 3 and counts["prepadded_depthwise"] == 0
    aot_like = optimize_for_inference(copy.deepcopy(ref), dtype=torch.bfloat16, cpu_flags=flags, compile=False)
    for m in aot_like.modules():  # the same model with the kernel's layers back on oneDNN
        for name, child in list(m.named_children()):
            if isinstance(child, NativeDepthwiseBF16):
                c = child.conv
                conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, child.geometry[2],
                                 c.dilation, c.groups, bias=c.bias is not None)
                conv.weight, conv.bias = c.weight, c.bias
                setattr(m, name, conv)
    with torch.no_grad():
        want = aot_like(x)["out"].float()
        got = fast(x)["out"].float()
        compiled = optimize_for_inference(copy.deepcopy(ref), dtype=torch.bfloat16, cpu_flags=flags, compile=True)
        got_compiled = compiled(x)["out"].float()
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=0, atol=5e-2 * scale)
    torch.testing.assert_close(got_compiled, got, rtol=0, atol=5e-2 * scale)
    assert rewrite_counts(compiled)["native_depthwise_bf16"] == counts["native_depthwise_bf16"]


def test_amx_family_and_aot_keep_onednn():
    torch.manual_seed(0)
    ref = build_model("pspnet", "efficientnet_lite0", 5, output_stride=16, pretrained=None, aux_head=False).eval()
    amx = optimize_for_inference(copy.deepcopy(ref), dtype=torch.bfloat16, cpu_flags=["amx_bf16", "avx512_bf16"])
    assert rewrite_counts(amx)["native_depthwise_bf16"] == 0
    aot = optimize_for_inference(copy.deepcopy(ref), dtype=torch.bfloat16, cpu_flags=["avx512_bf16"], compile="aot")
    assert rewrite_counts(aot)["native_depthwise_bf16"] == 0


@needs_kernel
def test_layer_compiles_into_one_graph_without_breaks():
    """torch.compile must see the kernel as one op (a fake implementation giving the output's shape and
    layout): a failing fake would make Dynamo fall back to eager, layer by layer, and recompile."""
    model = nn.Sequential(nn.Conv2d(32, 64, 1), nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.ReLU6(),
                          nn.Conv2d(64, 64, 5, padding=8, dilation=4, groups=64)).eval().bfloat16()
    assert native_depthwise_bf16(model, min_padding=0) == 2
    x = torch.randn(1, 32, 16, 16).bfloat16().contiguous(memory_format=torch.channels_last)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


@needs_kernel
def test_only_layers_padding_more_than_six_go_to_the_kernel_by_default():
    model = nn.Sequential(nn.Conv2d(32, 32, 5, padding=8, dilation=4, groups=32),
                          nn.Conv2d(32, 32, 5, padding=4, dilation=2, groups=32)).eval().bfloat16()
    assert native_depthwise_bf16(model) == 1
    assert [type(m) for m in model] == [NativeDepthwiseBF16, nn.Conv2d]


@needs_kernel
def test_kernel_non_square_uneven_geometry_no_bias_and_nchw_input():
    torch.manual_seed(0)
    x = torch.randn(3, 64, 11, 14).bfloat16()  # NCHW: made channels_last inside
    weight = torch.randn(64, 1, 3, 4).bfloat16()  # 12 taps: an even count
    packed, bias_bits = dw.pack(weight, None)
    y = dw.depthwise_bf16(x, packed, bias_bits, [3, 4], [1, 2], [2, 1], [2, 3])
    ref = F.conv2d(x.float(), weight.float(), None, (1, 2), (2, 1), (2, 3), 64)
    torch.testing.assert_close(y.float(), ref, rtol=2 ** -8, atol=1e-5 * ref.abs().max().item())


@needs_kernel
def test_kernel_refuses_inputs_that_do_not_match_its_weights():
    packed, bias_bits = dw.pack(torch.randn(64, 1, 3, 3), torch.randn(64))
    with pytest.raises(ValueError, match="packed for 64 channels"):
        dw.depthwise_bf16(torch.randn(1, 32, 8, 8).bfloat16(), packed, bias_bits, [3, 3], [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="multiple of 32"):
        dw.depthwise_bf16(torch.randn(1, 48, 8, 8).bfloat16(), packed, bias_bits, [3, 3], [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="bfloat16"):
        dw.depthwise_bf16(torch.randn(1, 64, 8, 8), packed, bias_bits, [3, 3], [1, 1], [1, 1], [1, 1])


@needs_kernel
def test_prepadded_layers_are_replaced_whole_and_counted_once():
    from sceneparse.deploy.optimize import PrePaddedConv2d, prepad_depthwise_convs

    model = nn.Sequential(nn.Conv2d(32, 32, 5, padding=8, dilation=4, groups=32)).eval().bfloat16()
    x = torch.randn(1, 32, 12, 13).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x).float()
    assert prepad_depthwise_convs(model) == 1 and isinstance(model[0], PrePaddedConv2d)
    assert native_depthwise_bf16(model) == 1
    assert isinstance(model[0], NativeDepthwiseBF16) and rewrite_counts(model)["prepadded_depthwise"] == 0
    assert model[0].geometry[2] == [8, 8]
    with torch.no_grad():
        torch.testing.assert_close(model(x).float(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


@needs_kernel
def test_layer_falls_back_to_conv2d_where_the_kernel_is_missing(monkeypatch):
    model = nn.Sequential(nn.Conv2d(32, 32, 5, padding=8, dilation=4, groups=32)).eval().bfloat16()
    x = torch.randn(1, 32, 12, 13).bfloat16().contiguous(memory_format=torch.channels_last)
    assert native_depthwise_bf16(model) == 1
    with torch.no_grad():
        fast = model(x).float()
        monkeypatch.setattr(dw, "available", lambda: False)  # e.g. a saved model loaded on another CPU
        slow = model(x).float()
    torch.testing.assert_close(slow, fast, rtol=2e-2, atol=2e-2 * fast.abs().max().item())
