"""torchrun / DDP on CPU (gloo, 2 processes) and gradient accumulation."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sceneparse.models.factory import model_from_checkpoint
from sceneparse.training.distributed import EpochSampler
from sceneparse.training.trainer import train

from ..conftest import REPO, TINY
from ..training.test_training import _cfg


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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
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
    from sceneparse.config import to_dict
    from sceneparse.models.factory import build_model_from_config

    cfg = _cfg(camvid_root, tmp_path / "x", *extra)
    torch.manual_seed(cfg.train.seed)
    init = build_model_from_config(to_dict(cfg)["model"], 11)[0].state_dict()
    a = torch.load(tmp_path / "full/final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "accum/final.pt", weights_only=True)["model"]
    keys = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert keys
    step = torch.cat([(a[k] - init[k]).flatten() for k in keys])
    gap = torch.cat([(a[k] - b[k]).flatten() for k in keys])
    assert gap.norm() < 0.05 * step.norm(), (gap.norm(), step.norm())


def _worker_pid(agent_pid: int, local_rank: int) -> int | None:
    """The pid of torchrun's worker with ``LOCAL_RANK=local_rank`` (Linux /proc), or None."""
    try:
        kids = open(f"/proc/{agent_pid}/task/{agent_pid}/children").read().split()
    except OSError:
        return None
    for pid in kids:
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"LOCAL_RANK={local_rank}".encode() in env:
            return int(pid)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers through /proc")
def test_signal_to_one_rank_stops_all_ranks_with_a_checkpoint(tmp_path, camvid_root):
    # SIGTERM reaches only rank 1: rank 0 must learn it through the step's all-reduce, save, and both exit;
    # without that, rank 0 would wait in the next collective until gloo's 30-minute timeout
    work = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29518", "-m",
           "sceneparse", "train", str(REPO / "configs/camvid/pspnet_effl0.yaml"), *TINY, "train.iters=500",
           "train.batch_size=4", "train.ckpt_interval=1", "train.eval_interval=100000", "train.threads=1",
           "data.max_train_samples=8", f"data.root={camvid_root}", f"work_dir={work}", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (work / "checkpoints/iter_00000002.pt").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() - t0 < 300, "training never reached iteration 2"
            time.sleep(0.05)
        pid = _worker_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0  # an interrupted run is not a finished one
    assert "stopped by signal on another rank" in err and "stopped by signal 15" in err, err[-3000:]
    assert not (work / "final.pt").exists()
    newest = sorted((work / "checkpoints").glob("iter_*.pt"))[-1]
    it = int(newest.stem.split("_")[1])
    assert 2 <= it < 500 and f"after iteration {it};" in err
    model, _ = model_from_checkpoint(newest)
    assert isinstance(model, torch.nn.Module)
