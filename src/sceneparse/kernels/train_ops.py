"""Autograd functions on our native training kernels (``train_ops.c``): channels_last float32 or bfloat16
activations on the CPU (computed in float32; parameters and their gradients float32).

- :func:`batch_norm_act`: BatchNorm with batch statistics (training mode) fused with identity / ReLU /
  ReLU6, forward and backward (Ioffe & Szegedy 2015, Alg. 1 and Sec. 3). The activation's mask is
  recomputed from the saved input, so nothing beyond the input is kept for the backward.
- :func:`depthwise_conv2d`: a convolution with ``groups == channels`` (any kernel, stride, zero padding,
  dilation), forward and both gradients. oneDNN's backward of these is 8-20x its forward on the CPUs we
  train on; here it is a gather over the taps, vectorised over channels.
- :func:`upsample_cross_entropy`: ``F.cross_entropy(F.interpolate(logits, size, bilinear,
  align_corners=False), target, ignore_index)`` with the gradient of the low-resolution logits computed in
  the same pass: no ``(N, K, H, W)`` tensor, its softmax, copy or gradient is ever built.

Each returns ``None`` where it does not apply (the kernels cannot be built, a tensor is not a CPU float32
channels_last one, ...): callers then run the PyTorch operators, which give the same values within float32
rounding (tested). The loops run on torch's OpenMP threads (``torch.get_num_threads()``).
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from . import native

_SOURCE = Path(__file__).with_name("train_ops.c")
# contraction into FMAs allowed here (more accurate, faster); unlike upsample_argmax.c nothing must match
# PyTorch bit for bit
# -fopenmp: loaded after torch, the library binds to the libgomp torch already loaded (same soname), so its
# loops share torch's thread pool and thread count
_FLAGS = [f for f in native._FLAGS if f != "-ffp-contract=off"] + ["-ffp-contract=fast", "-fopenmp"]
ACTS = {"none": 0, "relu": 1, "relu6": 2}
_lock = threading.Lock()
_state: dict = {}


class _DWShape(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("N", "H", "W", "C", "OH", "OW", "KH", "KW", "sh", "sw", "ph", "pw",
                                             "dh", "dw")]


def _build() -> ctypes.CDLL:
    lib = native.build_library(_SOURCE, _FLAGS, headers=[_SOURCE.with_name("train_ops_act.h")])
    i64, i32, p = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    base = {
        "sp_bn_stats": [p, i64, i64, p, p, p],
        "sp_bn_act_fwd": [p, p, i64, i64, p, p, i32],
        "sp_bn_act_bwd_reduce": [p, p, i64, i64, p, p, p, i32, p, p],
        "sp_bn_act_bwd_dx": [p, p, p, i64, i64, p, p, p, p, p, i32],
        "sp_dw_fwd": [p, p, p, p, ctypes.POINTER(_DWShape)],
        "sp_dw_bwd_input": [p, p, p, ctypes.POINTER(_DWShape)],
        "sp_dw_bwd_weight": [p, p, p, ctypes.POINTER(_DWShape), p, i64],
    }
    # the activation kernels exist for float32 (_f32) and bfloat16 (_bf16) tensors (train_ops_act.h)
    sigs = {f"{name}_{suffix}": args for name, args in base.items() for suffix in ("f32", "bf16")}
    sigs["sp_upce"] = [p, i64, i64, i64, i64, i64, i64, p, p, p, p, p, p, p, p, p, i64, p, p, p, p, p]
    sigs["sp_has_dpbf16"] = []
    sigs["sp_dw_pack_dpbf16"] = [p, p, i64, i64, p, p]
    sigs["sp_dw_fwd_dpbf16"] = [p, p, p, p, ctypes.POINTER(_DWShape), p]
    returns_int = ("sp_bn_stats", "sp_bn_act_bwd_reduce", "sp_has_dpbf16", "sp_dw_fwd_dpbf16")
    for name, args in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, ctypes.c_int if name.startswith(returns_int) else None
    return lib


def _kernel(name: str, t: torch.Tensor):
    """The kernel ``name`` for the element type of activation tensor ``t`` (float32 or bfloat16)."""
    return getattr(load(), f"{name}_{'bf16' if t.dtype == torch.bfloat16 else 'f32'}")


def _ok(status: int) -> None:
    if status:
        raise MemoryError("out of memory in a native training kernel")


def load() -> ctypes.CDLL | None:
    """The training-kernel library, built on first call; ``None`` where it cannot be (reason in :func:`error`)
    or with ``SCENEPARSE_NATIVE=0``."""
    import os

    if os.environ.get("SCENEPARSE_NATIVE", "1") == "0":
        return None
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                try:
                    _state["lib"], _state["error"] = _build(), None
                except Exception as e:  # no compiler, read-only home, foreign platform: fall back, say why
                    _state["lib"], _state["error"] = None, f"{type(e).__name__}: {e}"
    return _state["lib"]


def error() -> str | None:
    """Why :func:`load` returned ``None``."""
    return _state.get("error")


def _threads() -> int:
    return max(1, min(torch.get_num_threads(), 8))


def _nhwc_ok(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16) and t.dim() == 4
               and t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


# ---------------------------------------------------------------- BatchNorm + activation

class _BatchNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, act):
        n, c, h, w = x.shape
        rows = n * h * w
        ref = x[0, :, 0, 0].float().contiguous()  # a shift against cancellation in the sum of squares
        sums = torch.empty((2, c), dtype=torch.float64)
        _ok(_kernel("sp_bn_stats", x)(x.data_ptr(), c, rows, ref.data_ptr(), sums[0].data_ptr(), sums[1].data_ptr()))
        shifted = sums[0] / rows
        var = (sums[1] / rows - shifted * shifted).clamp_(min=0.0)
        mean = shifted + ref.double()
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_((var * rows / max(rows - 1, 1)).to(running_var.dtype),
                                                    alpha=momentum)
        invstd = (var + eps).rsqrt()
        gamma = weight.detach().double() if weight is not None else torch.ones(c, dtype=torch.float64)
        beta = bias.detach().double() if bias is not None else torch.zeros(c, dtype=torch.float64)
        scale, shift = (gamma * invstd).float(), (beta - mean * gamma * invstd).float()
        y = torch.empty_like(x, memory_format=torch.channels_last)
        _kernel("sp_bn_act_fwd", x)(x.data_ptr(), y.data_ptr(), c, rows, scale.data_ptr(), shift.data_ptr(), act)
        ctx.act, ctx.has_weight, ctx.has_bias = act, weight is not None, bias is not None
        ctx.save_for_backward(x, scale, shift, mean.float(), invstd, gamma)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale, shift, mean, invstd, gamma = ctx.saved_tensors
        dy = dy.to(x.dtype).contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        rows = n * h * w
        xp, gp, sp, tp = x.data_ptr(), dy.data_ptr(), scale.data_ptr(), shift.data_ptr()
        sums = torch.empty((2, c), dtype=torch.float64)
        _ok(_kernel("sp_bn_act_bwd_reduce", x)(xp, gp, c, rows, sp, tp, mean.data_ptr(), ctx.act, sums[0].data_ptr(),
                                               sums[1].data_ptr()))
        sg, sgx = sums
        sgxhat = sgx * invstd  # dL/dgamma
        dx = None
        if ctx.needs_input_grad[0]:
            ka = gamma * invstd
            kb = -ka * invstd * sgxhat / rows
            kd = -ka * sg / rows - kb * mean.double()
            ka, kb, kd = ka.float(), kb.float(), kd.float()
            dx = torch.empty_like(x, memory_format=torch.channels_last)
            _kernel("sp_bn_act_bwd_dx", x)(xp, gp, dx.data_ptr(), c, rows, sp, tp, ka.data_ptr(), kb.data_ptr(),
                                           kd.data_ptr(), ctx.act)
        dweight = sgxhat.float() if ctx.has_weight and ctx.needs_input_grad[1] else None
        dbias = sg.float() if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None, None, None


def batch_norm_act(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float, eps: float,
                   act: str = "none") -> torch.Tensor | None:
    """``act(F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum, eps))``.

    Args:
        x: ``(N, C, H, W)`` float32 or bfloat16, channels_last, on the CPU, ``N * H * W > 1``.
        weight, bias: ``(C,)`` affine parameters or ``None``; running_mean / running_var: ``(C,)`` buffers
            updated in place as ``F.batch_norm`` does (the unbiased variance), or ``None``.
        act: ``"none"``, ``"relu"`` or ``"relu6"`` (``clamp(., 0, 6)``).

    Returns:
        ``(N, C, H, W)`` of ``x``'s dtype, channels_last, differentiable w.r.t. ``x``, ``weight`` and ``bias``; or
        ``None`` where the kernel does not apply (caller falls back to PyTorch).
    """
    if act not in ACTS or not _nhwc_ok(x) or x.shape[0] * x.shape[2] * x.shape[3] <= 1 or x.shape[1] > 65536:
        return None
    if any(t is not None and (t.dtype != torch.float32 or t.device.type != "cpu")
           for t in (weight, bias, running_mean, running_var)) or load() is None:
        return None
    return _BatchNormAct.apply(x, weight, bias, running_mean, running_var, float(momentum), float(eps), ACTS[act])


# ---------------------------------------------------------------- depthwise convolution

def _dw_shape(x, kh, kw, stride, padding, dilation) -> _DWShape:
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return _DWShape(n, h, w, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)


def _flipped_shape(s: _DWShape) -> _DWShape | None:
    """For stride 1, the input gradient is the forward convolution of dy (OH x OW) with the taps reversed
    and padding (K - 1) * dilation - padding, giving H x W: its shape, or ``None`` where that does not hold."""
    ph, pw = (s.KH - 1) * s.dh - s.ph, (s.KW - 1) * s.dw - s.pw
    if (s.sh, s.sw) != (1, 1) or ph < 0 or pw < 0:
        return None
    return _DWShape(s.N, s.OH, s.OW, s.C, s.H, s.W, s.KH, s.KW, 1, 1, ph, pw, s.dh, s.dw)


class _Depthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        c, _, kh, kw = weight.shape
        s = _dw_shape(x, kh, kw, stride, padding, dilation)
        wt = weight.detach().reshape(c, kh * kw).t().contiguous()  # (taps, C): unit stride over channels
        b = bias.detach().contiguous() if bias is not None else None
        y = torch.empty((s.N, c, s.OH, s.OW), dtype=x.dtype, memory_format=torch.channels_last)
        _kernel("sp_dw_fwd", x)(x.data_ptr(), wt.data_ptr(), _ptr(b), y.data_ptr(), ctypes.byref(s))
        ctx.shape, ctx.has_bias = s, bias is not None
        ctx.save_for_backward(x, wt)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, wt = ctx.saved_tensors
        s = ctx.shape
        dy = dy.to(x.dtype).contiguous(memory_format=torch.channels_last)
        gp, xp, wp = dy.data_ptr(), x.data_ptr(), wt.data_ptr()
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x, memory_format=torch.channels_last)
            flipped = _flipped_shape(s)
            if flipped is not None:  # stride 1: a forward convolution of dy with the taps reversed
                reversed_taps = wt.flip(0).contiguous()  # kept alive: the kernel reads it through a raw pointer
                _kernel("sp_dw_fwd", x)(gp, reversed_taps.data_ptr(), None, dx.data_ptr(), ctypes.byref(flipped))
            else:
                _kernel("sp_dw_bwd_input", x)(gp, wp, dx.data_ptr(), ctypes.byref(s))
        if ctx.needs_input_grad[1]:
            threads = _threads()
            scratch = torch.empty((threads, s.KH * s.KW, s.C))
            dwt = torch.empty((s.KH * s.KW, s.C))
            _kernel("sp_dw_bwd_weight", x)(xp, gp, dwt.data_ptr(), ctypes.byref(s), scratch.data_ptr(), threads)
            dweight = dwt.t().reshape(s.C, 1, s.KH, s.KW).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = dy.float().sum((0, 2, 3))
        return dx, dweight, dbias, None, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
                     dilation) -> torch.Tensor | None:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` for ``weight`` of shape
    ``(C, 1, KH, KW)``.

    Args:
        x: ``(N, C, H, W)`` float32 or bfloat16, channels_last, on the CPU; ``weight`` / ``bias`` float32;
            stride / padding / dilation: pairs of ints (zero padding).

    Returns:
        ``(N, C, OH, OW)`` of ``x``'s dtype, channels_last, differentiable w.r.t. ``x``, ``weight``, ``bias``; ``None``
        where the kernel does not apply.
    """
    if not _nhwc_ok(x) or weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != x.shape[1]:
        return None
    if weight.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32) or load() is None:
        return None
    s = _dw_shape(x, weight.shape[2], weight.shape[3], stride, padding, dilation)
    if s.OH <= 0 or s.OW <= 0 or min(stride) <= 0 or min(dilation) <= 0 or min(padding) < 0:
        return None
    return _Depthwise.apply(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation))


# ---------------------------------------------------------------- upsampling + cross-entropy

class _UpsampleCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index):
        lib, up = load(), native.load()
        x = logits.detach().float().contiguous()
        n, k, h, w = x.shape
        H, W = target.shape[-2:]
        tgt = target.contiguous()
        y0, y1, wy0, wy1 = native._axis(up, h, H)
        x0, x1, wx0, wx1 = native._axis(up, w, W)
        rows = torch.empty((n, k, h, W))
        drows = torch.zeros((n, k, h, W))
        grad = torch.zeros((n, k, h, w))
        scratch = torch.empty((n, (k + 4) * W))
        loss = torch.empty(n, dtype=torch.float64)
        count = torch.empty(n, dtype=torch.int64)
        axw = [t.data_ptr() for t in (x0, x1, wx0, wx1)]
        up.sp_hrows(x.data_ptr(), w, W, 0, n * k * h, *axw, rows.data_ptr())
        lib.sp_upce(rows.data_ptr(), n, k, h, W, H, w, *[t.data_ptr() for t in (y0, y1, wy0, wy1)], *axw,
                    tgt.data_ptr(), int(ignore_index), drows.data_ptr(), scratch.data_ptr(), loss.data_ptr(),
                    count.data_ptr(), grad.data_ptr())
        total = int(count.sum())
        if total:
            grad /= total
        ctx.save_for_backward(grad)
        ctx.dtype = logits.dtype
        value = loss.sum() / total if total else loss.sum()
        return value.float()

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return (grad * g).to(ctx.dtype), None, None


def upsample_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor | None:
    """``F.cross_entropy(F.interpolate(logits, target.shape[-2:], mode="bilinear", align_corners=False), target,
    ignore_index=ignore_index)`` (mean over labelled pixels; 0 if none), upsampled in float32 with PyTorch's
    index and weight rule.

    Args:
        logits: ``(N, K, h, w)`` CPU floats (any layout; computed in float32); target: ``(N, H, W)`` int64 in
            ``[0, K)`` or ``ignore_index``.

    Returns:
        a float32 scalar differentiable w.r.t. ``logits``; ``None`` where the kernel does not apply
        (non-finite logits included: the caller's PyTorch path then gives its NaN).

    Raises:
        ValueError: a target value outside ``[0, K)`` that is not ``ignore_index``.
    """
    if logits.device.type != "cpu" or target.device.type != "cpu" or logits.dim() != 4 or target.dim() != 3:
        return None
    if target.dtype != torch.int64 or target.shape[0] != logits.shape[0] or min(logits.shape) <= 0:
        return None
    if not -2**31 <= ignore_index < 2**31 or load() is None or native.load() is None \
            or not bool(torch.isfinite(logits).all()):
        return None
    k = logits.shape[1]
    bad = (target != ignore_index) & ((target < 0) | (target >= k))
    if bool(bad.any()):
        raise ValueError(f"target holds class {int(target[bad][0])}, outside [0, {k}) and not ignore_index "
                         f"{ignore_index}")
    return _UpsampleCE.apply(logits, target, int(ignore_index))
