"""bf16 training-step time of PSPNet backbones/output strides side by side (360x480, batch 8)."""
import json, statistics, time, sys
import torch
from sceneparse import build_model
from sceneparse.training.losses import SegLoss
torch.manual_seed(0)
res = {}
x = torch.randn(8, 3, 360, 480).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 11, (8, 360, 480))
crit = SegLoss()
models = {k: build_model("pspnet", b, 11, os_, pretrained=None, aux_head=True).train().to(memory_format=torch.channels_last)
          for k, (b, os_) in {"lite0_os16": ("efficientnet_lite0", 16), "lite2_os16": ("efficientnet_lite2", 16),
                              "lite0_os8": ("efficientnet_lite0", 8)}.items()}
opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
times = {k: [] for k in models}
for i in range(3):
    for k, m in models.items():
        t0 = time.perf_counter()
        opts[k].zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
        loss, _ = crit(out, y)
        loss.backward(); opts[k].step()
        if i: times[k].append(time.perf_counter() - t0)
cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
print(json.dumps({"cpu": cpu, "threads": torch.get_num_threads(), "median_s_per_step_bf16": {k: statistics.median(v) for k, v in times.items()}, "all": times}, indent=1))
