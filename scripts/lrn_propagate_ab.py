"""LRN training step with Eq. 5's hand-written backward against autograd through the m*m shifted products (the
earlier implementation, kept here as the reference), side by side in one process, alternating step by step.
The LRN stage as the refinement rows train it: 1/8 of Table 1's width, m = 7, batch 8, 360x480, a frozen
FCN-Lite0 front (random weights: speed only), SGD step included; with the trainer's train.fast path and
precision (``fast``, what a training run does) or plain fp32 PyTorch (``fp32``).

Usage: python scripts/lrn_propagate_ab.py [fast|fp32] [STEPS=3] [OUT=results/bench/lrn_propagate_ab_<mode>_<cpu>.json]
"""
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sceneparse.models import build_model
from sceneparse.training import fast_train
from sceneparse.training.losses import SegLoss
from sceneparse.models.refine import networks
from sceneparse.utils.sysinfo import cpu_model

REPO = Path(__file__).resolve().parents[1]


def propagate_autograd(coeffs: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    m = math.isqrt(coeffs.shape[1])
    r, (h, w) = m // 2, coeffs.shape[-2:]
    padded = F.pad(conf, (r, r, r, r))
    out = torch.zeros_like(conf)
    for p in range(m * m):
        dy, dx = divmod(p, m)
        out = out + coeffs[:, p: p + 1] * padded[:, :, dy: dy + h, dx: dx + w]
    return out


def main(mode: str = "fast", steps: int = 3, out: str | None = None) -> int:
    torch.manual_seed(0)
    front = {"arch": "fcn", "backbone": "efficientnet_lite0", "output_stride": 16, "num_classes": 11}
    model = build_model("refine", "efficientnet_lite0", 11, 16, front=front, grn=False, lrn=True,
                        lrn_channels=(32, 32, 32, 64, 64, 64), lrn_center_bias=4.0, train_stage="lrn").train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    crit, cpu = SegLoss(aux_weight=0.0), torch.device("cpu")
    precision = "fp32"
    if mode == "fast":
        bf16 = fast_train.choose_precision(cpu, True, "auto") == "bf16"
        plan = fast_train.enable(model, crit, cpu, "auto", True, bf16=bf16)
        precision = f"{'bf16' if bf16 else 'fp32'}; {plan.describe()}"
    x, y = torch.randn(8, 3, 360, 480), torch.randint(0, 11, (8, 360, 480))
    impls = {"hand-written backward": networks.propagate, "autograd through shifted products": propagate_autograd}
    times = {k: [] for k in impls}
    original = networks.propagate
    try:
        for i in range(steps + 1):
            for name, fn in impls.items():
                networks.propagate = fn
                t = time.perf_counter()
                loss = model.loss(model(x), y, crit)[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i:  # the first round warms up
                    times[name].append(time.perf_counter() - t)
    finally:
        networks.propagate = original
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"what": "LRN stage training step (1/8 width, m=7, batch 8, 360x480, SGD), two Eq. 5 backwards",
           "precision": precision,
           "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__, "steps_s": times,
           "median_s": med, "speed-up": round(med["autograd through shifted products"] / med["hand-written backward"], 2)}
    print(json.dumps(res, indent=1))
    path = Path(out or REPO / f"results/bench/lrn_propagate_ab_{mode}_{cpu_model().split()[0].lower()}.json")
    path.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(main(a[0] if a else "fast", int(a[1]) if len(a) > 1 else 3, a[2] if len(a) > 2 else None))
