"""A/B of the pyramid output's attention products in bf16 vs float32 inside the fast bf16 training step
(configs/camvid/pyramid_effl0.yaml, 2 threads, the same batch, alternating, 2 warm-up rounds, 6 timed).
Writes results/bench/ab_pyramid_attention_bf16_<cpu>.json. Run on a quiet machine: python scripts/pyramid_attention_ab.py
"""
import json, statistics, sys, tempfile, time
import torch
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from sceneparse.config import load_config
from sceneparse.benchmark.train_step import _trainer, _step
from sceneparse.models.pyramid.model import ContextAggregation
from sceneparse.utils.sysinfo import cpu_model
torch.set_num_threads(2)
cfg = load_config(str(REPO / "configs/camvid/pyramid_effl0.yaml"), [f"data.root={REPO.parent / 'shared/data/camvid'}"])
with tempfile.TemporaryDirectory() as tmp:
    tr = _trainer(cfg, tmp + "/r", fast=True, bf16=True)
    print(tr.fast.describe(), flush=True)
    it = iter(tr.loader)
    batches = [next(it)]
    cas = [m for m in tr.net.modules() if isinstance(m, ContextAggregation)]
    times = {"fp32 attention": [], "bf16 attention": []}
    for r in range(2 + 6):
        for name, dt in (("fp32 attention", None), ("bf16 attention", torch.bfloat16)):
            for m in cas:
                m.matmul_dtype = dt
            t0 = time.perf_counter(); _step(tr, batches); t = time.perf_counter() - t0
            if r >= 2:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"cpu": cpu_model(), "threads": 2, "config": "configs/camvid/pyramid_effl0.yaml", "path": tr.fast.describe(),
           "s_per_step_median": med, "all": times, "ratio_fp32_over_bf16_attention": med["fp32 attention"] / med["bf16 attention"]}
    print(json.dumps(out, indent=1))
    name = cpu_model().lower().replace(" ", "_").replace("(", "").replace(")", "")
    (REPO / f"results/bench/ab_pyramid_attention_bf16_{name}.json").write_text(json.dumps(out, indent=1))
