"""Depthwise convolution of bfloat16 channels_last tensors with the AVX512-BF16 dot product, for inference.

The kernel (``sp_dw_fwd_dpbf16`` in ``train_ops.c``) multiplies 16 channels by two taps per instruction
(``vdpbf16ps`` on pairs of taps interleaved in registers: exact products, float32 sums, one rounding to
bfloat16 at the end), with the padding read as zeros in place (no padded copy). Measured alone on a 2-core AMD
EPYC (avx512_bf16, no AMX), 2 threads, bf16, median of 9: 1152 channels at 64x64, 5x5 rate 4 (EfficientNet-Lite
at output stride 8) 2.05 ms against 3.94 ms for our float32-arithmetic kernel and 4.51 ms for oneDNN padded
first; 1152 at 23x30, 5x5 rate 2: 0.28 vs 0.59 / 1.15 ms; 96 at 128x128, 3x3: 0.42 vs 0.51 / 0.38 ms.

:func:`depthwise_bf16` is a ``torch.library`` custom op, so ``torch.compile`` graphs call it as one extern
kernel; ``deploy.optimize.NativeDepthwiseBF16`` is the layer that uses it.
"""
from __future__ import annotations

import ctypes

import torch

from . import train_ops


_available: bool | None = None


def available() -> bool:
    """Whether the kernel library is built and was compiled with AVX512-BF16 (this CPU has it). Asked once per
    process (a plain global afterwards, which torch.compile reads without a graph break)."""
    global _available
    if _available is None:
        lib = train_ops.load()
        _available = lib is not None and lib.sp_has_dpbf16() == 1
    return _available


def supports(conv: torch.nn.Conv2d) -> bool:
    """Whether ``conv`` is a depthwise convolution this kernel computes: ``groups == in_channels ==
    out_channels``, a multiple of 32 channels, zero padding given as numbers."""
    return (conv.groups == conv.in_channels == conv.out_channels and conv.in_channels % 32 == 0
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def pack(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's weight layout from ``weight`` ``(C, 1, KH, KW)`` (any float dtype; rounded to bfloat16)
    and ``bias`` ``(C,)`` or ``None``: ``(packed, bias_bits)``, int16 ``(ceil(KH*KW / 2) * C * 2,)`` and int32
    ``(C,)`` holding the float32 bias bits in the kernel's channel order (integer tensors, so that a later
    ``model.to(dtype)`` leaves them as they are).

    Raises:
        RuntimeError: the kernel is not available (see :func:`available`).
        ValueError: C is not a multiple of 32.
    """
    if not available():
        raise RuntimeError("the AVX512-BF16 depthwise kernel is not available on this machine")
    c, _, kh, kw = weight.shape
    if c % 32:
        raise ValueError(f"the AVX512-BF16 depthwise kernel needs a multiple of 32 channels, got {c}")
    wt = weight.detach().float().reshape(c, kh * kw).t().contiguous()
    b = bias.detach().float().contiguous() if bias is not None else None
    packed = torch.empty(((kh * kw + 1) // 2) * c * 2, dtype=torch.int16)
    bias_perm = torch.empty(c, dtype=torch.float32)
    train_ops.load().sp_dw_pack_dpbf16(wt.data_ptr(), b.data_ptr() if b is not None else None, kh * kw, c,
                                       packed.data_ptr(), bias_perm.data_ptr())
    return packed, bias_perm.view(torch.int32)


@torch.library.custom_op("sceneparse::depthwise_bf16", mutates_args=())
def depthwise_bf16(x: torch.Tensor, packed: torch.Tensor, bias_bits: torch.Tensor, kernel: list[int],
                   stride: list[int], padding: list[int], dilation: list[int]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` for the weights :func:`pack` made.

    Args:
        x: ``(N, C, H, W)`` bfloat16 on the CPU (made channels_last here if it is not).
        kernel / stride / padding / dilation: ``[h, w]`` each (zero padding).

    Returns:
        ``(N, C, OH, OW)`` bfloat16, channels_last.

    Raises:
        ValueError: ``x`` is not a 4-D bfloat16 CPU tensor of a multiple of 32 channels matching the packed
            weights, or the geometry gives an empty output.
        MemoryError: the kernel could not allocate its per-thread tap table.
    """
    if x.dim() != 4 or x.dtype != torch.bfloat16 or x.device.type != "cpu" or x.shape[1] % 32:
        raise ValueError(f"depthwise_bf16 needs a (N, C, H, W) bfloat16 CPU tensor with C a multiple of 32, got "
                         f"{tuple(x.shape)} {x.dtype} on {x.device}")
    c = x.shape[1]
    if bias_bits.numel() != c or packed.numel() != (kernel[0] * kernel[1] + 1) // 2 * c * 2:
        raise ValueError(f"depthwise_bf16: weights packed for {bias_bits.numel()} channels and {packed.numel()} "
                         f"values, input has {c} channels and a {kernel[0]}x{kernel[1]} kernel")
    x = x.contiguous(memory_format=torch.channels_last)
    s = train_ops._dw_shape(x, kernel[0], kernel[1], stride, padding, dilation)
    if s.OH <= 0 or s.OW <= 0 or min(stride) <= 0 or min(dilation) <= 0 or min(padding) < 0:
        raise ValueError(f"depthwise_bf16: no output for input {tuple(x.shape)}, kernel {kernel}, stride {stride}, "
                         f"padding {padding}, dilation {dilation}")
    y = torch.empty((s.N, s.C, s.OH, s.OW), dtype=torch.bfloat16, memory_format=torch.channels_last)
    zeros = torch.zeros(s.C, dtype=torch.bfloat16)
    status = train_ops.load().sp_dw_fwd_dpbf16(x.data_ptr(), packed.data_ptr(), bias_bits.data_ptr(), y.data_ptr(),
                                               ctypes.byref(s), zeros.data_ptr())
    if status:
        raise MemoryError("out of memory in the AVX512-BF16 depthwise kernel")
    return y


@depthwise_bf16.register_fake
def _(x, packed, bias_bits, kernel, stride, padding, dilation):
    n, c, h, w = x.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return torch.empty((n, c, oh, ow), dtype=torch.bfloat16, device=x.device, memory_format=torch.channels_last)
