"""Specialize and Fuse heads and model (Sec. 4 and 5.1.2 of the paper).

- ``FusionDecoder``: HRNet-style fusion of the four backbone stages into one stride-4 feature
  of D channels (each stage 1x1 conv-BN-ReLU, bilinear upsampling to stride 4, concat, 1x1).
- ``UnityHead`` (Sec. 4.1, Fig. 2b) -> unity pyramid, levels 1..L-1.
- ``SemanticHead`` (Sec. 4.2, Fig. 2c-e, Eqs. 3-11) -> semantic pyramid, levels 1..L, with the
  optional coarse-to-fine contextual module (CA / CU).
- ``PyramidOutputModel``: backbone + decoder + both heads; fuse (Eq. 2) at inference.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...constants import IGNORE_INDEX
from ..base import SceneParser
from ..heads import adaptive_pool2d, conv_bn_relu
from ..registry import register_arch
from .targets import (POLICIES, check_strides, finest_pixel_target, fuse, pyramid_ground_truth, pyramid_loss, relabel,
                      supervised_share)


class FusionDecoder(nn.Module):
    """Stages ``[c1..c4]`` (strides 4..32) -> ``(N, D, H/4, W/4)``."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256, branch_channels: int = 64):
        super().__init__()
        self.reduce = nn.ModuleList(conv_bn_relu(c, branch_channels, 1) for c in in_channels)
        self.fuse = conv_bn_relu(branch_channels * len(in_channels), channels, 1)
        self.out_channels = channels

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [F.interpolate(r(f), size=size, mode="bilinear", align_corners=False) if i else r(f)
               for i, (r, f) in enumerate(zip(self.reduce, feats))]
        return self.fuse(torch.cat(ups, dim=1))


def _min_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    return -F.max_pool2d(-x, k)


def _avg_pools(x: torch.Tensor, factors: Sequence[int]) -> list[torch.Tensor]:
    """``[F.avg_pool2d(x, k) for k in factors]`` (``k = 1``: ``x`` itself). While training, each pool reads the
    finest earlier one whose factor divides it (8 from 4 from 2): the same cells (floor mode keeps whole
    blocks, so ``floor(floor(n / j) / (k / j)) = floor(n / k)``), averaged in another order, and the
    backward writes one full-resolution gradient instead of one per level."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return [F.avg_pool2d(x, k) if k > 1 else x for k in factors]
    done = {1: x}
    for k in sorted(set(factors)):
        if k > 1:
            j = max(d for d in done if k % d == 0)
            done[k] = F.avg_pool2d(done[j], k // j)
    return [done[k] for k in factors]


def _pool_matrix(n: int, bins: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(sum(bins), n)``: row ``i`` of bin count ``b`` averages PyTorch's adaptive-pooling cell
    ``[floor(i n / b), ceil((i + 1) n / b))`` of a length-``n`` axis."""
    m = torch.zeros(sum(bins), n, dtype=dtype, device=device)
    r = 0
    for b in bins:
        for i in range(b):
            start, end = (i * n) // b, -((-(i + 1) * n) // b)
            m[r, start:end] = 1.0 / (end - start)
            r += 1
    return m


class UnityHead(nn.Module):
    """Sec. 4.1: ``X_u = Conv1x1(X)``; per level, centroids = shared Conv1x1(AvgPool(X_u)), nearest
    upsampled and subtracted from Conv1x1(X_u); a shared Conv1x1 + sigmoid gives each pixel's
    probability of sharing the centroid's class; min-pooling per cell gives ``U_hat`` (N, h_l, w_l).

    ``pool_factors``: cell size of levels 1..L-1 in finest-level pixels (e.g. 8, 4, 2)."""

    def __init__(self, in_channels: int, channels: int = 64, pool_factors: Sequence[int] = (8, 4, 2)):
        super().__init__()
        self.pool_factors = tuple(int(k) for k in pool_factors)
        self.reduce = nn.Conv2d(in_channels, channels, 1)
        self.centroid = nn.Conv2d(channels, channels, 1)  # shared over levels
        self.pixel = nn.Conv2d(channels, channels, 1)
        self.classify = nn.Conv2d(channels, 1, 1)  # shared over levels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xu = self.reduce(x)
        pix = self.pixel(xu)
        out = []
        for k, pooled in zip(self.pool_factors, _avg_pools(xu, self.pool_factors)):
            cent = self.centroid(pooled)
            diff = pix - F.interpolate(cent, scale_factor=k, mode="nearest")
            prob = torch.sigmoid(self.classify(diff))
            out.append(_min_pool(prob, k)[:, 0])
        return out


class PyramidPoolTokens(nn.Module):
    """Eq. 6 / 10 PyramidPool: adaptive average pools at bins (1, 3, 6, 8), flattened into
    ``(N, C, 1 + 9 + 36 + 64)`` context tokens."""

    def __init__(self, bins: Sequence[int] = (1, 3, 6, 8)):
        super().__init__()
        self.bins = tuple(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_exporting():
            return self._separable(x)
        return torch.cat([adaptive_pool2d(x, b).flatten(2) for b in self.bins], dim=2)

    def _separable(self, x: torch.Tensor) -> torch.Tensor:
        """The same tokens as two matrix products over the channels-last view (an adaptive average is separable:
        rows, then columns): while training, the backward then writes the input's gradient once instead of
        zero-filling and accumulating one full-resolution gradient per bin count."""
        n, c, h, w = x.shape
        s = sum(self.bins)
        rows = _pool_matrix(h, self.bins, x.dtype, x.device)  # (S, H)
        cols = _pool_matrix(w, self.bins, x.dtype, x.device)  # (S, W)
        y = torch.matmul(rows, x.permute(0, 2, 3, 1).reshape(n, h, w * c))  # (N, S, W*C)
        z = torch.matmul(cols, y.reshape(n * s, w, c)).reshape(n, s, s, c)  # (N, S rows, S cols, C)
        tokens, o = [], 0
        for b in self.bins:  # the diagonal blocks: bin count b along both axes, row-major as flatten(2)
            tokens.append(z[:, o:o + b, o:o + b].reshape(n, b * b, c))
            o += b
        return torch.cat(tokens, dim=1).transpose(1, 2)


def _token_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, bias=False), nn.BatchNorm1d(out_ch), nn.ReLU(inplace=True))


#: the query / key / value transforms of the context aggregation module
CONTEXT_TRANSFORMS = ("conv_bn_relu", "conv")


class ContextAggregation(nn.Module):
    """CA (Eqs. 8-9): attention from the level's features (queries) to the context tokens
    (keys / values), concatenated with the features and projected back by Conv1x1-BN-ReLU.

    ``transform``: how the features become queries and the tokens keys / values. The paper says "Conv1x1 layers"
    (Sec. 4.2), and spells out BN and ReLU where it means them (Eqs. 9 and 11), so ``"conv"``, a bare Conv1x1 with
    bias, is the literal reading (and the layout of checkpoints written before the option). Its query-key logits
    start with a standard deviation of about 0.1 (train mode, CamVid), the softmax over the 110 tokens is uniform,
    and it stayed uniform through a 20-epoch run (entropy 4.65-4.69 of 4.70): each position then reads nearly the
    same image-wide mean of the value tokens, an image-pooling branch. ``"conv_bn_relu"`` (default; our deviation):
    Conv1x1-BN-ReLU, as the query / key transforms of the attention blocks the paper builds on (HRNet-OCR's
    query, key and value; ANL's shared query-key), which starts with logits of std 0.75-1.0 and a selective softmax.

    ``matmul_dtype``: the dtype of the two attention products (default ``None``: the input's); bf16 training
    sets ``torch.bfloat16`` (as autocast would run them), the softmax stays float32."""

    def __init__(self, channels: int, key_channels: int | None = None, transform: str = "conv_bn_relu"):
        super().__init__()
        if transform not in CONTEXT_TRANSFORMS:
            raise ValueError(f"context_transform must be one of {CONTEXT_TRANSFORMS}, got {transform!r}")
        kc = key_channels or max(channels // 2, 1)
        if transform == "conv":
            self.query = nn.Conv2d(channels, kc, 1)
            self.key = nn.Conv1d(channels, kc, 1)
            self.value = nn.Conv1d(channels, channels, 1)
        else:
            self.query = conv_bn_relu(channels, kc, 1)
            self.key = _token_conv(channels, kc)
            self.value = _token_conv(channels, channels)
        self.agg = conv_bn_relu(2 * channels, channels, 1)
        self.scale = 1.0 / math.sqrt(kc)
        self.matmul_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        dt = self.matmul_dtype or x.dtype
        q = self.query(x).flatten(2).transpose(1, 2)  # (N, hw, kc)
        logits = (q.to(dt) @ self.key(theta).to(dt)).float() * self.scale  # (N, hw, T)
        attn = torch.softmax(logits, dim=-1)
        att = (attn.to(dt) @ self.value(theta).transpose(1, 2).to(dt)).to(x.dtype)
        return self.agg(torch.cat([att.transpose(1, 2).reshape(n, c, h, w), x], dim=1))


class ContextUpdate(nn.Module):
    """CU (Eqs. 10-11): pool the refined features into tokens, concat with the previous context,
    Conv1x1-BN-ReLU back to C channels (the context stays at the token resolution)."""

    def __init__(self, channels: int, bins: Sequence[int] = (1, 3, 6, 8)):
        super().__init__()
        self.pool = PyramidPoolTokens(bins)
        self.update = _token_conv(2 * channels, channels)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.update(torch.cat([self.pool(x), theta], dim=1))


class SemanticHead(nn.Module):
    """Sec. 4.2. ``X_L = Conv1x1(X)`` (D -> D_s); ``X_l = AvgPool(X_L, s_l / s_L)`` (Eq. 3: ``2^(L-l)`` for
    halving strides; ``pool_factors`` gives ``s_l / s_L`` for others, e.g. (8, 1) for strides (32, 4)); with
    ``context``, ``X'_l = CA_l(X_l, theta_{l-1})``, ``theta_l = CU_l(X'_l, theta_{l-1})``,
    ``theta_0 = PyramidPool(X_L)`` (Eqs. 4-6); ``Y_hat_l = ConvBlock_l(X'_l)`` (Eq. 7). ``context_transform``:
    the CA modules' query / key / value transforms (:class:`ContextAggregation`)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_levels: int, context: bool = True,
                 bins: Sequence[int] = (1, 3, 6, 8), dropout: float = 0.0, pool_factors: Sequence[int] | None = None,
                 context_transform: str = "conv_bn_relu"):
        super().__init__()
        self.num_levels, self.context = num_levels, context
        # cell size of each level in finest-level pixels: 2^(L-l) for halving strides, e.g. (8, 4, 2, 1)
        self.pool_factors = tuple(int(k) for k in pool_factors) if pool_factors is not None else \
            tuple(2 ** (num_levels - 1 - i) for i in range(num_levels))
        if len(self.pool_factors) != num_levels:
            raise ValueError(f"{num_levels} levels need {num_levels} pool factors, got {self.pool_factors}")
        self.proj = conv_bn_relu(in_channels, channels, 1)
        if context:
            self.pool0 = PyramidPoolTokens(bins)
            self.ca = nn.ModuleList(ContextAggregation(channels, transform=context_transform)
                                    for _ in range(num_levels))
            self.cu = nn.ModuleList(ContextUpdate(channels, bins) for _ in range(num_levels - 1))
        self.blocks = nn.ModuleList(
            nn.Sequential(conv_bn_relu(channels, channels, 1), nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
            for _ in range(num_levels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xl = self.proj(x)
        L = self.num_levels
        levels = _avg_pools(xl, self.pool_factors)
        outs = []
        theta = self.pool0(xl) if self.context else None
        for i, feat in enumerate(levels):
            if self.context:
                feat = self.ca[i](feat, theta)
                if i < L - 1:
                    theta = self.cu[i](feat, theta)
            outs.append(self.blocks[i](feat))
        return outs


class PyramidOutputModel(SceneParser):
    """Backbone + fusion decoder (stride 4, D channels) + unity and semantic pyramids.

    Args:
        strides: coarse-to-fine level strides, finest 4, e.g. (32, 16, 8, 4) (paper) or (32, 4).
            A single level ``(4,)`` is the "single output" baseline (Table 6).
        tau: unity threshold of the fuse step (Eq. 2).
        relabel_policy: "naive", "simple_fix" or "final" (Table 7).
        relabel_tau: the unity probability at which "final" counts a ground-truth unity-cell as a true
            positive in training (Sec. 3.2); None (default) uses ``tau``. The paper gives tau = 0.9 for the
            fuse step (Sec. 4) and no separate training threshold.
        context_transform: the context modules' query / key / value transforms, ``"conv_bn_relu"`` (default)
            or ``"conv"`` (checkpoints written before the option; see :class:`ContextAggregation`).
        output: ``"fuse"`` (Eq. 2) or ``"finest"`` (only the finest level: the pyramid acts as
            auxiliary supervision, Table 8).
        finest_per_pixel: supervise the finest level on every labelled pixel not done by a coarser
            level (default; our choice where the paper assumes unity finest cells). ``False`` supervises its 4x4 cells
            like the other levels, leaving mixed 4x4 cells unsupervised at every level (the old
            behaviour, kept for the ablation).

    ``forward(x)`` -> ``{"out": (N, C, H, W) scores}`` (and, in train mode or with
    ``return_pyramid``, ``"semantic"``, ``"unity"``, ``"level"``). Inputs whose H, W are not
    multiples of the coarsest stride are resized (bilinear) to the nearest multiple, as the paper
    says, and the output resized back to H x W (in eval mode the engine may do that resize, fused with
    its argmax: :meth:`set_eval_logit_upsampling`). In fuse mode ``"out"`` holds the log of the fused
    per-class probabilities (argmax = the fused label).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, strides: Sequence[int] = (32, 16, 8, 4),
                 decoder_channels: int = 256, unity_channels: int = 64, semantic_channels: int = 128,
                 context: bool = True, tau: float = 0.9, relabel_policy: str = "final", output: str = "fuse",
                 finest_per_pixel: bool = True, relabel_tau: float | None = None,
                 context_transform: str = "conv_bn_relu"):
        super().__init__()
        if relabel_tau is not None and not 0.0 < float(relabel_tau) <= 1.0:
            raise ValueError(f"relabel_tau must be in (0, 1], got {relabel_tau}")
        if relabel_tau is not None and (relabel_policy != "final" or len(tuple(strides)) < 2):
            raise ValueError(f"relabel_tau is the 'final' relabelling's threshold of a pyramid of two or more levels; "
                             f"relabel_policy={relabel_policy!r} with strides {tuple(strides)} has no use for it")
        self.relabel_tau = float(tau if relabel_tau is None else relabel_tau)
        self.finest_per_pixel = bool(finest_per_pixel)
        self.fused_upsample_loss = False  # the finest level's per-pixel CE by the native fused kernel (train.fast)
        strides = tuple(int(s) for s in strides)
        if strides[-1] != 4:
            raise ValueError(f"the finest level must have stride 4 (the decoder's), got {strides}")
        if len(strides) > 1:
            check_strides(strides)
        if output not in ("fuse", "finest"):
            raise ValueError(f"output must be 'fuse' or 'finest', got {output!r}")
        if relabel_policy not in POLICIES:
            raise ValueError(f"relabel_policy must be one of {POLICIES}, got {relabel_policy!r}")
        if context_transform not in CONTEXT_TRANSFORMS:
            raise ValueError(f"context_transform must be one of {CONTEXT_TRANSFORMS}, got {context_transform!r}")
        self.backbone, self.strides, self.tau = backbone, strides, tau
        self.relabel_policy, self.output, self.num_classes = relabel_policy, output, num_classes
        self.decoder = FusionDecoder(backbone.out_channels, decoder_channels)
        self.unity_head = UnityHead(decoder_channels, unity_channels, [s // 4 for s in strides[:-1]]) \
            if len(strides) > 1 else None
        self.semantic_head = SemanticHead(decoder_channels, semantic_channels, num_classes, len(strides), context,
                                          context_transform=context_transform,
                                          pool_factors=[s // strides[-1] for s in strides])
        self.in_channels, self.return_pyramid = 3, False
        self.upsample_eval_logits = True  # False: the engine upsamples (``set_eval_logit_upsampling``)

    @property
    def output_stride(self) -> int:
        return 4

    def set_output_stride(self, output_stride: int) -> None:
        raise ValueError("the pyramidal output model works at output stride 4 with an undilated backbone")

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` bilinearly resized to the nearest multiple of the coarsest stride (ties up, at least one
        cell); integer arithmetic only, so that ONNX export keeps H and W symbolic. While exporting or
        tracing (OpenVINO converts a TorchScript trace made at one example size) the resize is always in the
        graph (a same-size bilinear resize is the identity)."""
        s = self.strides[0]
        h, w = x.shape[-2:]
        th, tw = max(s, (h + s // 2) // s * s), max(s, (w + s // 2) // s * s)
        if not (torch.compiler.is_exporting() or torch.jit.is_tracing()) and (th, tw) == (h, w):
            return x
        return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> dict:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        size = x.shape[-2:]
        feat = self.decoder(self.backbone(self._resized(x)))
        semantic = self.semantic_head(feat)
        unity = self.unity_head(feat) if self.unity_head is not None else []
        if self.output == "fuse" and unity:
            probs, level = fuse([s.float().softmax(1) for s in semantic], unity, self.tau)
            scores = probs.clamp_min(1e-8).log()
        else:
            scores, level = semantic[-1], None
        keep = not (self.training or self.return_pyramid or self.upsample_eval_logits)
        out = {"out": scores if keep else F.interpolate(scores, size=size, mode="bilinear", align_corners=False)}
        if self.training or self.return_pyramid:
            out.update(semantic=semantic, unity=unity, level=level)
        return out

    def set_eval_logit_upsampling(self, enabled: bool) -> bool:
        """``False``: the eval-mode ``"out"`` stays at stride 4 of the (resized) input, ``(N, C, H' / 4, W' / 4)``,
        and the engine resizes it to H x W (fused with the argmax when only labels are wanted): the same
        bilinear resize the model would do. Train mode and ``return_pyramid`` keep full-size scores."""
        self.upsample_eval_logits = bool(enabled)
        return True

    def decoder_readers(self) -> list[nn.Module]:
        """The layers that read the fusion decoder's output (the semantic head's projection, the unity head's
        reduction): the training fast path hands them that output in bf16."""
        return [self.semantic_head.proj[0]] + ([self.unity_head.reduce] if self.unity_head is not None else [])

    def forward_pyramid(self, x: torch.Tensor) -> dict:
        """``forward`` with the pyramid (``"semantic"``, ``"unity"``, ``"level"``) in any mode."""
        previous, self.return_pyramid = self.return_pyramid, True
        try:
            return self(x)
        finally:
            self.return_pyramid = previous

    def check_criterion(self, criterion) -> None:
        """Eq. 1 is this model's objective: of the configured loss (``SegLoss``) it takes the class weights
        (``train.class_weighting``, per level) and, as additions outside the paper, the Dice and Lovasz-softmax
        terms of the main output (``train.dice_weight``, ``train.lovasz_weight``).

        Raises:
            ValueError: OHEM was configured (``train.ohem_thresh``: Eq. 1's per-level cross-entropies have no
                single pixel ranking to mine).
        """
        if getattr(criterion, "ohem_thresh", None) is not None:
            raise ValueError("train.ohem_thresh is not supported by the pyramidal output model (its loss is the "
                             "paper's Eq. 1; of the loss options it takes train.class_weighting, train.dice_weight "
                             "and train.lovasz_weight)")

    def loss(self, outputs: dict, target: torch.Tensor, criterion=None) -> tuple[torch.Tensor, dict]:
        """Eq. 1 with ``criterion``'s class weights, if any, plus its Dice / Lovasz-softmax terms of the main
        output ``outputs["out"]`` against ``target`` ``(N, H, W)`` (:meth:`check_criterion`,
        ``SegLoss.region_terms``); ``parts["loss_aux"]`` is the unity BCE."""
        if criterion is not None:
            self.check_criterion(criterion)
        total, parts = self.compute_loss(outputs, target, getattr(criterion, "class_weight", None))
        if "loss_unity" in parts:
            parts["loss_aux"] = parts.pop("loss_unity")
        if criterion is not None and hasattr(criterion, "region_terms"):
            extra, extra_parts = criterion.region_terms(outputs["out"], target)
            total = total + extra
            parts.update(extra_parts)
        return total, parts

    def compute_loss(self, outputs: dict, target: torch.Tensor,
                     class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Eq. 1 on the relabelled pyramidal ground truth of ``target`` ``(N, H, W)`` (``class_weight``: see
        :func:`~sceneparse.models.pyramid.targets.pyramid_loss`)."""
        h4, w4 = outputs["semantic"][-1].shape[-2:]
        size = (h4 * 4, w4 * 4)
        if target.shape[-2:] != size:
            target = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()
        if len(self.strides) == 1:
            weight = None if class_weight is None else class_weight.to(target.device, torch.float32)
            loss = F.cross_entropy(F.interpolate(outputs["semantic"][0].float(), size=size, mode="bilinear",
                                                 align_corners=False), target, weight=weight, ignore_index=IGNORE_INDEX)
            return loss, {"loss": loss.detach()}
        unity0, sem0 = pyramid_ground_truth(target, self.strides)
        unity_gt, sem_gt = relabel(unity0, sem0, self.relabel_policy, outputs["unity"], self.relabel_tau)
        if self.finest_per_pixel:  # every labelled pixel is supervised somewhere (see finest_pixel_target)
            sem_gt[-1] = finest_pixel_target(target, unity0, unity_gt, self.strides[-1])
        loss, parts = pyramid_loss(outputs["semantic"], outputs["unity"], unity_gt, sem_gt,
                                   fused_upsample=self.fused_upsample_loss, class_weight=class_weight)
        share = supervised_share(target, sem_gt, self.strides, sem_gt[-1] if self.finest_per_pixel
                                 else sem_gt[-1].repeat_interleave(4, -2).repeat_interleave(4, -1))
        parts.update({k: torch.tensor(v) for k, v in share.items()})
        return loss, parts


@register_arch("pyramid_output")
def build_pyramid_output(backbone: nn.Module, num_classes: int, *, strides: Sequence[int] = (32, 16, 8, 4),
                          decoder_channels: int = 256, unity_channels: int = 64, semantic_channels: int = 128,
                          context: bool = True, tau: float = 0.9, relabel_policy: str = "final",
                          output: str = "fuse", finest_per_pixel: bool = True,
                          relabel_tau: float | None = None, context_transform: str = "conv_bn_relu") -> nn.Module:
    """Specialize and Fuse (pyramidal output) on an undilated backbone + stride-4 fusion decoder."""
    if backbone.output_stride != 32:
        backbone.set_output_stride(32)
    return PyramidOutputModel(backbone, num_classes, strides, decoder_channels, unity_channels, semantic_channels,
                              context, tau, relabel_policy, output, finest_per_pixel, relabel_tau, context_transform)
