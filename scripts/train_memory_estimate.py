#!/usr/bin/env python
"""Training memory per GPU, estimated on any machine (no GPU needed) for the Scale plan in the README:
activation memory = bytes of the distinct tensors autograd saves for backward in one training forward
pass (fp32, per image), plus parameters, gradients and SGD momentum (3 x fp32 parameters).
Usage: python scripts/train_memory_estimate.py pspnet resnet101 769 150   (arch, backbone, crop, classes)"""
import sys

import torch

from sceneparse import build_model
from sceneparse.training.losses import SegLoss

arch, backbone, crop, classes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
model = build_model(arch, backbone, classes, output_stride=8, pretrained=None).train()
seen, total = set(), [0]


def pack(t):
    key = (t.untyped_storage().data_ptr(), t.dtype)
    if key not in seen:
        seen.add(key)
        total[0] += t.untyped_storage().nbytes()
    return t


n = 2  # train-mode BN on the 1x1 pyramid bin needs more than one value per channel
x = torch.randn(n, 3, crop, crop)
y = torch.randint(0, classes, (n, crop, crop))
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    out = model(x)
    loss, _ = SegLoss(aux_weight=0.4)(out, y)
params = sum(p.numel() for p in model.parameters())
act = total[0] / n / 2**30
state = 3 * 4 * params / 2**30
print(f"{arch}-{backbone} OS8, {crop}x{crop}, {classes} classes, train mode")
print(f"parameters {params / 1e6:.1f} M -> weights + grads + momentum {state:.2f} GiB")
print(f"activations saved for backward, fp32: {act:.2f} GiB per image")
for b in (1, 2, 4):
    print(f"  {b} image(s)/GPU: ~{state + b * act:.1f} GiB fp32, ~{state + b * act / 2:.1f} GiB with fp16 "
          f"autocast (activations halved; excludes the allocator's cache and cuDNN workspace)")
