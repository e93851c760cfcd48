"""Training-step speed of fp32 vs bf16 autocast on this CPU, side by side in one process.
PSPNet-Lite0 (the packaged model's architecture), 360x480 crops, channels_last, SGD step included;
the two precisions alternate step by step so that both see the same machine state.
Usage: python scripts/train_step_speed.py [BATCH] [STEPS] [OUT.json]"""
import json
import platform
import statistics
import sys
import time

import torch

from sceneparse import build_model
from sceneparse.training.losses import SegLoss

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
out = sys.argv[3] if len(sys.argv) > 3 else "results/camvid/train_step_bf16.json"
torch.manual_seed(0)
model = build_model("pspnet", "efficientnet_lite0", 11, 16, pretrained=None).train().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
crit = SegLoss()
x = torch.randn(batch, 3, 360, 480).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 11, (batch, 360, 480))
times = {"fp32": [], "bf16": []}
for i in range(steps + 1):  # the first round warms up and is dropped
    for name in ("fp32", "bf16"):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            outputs = model(x)
        loss, _ = crit(outputs, y)
        loss.backward()
        opt.step()
        if i:
            times[name].append(time.perf_counter() - t0)
cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
med = {k: statistics.median(v) for k, v in times.items()}
res = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": batch, "size": [360, 480],
       "model": "pspnet efficientnet_lite0 OS16, channels_last", "steps_timed": steps,
       "median_s_per_step": med, "s_per_image": {k: v / batch for k, v in med.items()},
       "speedup_bf16_over_fp32": med["fp32"] / med["bf16"], "all_s": times}
print(json.dumps({k: v for k, v in res.items() if k != "all_s"}, indent=1))
with open(out, "w") as f:
    json.dump(res, f, indent=1)
