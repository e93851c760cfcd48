"""torchrun / DDP on CPU (gloo, 2 processes) and gradient accumulation."""
import csv
import os
import subprocess
import sys

import torch

from sceneparse.engine.checkpoint import model_from_checkpoint
from sceneparse.engine.trainer import EpochSampler, train

from .conftest import REPO, TINY
from .test_training import _cfg


def _losses(path):
    with open(path / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def test_epoch_sampler_shards_global_batches():
    one = list(EpochSampler(10, 4, seed=3, start_iter=0, total_iters=5))
    ranks = [list(EpochSampler(10, 4, seed=3, start_iter=0, total_iters=5, rank=r, world_size=2)) for r in (0, 1)]
    for g in range(5):  # global batch g = rank 0's two items then rank 1's two items
        assert one[4 * g: 4 * g + 4] == ranks[0][2 * g: 2 * g + 2] + ranks[1][2 * g: 2 * g + 2]


def test_two_process_gloo_run_matches_single_process(tmp_path, camvid_root):
    # SyncBatchNorm is CUDA-only: on CPU BN is frozen so that both runs normalise alike
    extra = ["train.iters=4", "train.batch_size=4", "train.eval_interval=4", "train.ckpt_interval=4",
             "data.max_train_samples=8", "train.threads=1", "train.freeze_bn=true", "model.head.dropout=0",
             "train.lr=0.001"]
    single = tmp_path / "single"
    train(_cfg(camvid_root, single, *extra), progress=False)
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m",
           "sceneparse", "train", str(REPO / "configs/camvid/pspnet_effl0.yaml"), *TINY, *extra,
           f"data.root={camvid_root}", f"work_dir={ddp}", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _losses(single), _losses(ddp)
    assert len(a) == len(b) == 4
    # same samples and crops; per-rank means of CE differ from the global mean only through the
    # ignore pixels' split between ranks
    for x, y in zip(a, b):
        assert abs(x - y) < 0.02 * x, (a, b)
    model, _ = model_from_checkpoint(ddp / "final.pt")  # the rank-0 checkpoint loads in one process
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def test_gradient_accumulation_equals_the_full_batch(tmp_path, camvid_root):
    # with frozen BN and no dropout, accumulating 2 micro-batches of 2 gives the gradient of a batch of 4,
    # up to the CE being a mean over each micro-batch's own valid (non-ignore) pixels
    extra = ["train.iters=1", "train.batch_size=4", "train.freeze_bn=true", "model.head.dropout=0",
             "train.eval_interval=100"]
    train(_cfg(camvid_root, tmp_path / "full", *extra), progress=False)
    train(_cfg(camvid_root, tmp_path / "accum", *extra, "train.accum_steps=2"), progress=False)
    from sceneparse.engine.trainer import build_model_from_config

    cfg = _cfg(camvid_root, tmp_path / "x", *extra)
    torch.manual_seed(cfg.train.seed)
    init = build_model_from_config(cfg, 11, pretrained=False).state_dict()
    a = torch.load(tmp_path / "full/final.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "accum/final.pt", weights_only=False)["model"]
    keys = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert keys
    step = torch.cat([(a[k] - init[k]).flatten() for k in keys])
    gap = torch.cat([(a[k] - b[k]).flatten() for k in keys])
    assert gap.norm() < 0.05 * step.norm(), (gap.norm(), step.norm())
