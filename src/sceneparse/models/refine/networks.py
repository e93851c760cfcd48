"""GRN and LRN refinement networks (Zhang et al., "Global-residual and Local-boundary Refinement
Networks for Rectifying Scene Parsing Predictions", IJCAI 2017).

Both take the original image scaled to [0, 1] (RGB / 255) and the front model's confidence maps
``u`` (logits, ``(N, K, H, W)``), normalised by a softmax over classes (Eq. 1).

- ``LRN`` (Sec. 3.2, Table 1): 7 conv3x3 layers (256, 256, 256, 512, 512, 512, m*m), BN + ReLU
  after all but the last, no pooling or stride; a softmax over the m*m outputs per pixel gives
  propagation coefficients (Eq. 4); the refined confidence is ``g_i = sum_p w_i^p f_i^p`` with
  coefficients shared across classes (Eq. 5).
- ``GRN`` (Sec. 3.1, Fig. 2): a deep network of the front model's architecture predicting a
  residual added to the confidences, applied N times with shared weights (iterative refinement).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import IMAGENET_MEAN, IMAGENET_STD


def unnormalize(image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Normalised image ``(N, 3, H, W)`` back to RGB / 255 in [0, 1] (the refinement nets' input)."""
    m = image.new_tensor(mean)[:, None, None]
    s = image.new_tensor(std)[:, None, None]
    return image * s + m


def _propagate_forward(coeffs: torch.Tensor, padded: torch.Tensor, m: int) -> torch.Tensor:
    n, mm, h, w = coeffs.shape
    out = torch.zeros(padded.shape[:2] + (h, w), dtype=torch.promote_types(coeffs.dtype, padded.dtype),
                      device=padded.device)
    for p in range(mm):  # one in-place multiply-add per neighbour: no per-neighbour temporaries
        dy, dx = divmod(p, m)
        out.addcmul_(coeffs[:, p: p + 1], padded[:, :, dy: dy + h, dx: dx + w])
    return out


class _Propagate(torch.autograd.Function):
    """Eq. 5 with a hand-written backward. Autograd through the m*m shifted products keeps one graph node
    per neighbour and, for each, a zero-filled gradient of the whole coefficient tensor (slice backward).
    Eq. 5 alone at 8 x 360 x 480, m = 7, forward + backward: 8 s that way, 0.5 s here; a whole LRN training
    step: 1.19x (fast bf16) to 1.43x (fp32), 2 AMD EPYC cores (``scripts/lrn_propagate_ab.py``)."""

    @staticmethod
    def forward(ctx, coeffs: torch.Tensor, conf: torch.Tensor, m: int) -> torch.Tensor:
        r = m // 2
        padded = F.pad(conf, (r, r, r, r))
        ctx.save_for_backward(coeffs, padded)
        ctx.m = m
        return _propagate_forward(coeffs, padded, m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        coeffs, padded = ctx.saved_tensors
        m, (n, mm, h, w) = ctx.m, coeffs.shape
        r = m // 2
        grad = grad.contiguous()
        grad_coeffs = grad_conf = None
        if ctx.needs_input_grad[0]:  # dL/dc_p = sum_k dL/dg_k * f_k(i + offset_p)
            gc = torch.empty((n, mm, h, w), dtype=grad.dtype, device=grad.device)
            for p in range(mm):
                dy, dx = divmod(p, m)
                torch.sum(grad * padded[:, :, dy: dy + h, dx: dx + w], dim=1, out=gc[:, p])
            grad_coeffs = gc.to(coeffs.dtype)
        if ctx.needs_input_grad[1]:  # dL/df(j) = sum_p c_p(j - offset_p) * dL/dg(j - offset_p)
            gp = torch.zeros(padded.shape, dtype=grad.dtype, device=grad.device)
            for p in range(mm):
                dy, dx = divmod(p, m)
                gp[:, :, dy: dy + h, dx: dx + w].addcmul_(grad, coeffs[:, p: p + 1])
            grad_conf = gp[:, :, r: r + h, r: r + w].to(padded.dtype)
        return grad_coeffs, grad_conf, None


def propagate(coeffs: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``g[n, k, i] = sum_p coeffs[n, p, i] * conf[n, k, i + offset_p]``.

    Args:
        coeffs: ``(N, m*m, H, W)`` propagation coefficients (row-major m x m neighbourhood,
            p = (m*m + 1) / 2 - 1 is the centre).
        conf: ``(N, K, H, W)`` confidences f; neighbours outside the image count as 0.

    Returns:
        ``(N, K, H, W)`` in the promoted dtype of the two inputs. Computed as m*m shifted multiply-adds, so
        memory stays O(N K H W) instead of the O(N K m^2 H W) of an unfold-based implementation; when a
        gradient is needed, a hand-written backward does the same (see ``_Propagate``).

    Raises:
        ValueError: ``coeffs`` does not have m*m channels with odd m, or the shapes do not match.
    """
    n, mm, h, w = coeffs.shape
    m = math.isqrt(mm)
    if m * m != mm or m % 2 == 0:
        raise ValueError(f"coeffs must have m*m channels with odd m, got {mm}")
    if conf.shape[0] != n or conf.shape[-2:] != (h, w):
        raise ValueError(f"coeffs {tuple(coeffs.shape)} and conf {tuple(conf.shape)} do not match")
    if torch.is_grad_enabled() and (coeffs.requires_grad or conf.requires_grad):
        return _Propagate.apply(coeffs, conf, m)
    r = m // 2
    return _propagate_forward(coeffs, F.pad(conf, (r, r, r, r)), m)


def identity_init_coefficients(center_bias: float, m: int = 7) -> tuple[float, float]:
    """The propagation coefficients (Eq. 4) of an untrained LRN (Eq. 6): ``(w_centre, w_neighbour)``.

    With every kernel near zero the last layer's logits are its biases, so the softmax gives the
    centre ``e^b / (e^b + m*m - 1)`` and each neighbour ``1 / (e^b + m*m - 1)``. The gradient of the
    loss with respect to a neighbour's logit is ``w_p (dL/dw_p - sum_t w_t dL/dw_t)``: it scales with
    ``w_neighbour``, while the untrained LRN moves a confidence by ``1 - w_centre`` times the local
    mean difference. For m = 7: b = 1 (the literal Eq. 6) gives (0.054, 0.020), a near box filter;
    b = 4: (0.53, 0.0097); b = 6: (0.89, 0.0022); b = 12: (0.9997, 6e-6), an identity whose
    neighbours barely train.
    """
    if m < 1 or m % 2 == 0:
        raise ValueError(f"m must be odd and >= 1, got {m}")
    denom = math.exp(center_bias) + m * m - 1
    return math.exp(center_bias) / denom, 1.0 / denom


class LRN(nn.Module):
    """Local-boundary Refinement Network (Sec. 3.2, Table 1, Eqs. 4-6).

    Args:
        num_classes: K.
        m: neighbourhood size (odd; 7 in the paper).
        channels: the 7 layers' output channels before the last (Table 1).
        init_eps: std of the small random kernels of the identity initialisation (Eq. 6 uses a
            constant epsilon; a constant would make all channels identical, so we draw small
            random values of that magnitude).
        center_bias: last-layer bias at the centre neighbour (Eq. 6 sets 1). With the softmax of
            Eq. 4, a bias of 1 gives the centre only e/(e + m*m - 1) (0.054 for m=7): an untrained
            LRN is then close to a uniform m x m box filter, not the identity. The default 12
            gives the centre weight 1 - 48 e^-12 = 0.9997, so an untrained LRN returns its input up
            to ~3e-4 -- the intent of Eq. 6, but its neighbours' gradients are ~6e-6 of the centre's
            scale (``identity_init_coefficients``). Pass ``center_bias=1.0`` for the literal equation.

    ``forward(image01, logits)`` takes the image as RGB / 255 ``(N, 3, H, W)`` and the front
    confidences ``(N, K, H, W)``; returns ``(refined, coeffs)`` where ``refined`` is Eq. 5 applied
    to the front confidences ``f`` (the logits, so the output is again a logit map usable by CE
    and by a following model) and ``coeffs`` ``(N, m*m, H, W)`` sums to 1 per pixel.
    """

    def __init__(self, num_classes: int, m: int = 7, channels: Sequence[int] = (256, 256, 256, 512, 512, 512),
                 init_eps: float = 1e-3, center_bias: float = 12.0):
        super().__init__()
        if m < 1 or m % 2 == 0:
            raise ValueError(f"m must be odd and >= 1, got {m}")
        self.num_classes, self.m = num_classes, m
        layers, c_in = [], num_classes + 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.coeff = nn.Conv2d(c_in, m * m, 3, padding=1)
        self.reset_identity(init_eps, center_bias)

    @torch.no_grad()
    def reset_identity(self, init_eps: float = 1e-3, center_bias: float = 12.0) -> None:
        """Eq. 6: small kernels, zero biases, last-layer bias ``center_bias`` at the centre."""
        for conv in [mod for mod in self.modules() if isinstance(mod, nn.Conv2d)]:
            nn.init.normal_(conv.weight, std=init_eps)
            nn.init.zeros_(conv.bias)
        self.coeff.bias[(self.m * self.m) // 2] = center_bias

    def coefficients(self, image01: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image01, logits.softmax(1)], dim=1)  # Eq. 1 normalisation of the confidences
        return self.coeff(self.features(x)).softmax(1)  # Eq. 4

    def forward(self, image01: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coeffs = self.coefficients(image01, logits)
        return propagate(coeffs, logits), coeffs


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """Eq. 2 as printed: ``T_l = [T_{l-1} + (k_l - 1)] * s_l`` with ``T_0 = 1``; ``layers`` = [(k, s), ...]."""
    t = 1
    for k, s in layers:
        t = (t + (k - 1)) * s
    return t


def iterated_receptive_field(t_single: int, iterations: int) -> int:
    """Eq. 3: receptive field after n weight-shared GRN iterations, ``(T_L - 1) * n + 1``."""
    return (t_single - 1) * iterations + 1


class GRN(nn.Module):
    """Global-residual Refinement Network (Sec. 3.1, Fig. 2).

    Args:
        net: a segmentation model of the front model's architecture built for K classes whose
            first convolution reads 3 channels; it is widened to 3 + K input channels: the
            RGB weights are kept (pretrained when available) and the K new input channels start
            from random weights at the RGB weights' scale (``confidence_init_std``). Its ``"out"`` is
            the residual.
        num_classes: K.
        iterations: N weight-shared refinement steps (default 3).
        zero_init: zero the last layer (``net.decode_head.classifier``) so that an untrained GRN
            predicts a zero residual and returns the front confidences unchanged; training then
            starts from the front's accuracy instead of a random perturbation of it (our choice:
            the paper does not say how the residual branch is initialised).
        confidence_init_std: standard deviation of the random weights of the K new input channels
            (the confidences). ``None`` (default): the root mean square of the RGB weights of the
            same convolution, so that the GRN reads the front's confidences about as strongly as the
            image (our choice: Sec. 3.1 matches the two inputs' amplitudes, RGB / 255 and softmax, and
            says only that these weights start random). A small scale leaves the confidences almost
            unread: the pretrained EfficientNet-Lite0 stem's RGB weights have an rms of 0.77, and a GRN
            trained from std 0.01 (20 epochs on CamVid) kept them at 0.01-0.014 and its residual changed
            by only 15% when the front's confidences were replaced by uniform ones.

    Raises:
        ValueError: ``iterations`` < 1 or a negative ``confidence_init_std``.

    ``forward(image01, logits)`` returns ``{"out": u_N, "residual": r_N, "steps": [u_1..u_N],
    "residuals": [r_1..r_N]}``
    where ``u_n = u_{n-1} + net([image01, softmax(u_{n-1})])`` and ``u_0`` = front logits.
    The RGB channels are fed as RGB/255 as the paper says; the ImageNet normalisation the
    pretrained weights expect is applied inside (``(x - mean) / std`` on those 3 channels only).
    """

    def __init__(self, net: nn.Module, num_classes: int, iterations: int = 3,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, zero_init: bool = True,
                 confidence_init_std: float | None = None):
        super().__init__()
        if iterations < 1:
            raise ValueError("iterations must be >= 1")
        if confidence_init_std is not None and (isinstance(confidence_init_std, bool)
                                                or not isinstance(confidence_init_std, (int, float))
                                                or not math.isfinite(confidence_init_std) or confidence_init_std < 0):
            raise ValueError(f"confidence_init_std must be >= 0 (or None: the RGB weights' scale), got {confidence_init_std}")
        self.net, self.num_classes, self.iterations = net, num_classes, iterations
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        _widen_first_conv(net, num_classes, confidence_init_std)
        last = getattr(getattr(net, "decode_head", None), "classifier", None)
        if zero_init and isinstance(last, nn.Conv2d):
            with torch.no_grad():
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()

    def step(self, image01: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        rgb = (image01 - self.mean) / self.std
        return self.net(torch.cat([rgb, logits.softmax(1)], dim=1))["out"]

    def forward(self, image01: torch.Tensor, logits: torch.Tensor) -> dict:
        u, steps, residuals = logits, [], []
        for _ in range(self.iterations):
            r = self.step(image01, u)
            u = u + r
            steps.append(u)
            residuals.append(r)
        return {"out": u, "residual": residuals[-1], "steps": steps, "residuals": residuals}


def _widen_first_conv(net: nn.Module, extra: int, std: float | None = None) -> None:
    """Replace the first 3-channel Conv2d of ``net`` by one reading ``3 + extra`` channels: the RGB weights
    kept, the ``extra`` new ones normal with standard deviation ``std`` (``None``: the RGB weights' rms)."""
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                new = nn.Conv2d(3 + extra, child.out_channels, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups, child.bias is not None)
                with torch.no_grad():
                    new.weight[:, :3] = child.weight
                    scale = child.weight.pow(2).mean().sqrt().item() if std is None else std
                    nn.init.normal_(new.weight[:, 3:], std=scale)
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, name, new)
                if hasattr(net, "in_channels"):
                    net.in_channels = 3 + extra
                return
    raise ValueError("no 3-channel input convolution found to widen")


class ContextModule(nn.Module):
    """Yu & Koltun (ICLR 2016) basic context module on the front's class scores: the baseline
    "+context module" (MS-Dilation) of the GRN/LRN paper's Table 2.

    Layers (their Table 1, basic): 3x3 convs with dilations 1, 1, 2, 4, 8, 16, 1 (K -> K channels
    each; ``width`` > 1 widens every layer to ``width`` x K, a simplification of their "large"
    module, whose widths grow from 2K to 32K), ReLU after each, then a 1x1 conv back to K.
    Their identity initialisation (Sec. 3) is kept for the dilated stack. Two choices of ours make
    the module safe to train after a good front (measured, README "Table 2"):

    - **residual on the logits**: ``out = logits + final(body(logits))``. An earlier version took
      the softmax in and returned ``log(clamp(...))``: the CE gradient then scales as 1/q on
      confident errors (initial gradient norm 12.2 against 0.39 here), and one SGD step at lr 0.01
      destroyed the identity start (val mIoU 61.8 -> 46.0 in 40 steps).
    - ``final`` starts at **zero**, so an untrained module returns the front's logits exactly and
      its first gradients are the bounded ``softmax - onehot`` of the CE.

    Yu & Koltun run the module on the front-end's output at the front-end's feature resolution;
    ``RefinementCascade`` feeds it the front's logits at its output stride (e.g. 23 x 30 for a
    360 x 480 image at OS16) and upsamples the residual. Their final 1x1 is identity-initialised and
    not residual (an untrained module returns ReLU(x)); ours returns x. The dilations are in feature
    pixels and are not rescaled when the cascade is switched to another output stride.

    ``forward(image01, logits)`` -> ``(refined_logits, None)`` (same interface as ``LRN``; the image
    is not used); ``logits`` ``(N, K, h, w)`` float, any h, w.
    """

    DILATIONS = (1, 1, 2, 4, 8, 16, 1)
    native_resolution = True  # the cascade passes the front's logits at its output stride

    def __init__(self, num_classes: int, width: int = 1):
        super().__init__()
        c = num_classes * width
        layers, c_in = [], num_classes
        for d in self.DILATIONS:
            layers += [nn.Conv2d(c_in, c, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.final = nn.Conv2d(c, num_classes, 1)
        self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        """Dilated stack: identity kernels (Yu & Koltun Sec. 3), zero biases; ``final``: zero."""
        for conv in [m for m in self.body if isinstance(m, nn.Conv2d)]:
            conv.weight.zero_()
            conv.bias.zero_()
            k = conv.kernel_size[0] // 2
            for i in range(conv.out_channels):
                conv.weight[i, i % conv.in_channels, k, k] = 1.0
        self.final.weight.zero_()
        self.final.bias.zero_()

    def residual(self, logits: torch.Tensor) -> torch.Tensor:
        return self.final(self.body(logits))

    def forward(self, image01: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        return logits + self.residual(logits), None
