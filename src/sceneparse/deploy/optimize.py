"""Inference-time model optimisations: BatchNorm folding, bf16 weights, channels_last, torch.compile.

``optimize_for_inference`` applies them in the right order; the benchmark and evaluation use it so
that the speed we report is the speed of the model whose accuracy we report.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ..utils.errors import first_line

log = logging.getLogger(__name__)


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where the BN's input is exactly the tensor the conv produced, found by running
    ``example`` with hooks (works on any model, whatever its Python control flow)."""
    produced: dict[int, tuple[torch.Tensor, nn.Conv2d]] = {}
    pairs: dict[int, tuple[nn.Conv2d, nn.BatchNorm2d]] = {}
    bad: set[int] = set()

    def conv_hook(mod, inp, out):
        produced[id(out)] = (out, mod)  # keep the tensor alive so its id stays unique

    def bn_hook(mod, inp):
        src = produced.get(id(inp[0]))
        if src is not None and src[0] is inp[0]:
            prev = pairs.get(id(mod))
            if prev is not None and prev[0] is not src[1]:
                bad.add(id(mod))  # one BN fed by two convs (weight sharing): cannot fold
            pairs[id(mod)] = (src[1], mod)
        else:
            bad.add(id(mod))  # a BN not directly after a conv on some call: leave it alone

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_pre_hook(bn_hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    convs_used = [c for k, (c, _) in pairs.items() if k not in bad]
    # a conv feeding two BNs cannot absorb both
    return [(c, b) for k, (c, b) in pairs.items() if k not in bad and convs_used.count(c) == 1]


def _continuous_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs a fold is checked on, in float32: ``model(x)["out"]``, or for a model with a pyramidal
    output (``forward_pyramid``) its levels before the unity threshold (semantic scores, unity
    probabilities), since the fused output jumps where a probability crosses tau (Specialize and Fuse Eq. 2)."""
    if hasattr(model, "forward_pyramid"):
        out = model.forward_pyramid(x)
        return [t.float() for t in list(out["semantic"]) + list(out["unity"] or [])]
    return [model(x)["out"].float()]


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution into that convolution.

    ``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BN
    is replaced by ``nn.Identity`` (or by its activation for timm's ``BatchNormAct2d``). The model is
    changed in place and is for inference only afterwards. Outputs are unchanged up to float
    rounding (tested within 1e-5).

    Args:
        model: a model in eval mode.
        example: an input ``(N, 3, H, W)`` used to trace which conv feeds which BN
            (default a ``(1, 3, 64, 64)`` random tensor).

    Returns:
        the number of BatchNorm layers folded.

    Raises:
        ValueError: the model is in training mode (its BN uses batch statistics).
        RuntimeError: the folded model's output on ``example`` differs from the original's by more than
            1e-3 of its scale (a conv output also used elsewhere than by its BN); for a pyramidal output
            model its levels before the unity threshold are compared. The model is then left modified:
            reload it.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    if example is None:
        p = next(model.parameters())
        example = torch.randn(1, 3, 64, 64, device=p.device, dtype=p.dtype)
    with torch.no_grad():
        ref = _continuous_outputs(model, example)
    pairs = _conv_bn_pairs(model, example)
    parents = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    for conv, bn in pairs:
        if bn.running_mean is None or bn.running_var is None:
            continue
        scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        new_bias = ((bias - bn.running_mean) * scale + shift).to(conv.weight.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
        else:
            conv.bias.copy_(new_bias)
        replacement: nn.Module = nn.Identity()
        if hasattr(bn, "act") and hasattr(bn, "drop"):  # timm BatchNormAct2d: BN -> drop -> act
            replacement = nn.Sequential(bn.drop, bn.act)
        parent, name = parents[id(bn)]
        setattr(parent, name, replacement)
    with torch.no_grad():
        err = max((a - b).abs().max().item() / max(1.0, b.abs().max().item())
                  for a, b in zip(_continuous_outputs(model, example), ref))
    if err > 1e-3:
        raise RuntimeError(f"BatchNorm folding changed the output by {err:.3g} (relative to its scale); "
                           "reload the model")
    log.debug("folded %d BatchNorm layers (max output change %.2e)", len(pairs), err)
    return len(pairs)


class PrePaddedConv2d(nn.Module):
    """A zero-padded convolution computed as ``F.pad`` followed by the convolution with padding 0.

    Same function as the wrapped ``nn.Conv2d`` (input (N, C_in, H, W), output (N, C_out, H', W'),
    any dtype). It exists for speed where oneDNN picks a slow kernel for a convolution that pads:
    its bf16 AMX kernels (Intel Xeon) for dense convolutions with a dilation of 4 or more (2048->256
    channels on 64x64, DeepLabv3's ASPP shape: 127 GFLOP/s at rate 36 vs 1159 GFLOP/s padded first;
    :func:`prepad_dilated_convs`), and its depthwise kernel for a padding above 6 on every CPU
    (:func:`prepad_depthwise_convs`). The conv's weights are shared, not copied.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("PrePaddedConv2d needs an nn.Conv2d with numeric zero padding")
        ph, pw = conv.padding
        self.pad = (pw, pw, ph, ph)
        conv.padding = (0, 0)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, self.pad))


def prepad_dilated_convs(model: nn.Module, min_dilation: int = 4, min_in_channels: int = 1025) -> int:
    """Replace (in place) every zero-padded dense (``groups == 1``) ``nn.Conv2d`` with dilation >=
    ``min_dilation`` and more than ``min_in_channels - 1`` input channels by a ``PrePaddedConv2d``;
    returns how many were replaced. Outputs are unchanged.

    Where oneDNN's bf16 kernel (AMX, Xeon; 64x64 maps, channels_last, 2 threads) is slow, measured
    natively padded vs padded first: 2048->256 at rate 4 89 vs 30 ms, rate 12 127 vs 30, rate 36 279 vs 57
    (DeepLabv3's ASPP); 2048->512 rate 4 317 vs 59; 1536->256 rate 4 57 vs 19. Where it is not, padding
    first is slower: 512->512 at rate 2 / 4 / 8 (ResNet-50's dilated stages) 6.8 / 7.3 / 8.1 vs 12.2 /
    11.6 / 12.6 ms; 2048->256 rate 2 17.8 vs 27.7; 1024->256 rate 4 10.2 vs 12.5; depthwise 1152 channels
    rate 2 0.53 vs 0.79 ms. Padding every dilated convolution first (this function's earlier rule) cost
    PSPNet-R50 bf16 about a third of its backbone time.
    """
    return _prepad(model, lambda c: c.groups == 1 and max(c.dilation) >= min_dilation
                   and c.in_channels >= min_in_channels and max(c.padding) > 0)


def _prepad(model: nn.Module, wanted) -> int:
    """Wrap (in place) every zero-padded ``nn.Conv2d`` for which ``wanted(conv)`` holds in a
    ``PrePaddedConv2d``; returns how many."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Conv2d and child.padding_mode == "zeros" and not isinstance(child.padding, str)
                    and wanted(child)):
                setattr(parent, name, PrePaddedConv2d(child))
                n += 1
    return n


class Float32Conv2d(nn.Module):
    """A convolution computed in float32 inside a bf16 model: input cast to the weights' dtype (float32),
    output cast back to the input's dtype. Input (N, C_in, H, W), output (N, C_out, H', W').

    Same values as the bf16 convolution: bf16 inputs and weights are exact in float32, oneDNN's bf16
    kernels accumulate in float32 too, and the output is rounded to bf16 once either way (only the
    summation order may differ). It exists for speed: oneDNN's bf16 *dilated depthwise* kernel is slow
    (2-core Xeon with AMX, channels_last, 1152 channels at 23x30, 5x5 rate 2: 0.51 ms bf16 vs 0.30 ms
    float32; 3x3 rate 2: 0.24 vs 0.19), the shape of EfficientNet / MobileNet stages dilated for output
    stride 16 or 8. In the compiled CamVid PSPNet-Lite0 (zoo) the three 5x5 layers went from 2.11 to 1.25 ms
    per image (profiled), the casts being fused into the neighbouring kernels by Inductor.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.to(self.conv.weight.dtype)).to(x.dtype)


def float32_dilated_depthwise(model: nn.Module) -> int:
    """Wrap (in place) every dilated depthwise ``nn.Conv2d`` (``groups == in_channels``, dilation > 1) in
    :class:`Float32Conv2d`; returns how many (0 on a second call). For the bf16 path only, after casting
    the model: a later ``.to(torch.bfloat16)`` casts the wrapped layer back (still correct, no longer
    faster)."""
    n = 0
    for parent in list(model.modules()):
        if isinstance(parent, Float32Conv2d):  # already wrapped: calling this twice changes nothing
            continue
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Conv2d and child.groups > 1 and child.groups == child.in_channels
                    and max(child.dilation) > 1):
                setattr(parent, name, Float32Conv2d(child))
                n += 1
    return n


class NativeDepthwiseBF16(nn.Module):
    """A bf16 depthwise convolution computed by our AVX512-BF16 kernel
    (:func:`sceneparse.kernels.depthwise_bf16.depthwise_bf16`, a custom op that compiled graphs call too).

    Same function as the wrapped ``nn.Conv2d`` (with ``padding``, default the conv's own) on bf16 inputs
    ``(N, C, H, W)`` -> ``(N, C, H', W')``: products exact, float32 sums, one rounding to bf16, as oneDNN's bf16
    kernel (only the summation order differs), padding read as zeros in place. Inputs of another dtype or
    device, or a machine without the kernel, get ``F.conv2d`` with the same weights. It exists for speed on CPUs
    with avx512_bf16 and no AMX: 1152 channels at 64x64, 5x5 rate 4 (EfficientNet-Lite0 at output stride 8)
    2.05 ms against 4.51 ms for oneDNN padded first (2-core AMD EPYC, alone).
    """

    def __init__(self, conv: nn.Conv2d, padding: Sequence[int] | None = None):
        super().__init__()
        from ..kernels import depthwise_bf16 as dw

        packed, bias_bits = dw.pack(conv.weight, conv.bias)
        self.register_buffer("packed", packed)
        self.register_buffer("bias_bits", bias_bits)
        self.geometry = ([int(k) for k in conv.kernel_size], [int(v) for v in conv.stride],
                         [int(v) for v in (padding if padding is not None else conv.padding)],
                         [int(v) for v in conv.dilation])
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..kernels import depthwise_bf16 as dw

        if x.dtype != torch.bfloat16 or x.device.type != "cpu" or not dw.available():
            _, stride, padding, dilation = self.geometry
            return nn.functional.conv2d(x, self.conv.weight, self.conv.bias, stride, padding, dilation, self.conv.groups)
        return torch.ops.sceneparse.depthwise_bf16(x, self.packed, self.bias_bits, *self.geometry)


def native_depthwise_bf16(model: nn.Module, min_padding: int = 7) -> int:
    """Replace (in place) every depthwise ``nn.Conv2d`` of a bf16 model that our AVX512-BF16 kernel computes
    (:func:`sceneparse.kernels.depthwise_bf16.supports`) and that pads at least ``min_padding`` pixels (also
    one inside a ``PrePaddedConv2d``: the whole wrapper is replaced, its padding given to the kernel) by a
    :class:`NativeDepthwiseBF16`; returns how many (0 where the kernel is not available).

    The default, 7, takes the layers oneDNN's depthwise kernel cannot pad itself (:func:`prepad_depthwise_convs`).
    Inside a model the others are faster on oneDNN, which fuses their activation: PSPNet-Lite0 at OS8, bf16,
    512x512, 2-core AMD EPYC, one process: 156.5 ms per image with the three padding-8 layers on the kernel,
    158.8 ms all on oneDNN, 161.4 ms every supported layer on the kernel (eager); compiled 140.3 vs 144.7 ms."""
    from ..kernels import depthwise_bf16 as dw

    if not dw.available():
        return 0
    n = 0
    for parent in list(model.modules()):
        if isinstance(parent, (PrePaddedConv2d, NativeDepthwiseBF16)):  # replaced as a whole, or done
            continue
        for name, child in list(parent.named_children()):
            conv, padding = child, None
            if isinstance(child, PrePaddedConv2d):
                conv, padding = child.conv, (child.pad[2], child.pad[0])
            if (type(conv) is nn.Conv2d and conv.weight.dtype == torch.bfloat16 and dw.supports(conv)
                    and max(padding if padding is not None else conv.padding) >= min_padding):
                setattr(parent, name, NativeDepthwiseBF16(conv, padding))
                n += 1
    return n


def prepad_depthwise_convs(model: nn.Module, max_padding: int = 6) -> int:
    """Replace (in place) every zero-padded depthwise ``nn.Conv2d`` (``groups == in_channels > 1``) whose
    padding exceeds ``max_padding`` by a ``PrePaddedConv2d``; returns how many. Outputs are unchanged.

    oneDNN (torch 2.14) runs a depthwise convolution with its fast depthwise kernel (``jit_dw``) only
    while the padding is at most 6; above it falls back to a generic grouped kernel, 3-7x slower in the
    cases below, in float32 and bf16 alike (seen with ``ONEDNN_VERBOSE=1``: 3x3 rate 6 and 5x5 rate 3 stay on
    ``jit_dw``, 3x3 rate 8 and 5x5 rate 4 do not). With the padding done first the convolution pads
    nothing and stays on ``jit_dw``. Measured on a 2-core AMD EPYC (avx512_bf16, no AMX), channels_last,
    native padding vs padded first: 1152 channels 5x5 rate 4 at 64x64 (EfficientNet-Lite's last stage at
    output stride 8) 29.9 vs 8.6 ms float32, 30.8 vs 5.2 ms bf16; at 23x30 4.5 vs 0.6 ms bf16. Where the
    native kernel already is ``jit_dw`` padding first is slower (5x5 rate 2: 0.30 vs 0.49 ms), hence the
    threshold.
    """
    return _prepad(model, lambda c: 1 < c.groups == c.in_channels and max(c.padding) > max_padding)


def inference_rules(flags: Iterable[str] | None = None) -> dict[str, bool]:
    """Which layer rewrites ``optimize_for_inference`` applies on a CPU with these ``/proc/cpuinfo``
    flags (default: this machine's). They differ by CPU family because oneDNN's kernels do:

    - ``prepad_dense_dilated`` (bf16 only; ``prepad_dilated_convs``) and ``float32_dilated_depthwise``
      (bf16 only): on CPUs with AMX (``amx_bf16``, Intel Xeon), where oneDNN's AMX kernel is slow for
      padded wide dilated convolutions and its bf16 dilated depthwise kernel is slower than float32.
      With avx512_bf16 and no AMX (AMD EPYC) both cost time: DeepLabv3-R50's ASPP at output stride 8
      (2048->256, 64x64) took 99 / 106 / 107 ms padded first against 38 / 53 / 70 ms natively (rates 12 /
      24 / 36, bf16, 2 cores: the native kernel skips the padding taps), and bf16 dilated depthwise layers
      are faster than float32 there (1152 channels 5x5 rate 2 at 23x30: 0.32 vs 0.44 ms).
    - ``prepad_depthwise``: with avx512_bf16 and no AMX, depthwise convolutions padding more than 6 are
      padded first (``prepad_depthwise_convs``), in every precision.

    The second set (no dense padding, bf16 depthwise, depthwise padding) was measured on an AMD EPYC with
    ``avx512_bf16`` and no AMX, and applies only to CPUs with those flags. Every other CPU (AMX, older x86,
    ARM, no flags known) keeps the first set, the rules from before this choice existed, until measured.

    - ``native_depthwise_bf16`` (bf16 only, not with ``compile="aot"``): with avx512_bf16 and no AMX, depthwise
      convolutions of a multiple of 32 channels padding more than 6 run on our AVX512-BF16 kernel
      (:func:`native_depthwise_bf16`) instead of being padded first for oneDNN: 2.05 vs 4.51 ms alone for
      EfficientNet-Lite0's 5x5 rate-4 layer at OS8. On AMX CPUs not yet measured, so not applied.

    Returns ``{"prepad_dense_dilated", "float32_dilated_depthwise", "prepad_depthwise", "native_depthwise_bf16"}``
    -> bool.
    """
    from ..utils.sysinfo import all_cpu_flags

    have = all_cpu_flags() if flags is None else frozenset(flags)
    avx512_bf16_only = "avx512_bf16" in have and "amx_bf16" not in have
    return {"prepad_dense_dilated": not avx512_bf16_only, "float32_dilated_depthwise": not avx512_bf16_only,
            "prepad_depthwise": avx512_bf16_only, "native_depthwise_bf16": avx512_bf16_only}


def rewrite_counts(model: nn.Module) -> dict[str, int]:
    """How many layers of ``model`` (also inside a compiled wrapper) each rewrite of
    :func:`optimize_for_inference` changed: ``{"prepadded_dense", "prepadded_depthwise", "float32_depthwise",
    "native_depthwise_bf16"}``."""
    mods = list(model.modules())
    pre = [m for m in mods if isinstance(m, PrePaddedConv2d)]
    return {"prepadded_dense": sum(m.conv.groups == 1 for m in pre),
            "prepadded_depthwise": sum(m.conv.groups > 1 for m in pre),
            "float32_depthwise": sum(isinstance(m, Float32Conv2d) for m in mods),
            "native_depthwise_bf16": sum(isinstance(m, NativeDepthwiseBF16) for m in mods)}


def optimize_for_inference(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
                           dtype: torch.dtype = torch.float32, compile: bool | str = False,
                           example: torch.Tensor | None = None,
                           cpu_flags: Iterable[str] | None = None) -> nn.Module:
    """Eval mode, BN folding, ``channels_last``, weights cast to ``dtype`` and optionally ``torch.compile``.

    ``dtype=torch.bfloat16`` is the fast path: inputs must be cast too (``InferenceConfig(dtype=...)``
    does). Layer rewrites that keep the function and pick oneDNN's faster kernels are chosen by the CPU's
    flags (``cpu_flags``, default this machine's; see :func:`inference_rules`): on CPUs with AVX-512-BF16
    and no AMX depthwise convolutions with a padding above 6 are padded first (``prepad_depthwise_convs``);
    elsewhere (AMX, other CPUs, CUDA) wide dilated convolutions are padded explicitly first in bf16
    (``prepad_dilated_convs``) and dilated depthwise ones run in float32 (``float32_dilated_depthwise``).
    :func:`rewrite_counts` tells what a prepared model got. ``compile`` uses Inductor with ``freezing`` (weights
    become constants, so oneDNN prepacks them and fuses conv + ReLU / add): 8-14% faster than eager
    on a 2-core Xeon for ResNet-50 models at 512x512, after a first call of 5-9 s. ``compile="aot"``:
    AOTInductor instead (:class:`_AOTCompiled`; 15-25 s per new input shape; +6% or -23% against
    ``torch.compile`` depending on the model and run, see the README).
    Returns the model to use (the compiled wrapper when ``compile``); the module is modified in place.
    """
    model = model.eval()
    param = next(model.parameters(), None)
    on_cpu = param is None or param.device.type == "cpu"
    # the CPU family's rules for a model on the CPU; elsewhere (CUDA) the rules from before they were chosen
    rules = inference_rules(cpu_flags if on_cpu else ())
    if fold_bn:
        fold_batchnorm(model, example)
    if dtype == torch.bfloat16 and rules["prepad_dense_dilated"]:
        n = prepad_dilated_convs(model)
        log.debug("padded %d dilated convolutions explicitly for bf16", n)
    if rules["prepad_depthwise"]:
        n = prepad_depthwise_convs(model)
        log.debug("padded %d depthwise convolutions explicitly", n)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        model = model.to(dtype)
    if dtype == torch.bfloat16 and rules["float32_dilated_depthwise"]:
        n = float32_dilated_depthwise(model)
        log.debug("kept %d dilated depthwise convolutions in float32", n)
    if dtype == torch.bfloat16 and rules["native_depthwise_bf16"] and on_cpu and compile != "aot":
        n = native_depthwise_bf16(model)  # AOTInductor cannot call a Python custom op
        log.debug("%d depthwise convolutions on the AVX512-BF16 kernel", n)
    rule = getattr(model, "input_size_for", None)
    if compile == "aot":
        model = _AOTCompiled(model)
    elif compile:
        model = _FrozenCompiled(model)
    if rule is not None:  # the engine's input-size rule (SegmentationModel.input_size_for) survives the wrapper
        model.input_size_for = rule
    return model


class _AOTCompiled(nn.Module):
    """AOTInductor (``torch.export`` + ``aoti_compile_and_package`` with freezing), one compiled package per
    input shape, dtype and memory format: no Dynamo guards and no Python between the kernels. Measured
    against ``torch.compile`` (2-core Xeon with AMX, alternating runs, identical outputs): the shipped
    CamVid model at 360x480 35.5 vs 33.3 img/s (fp32) and 76.7 vs 72.4 (bf16) in one run, a tie in
    others; DeepLabv3-R50 bf16 3.53 vs 4.60 (slower). Each new shape compiles for 15-25 s
    (``torch.compile``: ~10 s), so it suits a fixed input size (a camera, a benchmark).
    ``forward(x)`` -> ``{"out": tensor}``; the packages live in a temporary folder removed with the module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        import tempfile

        self.model = model
        self._dir = tempfile.TemporaryDirectory(prefix="sceneparse_aoti_")
        self._runners: dict[tuple, object] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch._inductor.config as inductor_config

        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        key = (tuple(x.shape), x.dtype, cl, x.device.type)
        runner = self._runners.get(key)
        if runner is None:
            graph = _OutOnly(self.model).eval()
            with torch.no_grad():
                program = torch.export.export(graph, (x,))
                with inductor_config.patch(freezing=True):
                    path = torch._inductor.aoti_compile_and_package(
                        program, package_path=f"{self._dir.name}/model_{len(self._runners)}.pt2")
            runner = self._runners[key] = torch._inductor.aoti_load_package(path)
        return {"out": runner(x)}


class _OutOnly(nn.Module):
    """A model's ``"out"`` as a plain tensor (what ``torch.export`` packages)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class _FrozenCompiled(nn.Module):
    """``torch.compile`` with Inductor's ``freezing`` and ``cpp_wrapper`` switched on while compiling and running.

    ``freezing``: weights become constants, so oneDNN prepacks them and fuses conv + ReLU / add
    (``torch.compile(options={"freezing": True})`` did not freeze in torch 2.14: no speed-up).
    ``cpp_wrapper``: the compiled graph calls its kernels from C++ instead of Python; on CPU the
    per-op Python dispatch is what remains around fast oneDNN convolutions: the CamVid PSPNet-Lite0 (zoo)
    (54 convolutions) at 360x480 in bf16 ran at 76.7 img/s with it, 69.1 without (2-core Xeon with AMX,
    alternating runs); compiling takes ~5 s longer. Should the C++ wrapper fail to build (no compiler),
    the Python wrapper is used (logged)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.compiled = torch.compile(model)  # holds ``model`` as ``_orig_mod``
        self.cpp_wrapper = True

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor_config

        if self.cpp_wrapper:
            try:
                with inductor_config.patch(freezing=True, cpp_wrapper=True):
                    return self.compiled(*args, **kwargs)
            except (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.CppCompileError) as e:
                log.warning("torch.compile with cpp_wrapper failed (%s: %s); using the Python wrapper",
                            type(e).__name__, first_line(e))
                self.cpp_wrapper = False
                torch._dynamo.reset()
        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)
