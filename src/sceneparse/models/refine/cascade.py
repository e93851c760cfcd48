"""Front -> GRN -> LRN refinement cascade (GRN/LRN paper Sec. 3.3, Fig. 4), trained stage by stage.

``RefinementCascade`` wraps a trained front model (any sceneparse model: FCN, PSPNet, DeepLabv3)
with a GRN and/or an LRN. The front is always frozen (eval mode, no gradients). The stage being
trained is given by ``train_stage``:

- ``"grn"``: front frozen, GRN trained; the training output carries ``"aux"`` = the GRN residual,
  so the standard loss gives CE(front + residual) + w * CE(residual) (Sec. 3.1's auxiliary loss).
  With ``supervise_steps="all"`` every unfolded iteration V_1..V_N of Fig. 2 gets that loss
  (``CE(u_n) + w * CE(r_n)``, averaged over n); ``"last"`` supervises u_N and r_N only.
- ``"lrn"``: front and GRN frozen, LRN trained.

``fusion="parallel"`` averages the GRN and LRN logits (Sec. 3.3: the "parallel pipeline which combines the two
refinement results by average fusion", which the paper says the cascade outperforms; it gives no number).

A local module with ``native_resolution = True`` (the Yu & Koltun context module) runs on the
front's logits at the front's output stride, as in Yu & Koltun; its residual is upsampled
(bilinear) to the input size and added to the full-resolution logits.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import IMAGENET_MEAN, IMAGENET_STD
from ..base import SceneParser
from ..registry import ARCHS, build_model, register_arch
from .networks import GRN, LRN, ContextModule, unnormalize


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


class RefinementCascade(SceneParser):
    """Args:
        front: trained segmentation model returning ``{"out": logits}`` at the input size.
        grn, lrn: refinement networks (either may be None).
        fusion: ``"cascade"`` (front -> GRN -> LRN) or ``"parallel"`` (mean of GRN(front) and LRN(front)).
        train_stage: ``"grn"``, ``"lrn"`` or None (nothing trainable: evaluation of a finished cascade).
        supervise_steps: ``"last"`` (the last GRN iteration's output and residual) or ``"all"`` (every
            unfolded iteration, Fig. 2; the loss is the mean over iterations, so its scale, and so the
            meaning of the learning rate, is that of ``"last"``). Cascade fusion only.
        mean, std: the normalisation of the images this model receives (undone for GRN/LRN input).

    ``forward(x)`` with ``x`` ``(N, 3, H, W)`` normalised returns ``{"out": (N, K, H, W) logits}``;
    in train mode also ``"front"`` (the frozen front's logits, for the diagnostic "front loss on the
    same batch" the trainer logs) and, at stage ``"grn"``, ``"aux"`` (the last GRN residual).
    """

    def __init__(self, front: nn.Module, grn: GRN | None = None, lrn: LRN | None = None, fusion: str = "cascade",
                 train_stage: str | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, supervise_steps: str = "last"):
        super().__init__()
        if supervise_steps not in ("last", "all"):
            raise ValueError(f"supervise_steps must be 'last' or 'all', got {supervise_steps!r}")
        if supervise_steps == "all" and (grn is None or fusion != "cascade"):
            raise ValueError("supervise_steps='all' supervises the GRN's iterations: it needs a GRN and cascade fusion")
        self.supervise_steps = supervise_steps
        if grn is None and lrn is None:
            raise ValueError("a refinement cascade needs a GRN, an LRN or both")
        if fusion not in ("cascade", "parallel"):
            raise ValueError(f"fusion must be 'cascade' or 'parallel', got {fusion!r}")
        if fusion == "parallel" and (grn is None or lrn is None):
            raise ValueError("parallel fusion needs both a GRN and an LRN")
        if train_stage not in (None, "grn", "lrn"):
            raise ValueError(f"train_stage must be None, 'grn' or 'lrn', got {train_stage!r}")
        if (train_stage == "grn" and grn is None) or (train_stage == "lrn" and lrn is None):
            raise ValueError(f"train_stage {train_stage!r} but that network is not in the cascade")
        self.front, self.grn, self.lrn = front, grn, lrn
        self.fusion, self.train_stage = fusion, train_stage
        self.mean, self.std = tuple(mean), tuple(std)
        self.in_channels = 3
        _freeze(self.front)
        for name in ("grn", "lrn"):
            net = getattr(self, name)
            if net is not None and name != train_stage:
                _freeze(net)

    @property
    def output_stride(self) -> int:
        """The front's output stride (``set_output_stride`` keeps the GRN on the same one)."""
        return self.front.output_stride

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The front's input-size rule (``SegmentationModel.input_size_for``): the cascade reads its front's
        output geometry; as given for a front without one."""
        rule = getattr(self.front, "input_size_for", None)
        return (int(height), int(width)) if rule is None else rule(height, width)

    def set_output_stride(self, output_stride: int) -> None:
        """Switch every strided part (front and GRN network) to ``output_stride``; the LRN works at
        the input resolution and the context module at the front's, so they follow."""
        self.front.set_output_stride(output_stride)
        if self.grn is not None and hasattr(self.grn.net, "set_output_stride"):
            self.grn.net.set_output_stride(output_stride)

    def trained_weight_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes that an ``init_weights`` checkpoint may lack: only the stage being
        trained (a GRN or LRN that is used but neither trained nor loaded would be an error)."""
        return ("aux_head.", f"{self.train_stage}.") if self.train_stage else ("aux_head.",)

    def reference(self) -> nn.Module:
        return self.front

    def loss(self, outputs: dict, target: torch.Tensor, criterion) -> tuple[torch.Tensor, dict]:
        """The configured loss of the refined output (``"aux"``: the GRN residual, Sec. 3.1), plus the
        frozen front's loss on the same batch as the diagnostic ``loss_front``."""
        total, parts = criterion(outputs, target)
        earlier = list(zip(outputs.get("steps", []), outputs.get("residuals", [])))
        if earlier:  # supervise_steps="all": V_1..V_{N-1} too, the mean over the N unfolded iterations
            for u, r in earlier:
                total = total + criterion({"out": u, "aux": r}, target)[0]
            total = total / (len(earlier) + 1)
        if "front" in outputs:
            with torch.no_grad():
                parts["loss_front"] = criterion({"out": outputs["front"]}, target)[1]["loss"]
        return total, parts

    def _front_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Front logits at the input size and, for a backbone + decode head front, at its output
        stride (the full-size ones are their upsampling, ``SegmentationModel.upsample_logits``)."""
        front = self.front
        if hasattr(front, "decode_head") and hasattr(front, "backbone"):
            low = front.decode_head(front.backbone(x)).float()
            return self._upsample_as_front(low, x.shape[-2:]), low
        return front(x)["out"].float(), None

    def _upsample_as_front(self, t: torch.Tensor, size) -> torch.Tensor:
        """Maps at the front's output stride to ``size``, placed as the front places its own logits
        (``SegmentationModel.upsample_logits``; plain bilinear for a front without it)."""
        up = getattr(self.front, "upsample_logits", None)
        if up is None:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        return up(t, size)

    def _local(self, img: torch.Tensor, u: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        net = self.lrn
        if getattr(net, "native_resolution", False):
            if low is None:  # no native logits (a GRN ran first): average-pool the full-size ones to
                # ceil(H / stride) x ceil(W / stride) cells, close to (not exactly) the backbone's grid
                s = self.front.output_stride
                # (ceil as (n + s - 1) // s: positive floor division, which exported graphs compute alike)
                low = F.adaptive_avg_pool2d(u, ((u.shape[-2] + s - 1) // s, (u.shape[-1] + s - 1) // s))
            return u + self._upsample_as_front(net.residual(low), u.shape[-2:])
        return net(img, u)[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.front.eval()
        for name in ("grn", "lrn"):
            net = getattr(self, name)
            if net is not None and name != self.train_stage:
                net.eval()
        return self

    def _run(self, name: str, fn):
        if self.training and name == self.train_stage:
            return fn()
        with torch.no_grad():
            return fn()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            front, low = self._front_logits(x)
        img = unnormalize(x, self.mean, self.std)
        out: dict[str, torch.Tensor] = {"front": front} if self.training else {}
        if self.fusion == "parallel":
            g = self._run("grn", lambda: self.grn(img, front))
            l_ = self._run("lrn", lambda: self._local(img, front, low))
            out["out"] = (g["out"] + l_) / 2
            if self.training and self.train_stage == "grn":
                out["aux"] = g["residual"]
            return out
        u = front
        if self.grn is not None:
            g = self._run("grn", lambda: self.grn(img, u))
            u, low = g["out"], None
            if self.training and self.train_stage == "grn":
                out["aux"] = g["residual"]
                if self.supervise_steps == "all":  # the earlier unfolded iterations (loss() adds them)
                    out["steps"], out["residuals"] = g["steps"][:-1], g["residuals"][:-1]
        if self.lrn is not None:
            u = self._run("lrn", lambda: self._local(img, u, low))
        out["out"] = u
        return out


@register_arch("refine")
def build_refine(backbone: nn.Module, num_classes: int, *, front: dict, grn: bool = True, lrn: bool = True,
                  iterations: int = 3, m: int = 7, lrn_channels: Sequence[int] = (256, 256, 256, 512, 512, 512),
                  lrn_center_bias: float = 12.0, fusion: str = "cascade", train_stage: str | None = None,
                  local: str = "lrn", supervise_steps: str = "last",
                  grn_confidence_init_std: float | None = None) -> nn.Module:
    """GRN/LRN refinement (Sec. 3.3, Fig. 4) after a front model described by ``front``.

    ``front`` is the front's architecture, a dict with ``arch``, ``backbone``, ``output_stride``,
    ``num_classes`` and optionally ``head``, ``deep_stem``, ``multi_grid``, ``mean``, ``std`` (the
    :func:`sceneparse.models.factory.front_spec` makes it from a checkpoint). The front is built untrained here: its
    weights come with the refinement checkpoint (``front.*``) or, for a GRN stage, from the front's
    checkpoint (:func:`sceneparse.models.factory.build_model_from_config` loads them); this module reads no files.

    The GRN network is the front's architecture (its arch and head options) on ``backbone``
    (pass the front's backbone name for the paper's setting), with ImageNet weights when
    ``pretrained``; ``train_stage`` picks the network being trained ("grn" or "lrn").
    ``local="context"`` puts the dilated context module baseline (Yu & Koltun) in the local
    (LRN) slot, for the "+context module" row of Table 2. ``supervise_steps``: see ``RefinementCascade``.
    ``grn_confidence_init_std``: the GRN's ``confidence_init_std`` (``None``: the RGB weights' scale).

    Raises:
        ValueError: ``front`` is not such a dict (e.g. a checkpoint path given to ``build_model``
            directly), predicts another number of classes, runs at another output stride, or is a
            pyramidal output model or a cascade itself.
    """
    if not isinstance(front, dict) or not {"arch", "backbone", "output_stride", "num_classes"} <= set(front):
        raise ValueError("front must describe the front model (arch, backbone, output_stride, num_classes); "
                         "to start from a front checkpoint path use sceneparse.models.factory."
                         "build_model_from_config, which reads it")
    if int(front["num_classes"]) != num_classes:
        raise ValueError(f"front model predicts {front['num_classes']} classes, the dataset has {num_classes}")
    if front["arch"] in ("pyramid_output", "refine"):
        raise ValueError(f"a {front['arch']} model cannot be a refinement front (the front must be a single model "
                         "with one output stride: fcn, pspnet, deeplabv3, ...)")
    front_model = build_model(front["arch"], front["backbone"], num_classes, front["output_stride"],
                              deep_stem=front.get("deep_stem", False), multi_grid=front.get("multi_grid"),
                              weights_follow=True, **front.get("head", {}))
    norm = {"mean": tuple(front.get("mean", IMAGENET_MEAN)), "std": tuple(front.get("std", IMAGENET_STD))}
    grn_net = None
    if grn:
        if backbone.output_stride != front_model.output_stride:
            raise ValueError(f"model.output_stride {backbone.output_stride} differs from the front's "
                             f"({front_model.output_stride}); the GRN works at the front's stride")
        head_opts = {**front.get("head", {}), "aux_head": False}
        grn_net = GRN(ARCHS[front["arch"]](backbone, num_classes, **head_opts), num_classes, iterations, **norm,
                      confidence_init_std=grn_confidence_init_std)
    if local not in ("lrn", "context"):
        raise ValueError(f"local must be 'lrn' or 'context', got {local!r}")
    lrn_net = None
    if lrn:
        lrn_net = (LRN(num_classes, m, lrn_channels, center_bias=lrn_center_bias) if local == "lrn"
                   else ContextModule(num_classes))
    return RefinementCascade(front_model, grn_net, lrn_net, fusion=fusion, train_stage=train_stage,
                             supervise_steps=supervise_steps, **norm)
