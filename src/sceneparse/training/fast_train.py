"""A faster CPU training step for the same computation (``train.fast``).

What PyTorch's CPU kernels do slowly in our training step, measured with ``sceneparse benchmark --train``
(docs/training_speed.md), and what replaces it here:

- BatchNorm in training mode and the ReLU6 after it: ``hardtanh_backward`` on channels_last tensors runs
  ~35x slower than on contiguous ones, and BatchNorm's backward is far from memory bandwidth.
  -> :func:`~sceneparse.kernels.train_ops.batch_norm_act`, one fused kernel each way.
- depthwise convolutions: oneDNN's backward costs 8-20x its forward.
  -> :func:`~sceneparse.kernels.train_ops.depthwise_conv2d` while gradients are needed.
- the loss on full-resolution logits: upsampling, a layout copy, log-softmax and their backward, all on
  ``(N, K, H, W)`` tensors. -> the model returns logits at its own resolution in training and the loss
  upsamples them fused with the cross-entropy (:func:`~sceneparse.kernels.train_ops.upsample_cross_entropy`).
- every large tensor freshly mapped from the kernel (glibc returns big blocks at each free: 0.3-0.9 M
  page faults per step) -> :func:`keep_freed_memory` (not with autocast, see :func:`enable`).

Each replacement computes the same values as the PyTorch operators (tested, float32 rounding) and falls
back to them wherever it does not apply (eval mode, CUDA, other dtypes or layouts, no C compiler). The
weights, their names and the checkpoints are unchanged: only ``forward`` methods are swapped.
"""
from __future__ import annotations

import ctypes
import logging
import platform
from dataclasses import dataclass, field

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

_ACT_NAMES = {nn.Identity: "none", nn.ReLU: "relu", nn.ReLU6: "relu6"}


def _act_name(act: nn.Module) -> str | None:
    if type(act) in _ACT_NAMES:
        return _ACT_NAMES[type(act)]
    if type(act) is nn.Hardtanh and act.min_val == 0.0 and act.max_val == 6.0:
        return "relu6"
    return None


class _FastBatchNorm:
    """Mixed in front of a BatchNorm class: training-mode forward through the fused kernel."""

    def forward(self, x):
        if self.training and self.track_running_stats and x.dim() == 4:
            from ..kernels.train_ops import batch_norm_act

            act = getattr(self, "_sp_act", "none")
            if self.num_batches_tracked is not None:
                factor = self.momentum
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked + 1)
                y = batch_norm_act(x, self.weight, self.bias, self.running_mean, self.running_var, factor, self.eps,
                                   act)
                if y is not None:
                    self.num_batches_tracked.add_(1)
                    return y
        return super().forward(x.to(self.weight.dtype) if self.weight is not None else x)


class _FastDepthwise:
    """Mixed in front of ``nn.Conv2d`` with ``groups == channels``: native kernels while gradients flow."""

    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            from ..kernels.train_ops import depthwise_conv2d

            y = depthwise_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
            if y is not None:
                return y
        return super().forward(x.to(self.weight.dtype))  # a bf16 activation meets float32 weights


class _Bf16Conv:
    """Mixed in front of a dense ``nn.Conv2d``: while gradients flow, the convolution (forward and both
    gradients) runs in bfloat16, as autocast would run this layer; its output stays bfloat16 when
    ``_sp_bf16_out`` (bf16 activations: the next layer reads bf16), else it is cast back to float32."""

    _sp_bf16_out = False

    def forward(self, x):
        if torch.is_grad_enabled() and x.dtype in (torch.float32, torch.bfloat16) and x.device.type == "cpu":
            b = self.bias.to(torch.bfloat16) if self.bias is not None else None
            y = self._conv_forward(x.to(torch.bfloat16), self.weight.to(torch.bfloat16), b)
            return y if self._sp_bf16_out else y.float()
        return super().forward(x.to(self.weight.dtype))


# a dense convolution runs in bf16 when its multiply-adds per pixel per activation value (in + out) reach
# this: below it, the two casts cost more than bf16 saves (e.g. EfficientNet's 16 -> 96 1x1 at 180x240)
BF16_MIN_INTENSITY = 48


def conv_intensity(m: nn.Conv2d) -> float:
    """Multiply-adds per output pixel over activation values per pixel (input + output channels)."""
    k = m.kernel_size[0] * m.kernel_size[1]
    return m.in_channels * m.out_channels * k / m.groups / (m.in_channels + m.out_channels)


def _takes_bf16_activations(model: nn.Module) -> bool:
    """Whether every module with parameters is a plain ``nn.Conv2d`` or a BatchNorm (both patched to take
    bf16 activations); parameter-free modules (activations, pooling, dropout) take bf16 anyway. A
    ``nn.Linear``, ``ConvTranspose2d`` or a Conv2d subclass would meet a bf16 input with float32 weights."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return all(type(m) is nn.Conv2d or isinstance(m, _BatchNorm) for m in model.modules()
               if next(m.parameters(recurse=False), None) is not None)


_CLASSES: dict[tuple[type, type], type] = {}


def _swap(module: nn.Module, mixin: type) -> None:
    cls = type(module)
    key = (mixin, cls)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{cls.__name__}{mixin.__name__}", (mixin, cls), {"_sp_original": cls})
    module.__class__ = _CLASSES[key]


def _is_depthwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels == m.out_channels
            and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def patch_model(model: nn.Module, bf16_convs: bool = False, bf16_activations: bool = False) -> dict[str, int]:
    """Swap the ``forward`` of every BatchNorm (with its ReLU / ReLU6 when timm's ``BatchNormAct2d`` holds
    one) and every depthwise convolution of ``model`` for the native kernels' (in place; parameters,
    buffers and state-dict keys unchanged); with ``bf16_convs`` also run the dense convolutions of at
    least :data:`BF16_MIN_INTENSITY` in bfloat16 while training; with ``bf16_activations`` run every
    non-depthwise convolution in bfloat16 and keep its output in bfloat16, so that activations between layers
    are bfloat16 (half the memory traffic of the BN and depthwise kernels, which read and write bfloat16 and
    compute in float32). Idempotent; :func:`unpatch_model` undoes it.

    Returns:
        how many modules of each kind were patched: ``{"batch_norm": .., "batch_norm_act": ..,
        "depthwise_conv": .., "bf16_conv": ..}``.
    """
    counts = {"batch_norm": 0, "batch_norm_act": 0, "depthwise_conv": 0, "bf16_conv": 0}
    for m in model.modules():
        if hasattr(m, "_sp_original"):
            continue
        if isinstance(m, nn.BatchNorm2d) and not isinstance(m, nn.SyncBatchNorm):
            act = "none"
            if hasattr(m, "act") and hasattr(m, "drop"):  # timm BatchNormAct2d: BN -> drop -> act
                if not isinstance(m.drop, nn.Identity) or _act_name(m.act) is None:
                    continue
                act = _act_name(m.act)
            m._sp_act = act
            _swap(m, _FastBatchNorm)
            counts["batch_norm_act" if act != "none" else "batch_norm"] += 1
        elif _is_depthwise(m):
            _swap(m, _FastDepthwise)
            counts["depthwise_conv"] += 1
        elif type(m) is nn.Conv2d and (bf16_activations or bf16_convs and m.groups == 1
                                       and conv_intensity(m) >= BF16_MIN_INTENSITY):
            _swap(m, _Bf16Conv)
            m._sp_bf16_out = bool(bf16_activations)
            counts["bf16_conv"] += 1
    return counts


def unpatch_model(model: nn.Module) -> None:
    """Restore the original classes of the modules :func:`patch_model` swapped (and remove the float32
    output hook :func:`enable` puts on the last module with bf16 activations: a backbone or a decoder, and the
    bf16 attention products it sets)."""
    for m in model.modules():
        original = type(m).__dict__.get("_sp_original")
        if original is not None:
            m.__class__ = original
        hook = m.__dict__.pop("_sp_float_out", None)
        if hook is not None:
            hook.remove()
        if m.__dict__.get("matmul_dtype") is not None:  # the pyramid's attention products (enable)
            m.matmul_dtype = None
        if m.__dict__.get("fused_upsample_loss"):  # the pyramid's fused finest-level CE (enable)
            m.fused_upsample_loss = False


def _float32_outputs(module, args, output):
    """Forward hook: the bf16 tensors of ``output`` (a tensor, or lists / tuples / dicts of them) as float32
    (a differentiable cast: the gradient flows back in bf16)."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.dtype == torch.bfloat16 else output
    if isinstance(output, (list, tuple)):
        return type(output)(_float32_outputs(module, args, o) for o in output)
    if isinstance(output, dict):
        return {k: _float32_outputs(module, args, v) for k, v in output.items()}
    return output


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in the process instead of unmapping it (``mallopt``: no mmap
    for large blocks, trim only above 2 GiB of free memory), so a training step reuses the pages of the
    previous one instead of faulting in fresh ones. Process-wide, for the process's lifetime. Returns
    whether it was applied (glibc on Linux only)."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                    and libc.mallopt(_M_TOP_PAD, 256 << 20))
    except (OSError, AttributeError):
        return False


@dataclass
class FastPlan:
    """What ``train.fast`` switched on for this run (logged at the start, stored in the benchmark JSON)."""
    kernels: bool = False  # native BatchNorm(+act) / depthwise kernels
    bf16_convs: bool = False  # dense convolutions in bf16 (the fast path's bf16 precision, replaces autocast)
    bf16_activations: bool = False  # ... and bf16 activations between layers (encoder-decoder models)
    bf16_backbone_activations: bool = False  # ... only inside the backbone (other heads: the pyramid output)
    bf16_decoder: bool = False  # ... and inside the pyramid output's fusion decoder
    bf16_attention: bool = False  # the pyramid output's attention products in bf16
    bf16_decoder_out: bool = False  # ... and the decoder's output handed to the heads' first convolutions in bf16
    fused_loss: bool = False  # low-resolution training logits, upsampling fused with the CE
    allocator: bool = False  # keep_freed_memory()
    patched: dict = field(default_factory=dict)
    reason: str = ""

    def describe(self) -> str:
        if not (self.kernels or self.fused_loss or self.allocator):
            return f"train.fast: off ({self.reason})"
        on = [n for n, v in (("native BN+act / depthwise kernels", self.kernels),
                             ("bf16 convolutions and activations", self.bf16_activations),
                             ("bf16 backbone" + (" and decoder" if self.bf16_decoder else "")
                              + " activations, bf16 dense convolutions in the head", self.bf16_backbone_activations),
                             ("bf16 decoder output into the heads", self.bf16_decoder_out),
                             ("bf16 attention products", self.bf16_attention),
                             ("bf16 dense convolutions", self.bf16_convs and not self.bf16_activations
                              and not self.bf16_backbone_activations),
                             ("upsampling fused with the CE", self.fused_loss),
                             ("freed memory kept", self.allocator)) if v]
        counts = ", ".join(f"{v} {k}" for k, v in self.patched.items() if v)
        return f"train.fast: {'; '.join(on)}" + (f" ({counts})" if counts else "")


def enable(model: nn.Module, criterion, device: torch.device, mode="auto", upsample_logits: bool = True,
           bf16: bool = False) -> FastPlan:
    """Apply ``train.fast`` to a model about to be trained and its ``SegLoss``.

    ``mode``: ``"auto"`` / ``True`` switch on what applies on this device (on CUDA nothing does), ``False``
    nothing. The fused loss needs a model that can return low-resolution training logits
    (``set_train_logit_upsampling``) and a plain CE (no OHEM / class weights), with
    ``train.upsample_logits=true`` (the paper protocol). ``bf16``: the run's precision is bf16, which the
    fast path implements instead of autocast (``plan.bf16_convs``): convolutions in bf16 and, for backbone +
    decode-head models, bf16 activations through our kernels (``plan.bf16_activations``); elsewhere
    float32 activations with the dense convolutions of high arithmetic intensity in bf16. Without the
    kernels the caller keeps autocast.
    """
    from ..kernels import native, train_ops

    plan = FastPlan()
    if mode is False or str(mode).lower() in ("false", "off", "0"):
        plan.reason = "train.fast=false"
        return plan
    if device.type != "cpu":
        plan.reason = f"no native kernels on {device.type}"
        return plan
    if train_ops.load() is None or native.load() is None:
        plan.reason = f"native kernels unavailable: {train_ops.error() or native.error() or 'SCENEPARSE_NATIVE=0'}"
        log.warning("%s; training runs PyTorch's kernels", plan.reason)
    else:
        from ..models.segmentor import SegmentationModel

        # bf16 activations only where every layer is a convolution / BN / pooling / interpolation the kernels
        # or PyTorch take in bf16 (backbone + decode head models); elsewhere (refinement cascades, the pyramid
        # head's attention) bf16 stays inside the dense convolutions
        acts = bf16 and isinstance(model, SegmentationModel) and _takes_bf16_activations(model)
        backbone = getattr(model, "backbone", None)
        if bf16 and not acts and isinstance(backbone, nn.Module) and _takes_bf16_activations(backbone):
            # another head (the pyramid output's): bf16 activations inside the backbone and, when it too is
            # made of convolutions and BNs only, the decoder that reads the backbone's features (the pyramid
            # output's fusion decoder: its stride-4 tensors are the step's largest); float32 out of the last
            # of them (or bf16 straight into the convolutions that read it), bf16 inside the remaining head's
            # dense convolutions and attention products only
            from ..models.pyramid.model import ContextAggregation, PyramidOutputModel

            island = [backbone]
            decoder = getattr(model, "decoder", None)  # the pyramid output's decoder is the backbone's only reader
            if (isinstance(model, PyramidOutputModel) and isinstance(decoder, nn.Module)
                    and _takes_bf16_activations(decoder)):
                island.append(decoder)
                plan.bf16_decoder = True
            plan.patched = {}
            for part in island:
                done = patch_model(part, bf16_activations=True)
                plan.patched = {k: v + plan.patched.get(k, 0) for k, v in done.items()}
            rest = patch_model(model, bf16_convs=True)  # the head: bf16 inside its dense convolutions only
            for m in model.modules():  # the context aggregations' attention products too (softmax in float32)
                if isinstance(m, ContextAggregation):
                    m.matmul_dtype = torch.bfloat16
                    plan.bf16_attention = True
            plan.patched = {k: v + rest[k] for k, v in plan.patched.items()}
            readers = model.decoder_readers() if plan.bf16_decoder else []
            if readers and all(type(r) is nn.Conv2d or isinstance(r, _Bf16Conv) for r in readers):
                for r in readers:  # they take the decoder's bf16 output as it is: no float32 copy and back
                    if not isinstance(r, _Bf16Conv):
                        _swap(r, _Bf16Conv)
                        plan.patched["bf16_conv"] += 1
                plan.bf16_decoder_out = True
            else:
                island[-1]._sp_float_out = island[-1].register_forward_hook(_float32_outputs)
            if isinstance(model, PyramidOutputModel) and model.finest_per_pixel and upsample_logits:
                model.fused_upsample_loss = True  # its own loss: the finest level's upsampling fused with the CE
                plan.fused_loss = True
            plan.bf16_backbone_activations = True
        else:
            plan.patched = patch_model(model, bf16_convs=bf16, bf16_activations=acts)
        plan.kernels, plan.bf16_convs, plan.bf16_activations = True, bf16, acts
        if upsample_logits and getattr(criterion, "supports_fused_upsample", lambda: False)():
            try:
                model.set_train_logit_upsampling(False)
            except ValueError:  # the model builds its output at the input resolution itself
                pass
            else:
                criterion.fused_upsample = True
                plan.fused_loss = True
    # never with autocast: PyTorch 2.14's CPU bf16 autocast backward read stale memory once freed blocks were
    # reused (gradients of 1e34 in the first step on AMD EPYC; fresh pages from the kernel are zero)
    if not (bf16 and not plan.bf16_convs):
        plan.allocator = keep_freed_memory()
    return plan


def _cpu_flags() -> frozenset[str]:
    from ..utils.sysinfo import all_cpu_flags

    return all_cpu_flags()


def choose_precision(device: torch.device, amp, fast) -> str:
    """``"bf16"`` or ``"fp32"`` for a CPU training step.

    ``train.amp: bf16`` / ``false`` decide. With the default (``train.amp: true``: no explicit choice) and
    ``train.fast`` on, bf16 where the CPU computes bf16 dot products natively (AMX or AVX-512-BF16): there
    the fast path's bf16 step (dense convolutions in bf16, see :func:`enable`) measured 1.2x its fp32 step
    on AMD EPYC (Zen 4; ``benchmark --train``), while autocast bf16 was no faster than fp32. Elsewhere, and
    without ``train.fast``, fp32 (autocast bf16 is slower than fp32 there)."""
    if amp == "bf16":
        return "bf16"
    if amp is False or device.type != "cpu" or fast is False:
        return "fp32"
    return "bf16" if _cpu_flags() & {"amx_bf16", "avx512_bf16"} else "fp32"
