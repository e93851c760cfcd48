"""The model interface the engine relies on: every architecture of ``build_model`` is a ``SceneParser``.

The trainer, evaluator and exporters call only these methods, so they know no model family:
a new architecture overrides what differs (its loss, its frozen parts, its parameter groups).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


class SceneParser(nn.Module):
    """Base class of every sceneparse model.

    ``forward(x)``: ``(N, in_channels, H, W)`` float images -> ``{"out": (N, K, H, W) logits or
    scores}``, plus in train mode whatever the model's :meth:`loss` needs (``"aux"``, ...).
    """

    in_channels: int = 3

    @property
    def output_stride(self) -> int:
        raise NotImplementedError

    def set_output_stride(self, output_stride: int) -> None:
        """Run the same weights at another output stride (8/16/32); every strided part follows.

        Raises:
            ValueError: the model has a fixed output stride.
        """
        raise ValueError(f"{type(self).__name__} has a fixed output stride")

    def loss(self, outputs: dict, target: torch.Tensor, criterion: Callable) -> tuple[torch.Tensor, dict]:
        """Training loss of ``outputs`` (the train-mode forward) against ``target`` ``(N, H, W)`` int64.

        ``criterion`` is the configured segmentation loss (main CE + weighted auxiliary CE,
        ``training.losses.SegLoss``); a model with its own objective (the pyramidal output's Eq. 1) ignores it.
        Returns ``(total, parts)``: ``parts["loss"]`` is the main term; ``"loss_aux"`` the auxiliary
        one if any; other entries are logged as diagnostics.
        """
        return criterion(outputs, target)

    def check_criterion(self, criterion: Callable) -> None:
        """Raise ``ValueError`` (naming the config key) for a configured loss option this model's :meth:`loss`
        cannot honour; called by the trainer before the first step. Every option applies by default."""

    def param_groups(self, lr: float, head_lr_mult: float = 1.0) -> list[dict]:
        """SGD/AdamW parameter groups: the pretrained encoder (every submodule named ``backbone``)
        at ``lr``, everything else at ``lr * head_lr_mult``; frozen parameters left out. Always two
        groups (possibly empty), in that order. A randomly initialised module inside a backbone (one
        with ``new_layers = True``, e.g. DeepLabv3's cascaded block5-7) learns at the head rate."""
        ids = {id(p) for name, mod in self.named_modules() if name.rsplit(".", 1)[-1] == "backbone"
               for p in mod.parameters()}
        ids -= {id(p) for mod in self.modules() if getattr(mod, "new_layers", False) for p in mod.parameters()}
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in params if id(p) in ids], "lr": lr},
                {"params": [p for p in params if id(p) not in ids], "lr": lr * head_lr_mult}]

    def set_train_logit_upsampling(self, enabled: bool) -> None:
        """DeepLabv3 App. A "upsampling logits": ``False`` keeps training logits at feature resolution
        (the loss then downsamples the labels).

        Raises:
            ValueError: the model computes its loss at the input resolution only.
        """
        if not enabled:
            raise ValueError(f"train.upsample_logits=false is not supported by {type(self).__name__} (it "
                             "computes its loss at the input resolution); it applies to fcn, pspnet and deeplabv3")

    def set_eval_logit_upsampling(self, enabled: bool) -> bool:
        """``False``: the eval-mode ``"out"`` stays at the decode head's resolution (``H / output_stride``),
        and the caller upsamples (the inference engine does, fused with the argmax when only labels are
        wanted: no ``(N, K, H, W)`` float tensor is built). Returns whether the model supports it; a
        model that does not (its output is built at the input resolution) keeps returning full-size logits."""
        return False

    def trained_weight_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes a ``model.init_weights`` checkpoint may lack: what this run trains from
        scratch and nothing it uses frozen. Deployment checkpoints drop the auxiliary head."""
        return ("aux_head.",)

    def reference(self) -> nn.Module | None:
        """The frozen model this one refines, if any (scored next to it at step 0 and per batch)."""
        return None
