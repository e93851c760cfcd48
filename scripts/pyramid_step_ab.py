"""A/B of the pyramid output's fast bf16 training step: this version against the previous one (float32
decoder output handed to the heads and cast back, per-level pools and per-bin adaptive pools, float32
attention products, the finest level's CE on stored upsampled logits), two trainers in one process, the same batch, alternating, 2 warm-up rounds, 6 timed.
Writes results/bench/ab_pyramid_step_<cpu>.json. Run on a quiet machine: python scripts/pyramid_step_ab.py
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from sceneparse.benchmark.train_step import _step, _trainer  # noqa: E402
from sceneparse.config import load_config  # noqa: E402
from sceneparse.models.heads import adaptive_pool2d  # noqa: E402
from sceneparse.models.pyramid import model as pm  # noqa: E402
from sceneparse.training import fast_train  # noqa: E402
from sceneparse.utils.sysinfo import cpu_model  # noqa: E402

NEW_POOLS, NEW_TOKENS = pm._avg_pools, pm.PyramidPoolTokens.forward


def old_pools(x, factors):
    return [F.avg_pool2d(x, k) if k > 1 else x for k in factors]


def old_tokens(self, x):
    return torch.cat([adaptive_pool2d(x, b).flatten(2) for b in self.bins], dim=2)


def as_before(tr):
    """The previous fast path on this trainer: float32 out of the decoder, readers back to their own class."""
    net = tr.net
    for r in net.decoder_readers():
        if type(r).__dict__.get("_sp_original") is not None and \
                fast_train.conv_intensity(r) < fast_train.BF16_MIN_INTENSITY:
            r.__class__ = type(r).__dict__["_sp_original"]
    net.decoder._sp_float_out = net.decoder.register_forward_hook(fast_train._float32_outputs)
    for m in net.modules():
        if isinstance(m, pm.ContextAggregation):
            m.matmul_dtype = None
    net.fused_upsample_loss = False


def main():
    torch.set_num_threads(2)
    cfg = load_config(str(REPO / "configs/camvid/pyramid_effl0.yaml"), [f"data.root={REPO.parent / 'shared/data/camvid'}"])
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {"new": _trainer(cfg, tmp + "/a", fast=True, bf16=True),
                    "before": _trainer(cfg, tmp + "/b", fast=True, bf16=True, first=False)}
        as_before(trainers["before"])
        it = iter(trainers["new"].loader)
        batches = [next(it)]
        times = {k: [] for k in trainers}
        for r in range(2 + 6):
            for name, tr in trainers.items():
                pm._avg_pools = NEW_POOLS if name == "new" else old_pools
                pm.PyramidPoolTokens.forward = NEW_TOKENS if name == "new" else old_tokens
                t0 = time.perf_counter()
                _step(tr, batches)
                if r >= 2:
                    times[name].append(time.perf_counter() - t0)
        pm._avg_pools, pm.PyramidPoolTokens.forward = NEW_POOLS, NEW_TOKENS
        med = {k: statistics.median(v) for k, v in times.items()}
        out = {"cpu": cpu_model(), "threads": 2, "config": "configs/camvid/pyramid_effl0.yaml", "batch": 8,
               "path_new": trainers["new"].fast.describe(), "s_per_step_median": med, "all": times,
               "speedup_new_over_before": med["before"] / med["new"]}
    print(json.dumps(out, indent=1))
    name = cpu_model().lower().replace(" ", "_").replace("(", "").replace(")", "")
    (REPO / f"results/bench/ab_pyramid_step_{name}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
