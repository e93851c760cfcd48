"""Divergence guards of the training loop: weights that turn non-finite or absurdly large."""
from __future__ import annotations

import math

import torch

# |weight| beyond this is divergence, not learning (BN makes convolutions scale-invariant, so a blow-up can
# stay finite: lr=1e30 gives finite weights of 3e31 after one step)
MAX_ABS_WEIGHT = 1e10


def weight_problem(params: list) -> str | None:
    """``None`` when every parameter is finite and below ``MAX_ABS_WEIGHT`` in magnitude, else a description."""
    if not params:
        return None
    peak = torch.stack([p.detach().abs().amax().float() for p in params]).max().item()
    if not math.isfinite(peak):
        return "hold NaN/inf"
    return f"reached |w| = {peak:.2g} (> {MAX_ABS_WEIGHT:.0e})" if peak > MAX_ABS_WEIGHT else None
