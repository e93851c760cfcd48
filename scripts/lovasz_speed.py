"""Speed of the Lovasz-softmax term, forward + backward, side by side in one process: the package's binned
steps (``sceneparse.training.losses.lovasz_softmax``) against Alg. 1 as written (a float32 sort per class),
on a batch of the size the CamVid recipes train (8 x 11 classes x 352 x 480, random logits and labels).
The two alternate call by call so that both see the same machine state; also reports how far each one's
gradient is from Alg. 1 sorted in float64, on those random logits and on confident ones (a trained model's
margins: one-hot x 12 plus unit noise).
Usage: python scripts/lovasz_speed.py [REPEATS] [OUT.json]"""
import json
import statistics
import sys
import time

import torch

from sceneparse.training.losses import lovasz_softmax, lovasz_softmax_sorted
from sceneparse.utils.sysinfo import cpu_model


repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
out = sys.argv[2] if len(sys.argv) > 2 else "results/bench/lovasz_speed.json"  # committed: lovasz_speed_<cpu>.json
torch.manual_seed(0)
shape = (8, 11, 352, 480)
logits = torch.randn(shape) * 3
target = torch.randint(0, 11, (8, 352, 480))
fns = {"alg1_sort_fp32": lovasz_softmax_sorted, "binned": lovasz_softmax}
times = {k: [] for k in fns}
for i in range(repeats + 1):  # the first round warms up and is dropped
    for name, fn in fns.items():
        x = logits.clone().requires_grad_()
        t0 = time.perf_counter()
        fn(x, target).backward()
        if i:
            times[name].append(time.perf_counter() - t0)
grad_error = {}
confident = torch.nn.functional.one_hot(target, 11).permute(0, 3, 1, 2).float() * 12 + torch.randn(shape)
for case, lg in (("random", logits), ("confident", confident)):
    ref = lg.clone().requires_grad_()
    lovasz_softmax_sorted(ref, target, dtype=torch.float64).backward()
    grad_error[case] = {}
    for name, fn in fns.items():
        x = lg.clone().requires_grad_()
        fn(x, target).backward()
        grad_error[case][name] = float((x.grad - ref.grad).norm() / ref.grad.norm())
med = {k: statistics.median(v) for k, v in times.items()}
res = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__, "shape": list(shape),
       "repeats": repeats, "median_s_forward_backward": med, "speedup": med["alg1_sort_fp32"] / med["binned"],
       "gradient_error_vs_float64_sort": grad_error,
       "all_s": times}
print(json.dumps({k: v for k, v in res.items() if k != "all_s"}, indent=1))
with open(out, "w") as f:
    json.dump(res, f, indent=1)
