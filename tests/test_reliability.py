"""Interruption and bad-state handling of training (issue 8 subset)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sceneparse.training.trainer import train

from .conftest import REPO, TINY
from .training.test_training import _cfg


def _cli_args(camvid_root, work, iters):
    return [sys.executable, "-m", "sceneparse", "train", str(REPO / "configs/camvid/pspnet_effl0.yaml"), *TINY,
            f"data.root={camvid_root}", f"work_dir={work}", f"train.iters={iters}", "train.ckpt_interval=1",
            "train.eval_interval=1000", "train.threads=1", "--no-progress"]


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_uninterrupted_weights(tmp_path, camvid_root, how):
    iters = 8
    ref = tmp_path / "ref"
    train(_cfg(camvid_root, ref, f"train.iters={iters}", "train.ckpt_interval=1", "train.eval_interval=1000",
               "train.threads=1"), progress=False)
    work = tmp_path / "killed"
    proc = subprocess.Popen(_cli_args(camvid_root, work, iters), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(work / "checkpoints/iter_00000003.pt", proc)
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=120)
    if how == "SIGTERM":
        assert proc.returncode == 130 and "resume auto" in err  # checkpointed, then stopped cleanly
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (work / "final.pt").exists()
    resumed = subprocess.run(_cli_args(camvid_root, work, iters) + ["--resume", "auto"], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(ref / "final.pt", weights_only=True)["model"]
    b = torch.load(work / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_auto_skips_a_corrupt_checkpoint(tmp_path, camvid_root, caplog):
    work = tmp_path / "run"
    cfg = _cfg(camvid_root, work, "train.iters=4", "train.ckpt_interval=1", "train.eval_interval=1000")
    train(cfg, progress=False)
    ckpts = sorted((work / "checkpoints").glob("iter_*.pt"))
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])  # truncated newest checkpoint
    train(cfg, resume="auto", progress=False)
    assert "skipping unreadable checkpoint" in caplog.text


def test_nan_loss_stops_without_checkpointing_it_or_skips(tmp_path, camvid_root, monkeypatch):
    from .conftest import register_loss_hook

    arch, calls = register_loss_hook(
        monkeypatch, lambda call, total, parts: (total * float("nan") if call == 2 else total, parts))
    work = tmp_path / "stop"
    with pytest.raises(FloatingPointError, match=r"iteration 2, batch: .*\.png"):
        train(_cfg(camvid_root, work, "train.iters=4", "train.ckpt_interval=1", f"model.arch={arch}"),
              progress=False)
    assert [p.name for p in (work / "checkpoints").glob("*.pt")] == ["iter_00000001.pt"]
    calls[0] = 0
    work = tmp_path / "skip"
    train(_cfg(camvid_root, work, "train.iters=4", "train.nan_skips=1", f"model.arch={arch}"), progress=False)
    state = torch.load(work / "final.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("minutes,expected", [(1e-9, [2, 3, 4]), (0, [4])])
def test_checkpoints_by_wall_clock_time_as_well_as_by_iteration(tmp_path, camvid_root, minutes, expected):
    """``train.ckpt_minutes``: a checkpoint whenever that much time has passed since the last one, so a run
    killed without warning (SIGKILL) loses at most that much, whatever ``ckpt_interval`` says; 0 turns it off."""
    work = tmp_path / "run"
    train(_cfg(camvid_root, work, "train.iters=4", "train.ckpt_interval=1000", f"train.ckpt_minutes={minutes}",
               "train.eval_interval=1000", "train.keep_checkpoints=3"), progress=False)
    saved = sorted(int(p.stem.split("_")[1]) for p in (work / "checkpoints").glob("iter_*.pt"))
    assert saved == expected


def test_a_run_resumed_from_a_time_based_checkpoint_ends_with_the_uninterrupted_weights(tmp_path, camvid_root):
    extra = ("train.iters=5", "train.ckpt_interval=1000", "train.eval_interval=1000", "train.threads=1")
    train(_cfg(camvid_root, tmp_path / "ref", *extra), progress=False)
    work = tmp_path / "run"
    train(_cfg(camvid_root, work, *extra, "train.ckpt_minutes=1e-9"), progress=False)
    for p in (work / "checkpoints").glob("iter_*.pt"):  # killed after iteration 3
        if p.name != "iter_00000003.pt":
            p.unlink()
    (work / "final.pt").unlink()
    # resumed with another checkpoint time: allowed (it changes nothing that is computed)
    train(_cfg(camvid_root, work, *extra, "train.ckpt_minutes=30"), resume="auto", progress=False)
    a = torch.load(tmp_path / "ref/final.pt", weights_only=True)["model"]
    b = torch.load(work / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_negative_checkpoint_time_is_a_config_error(tmp_path, camvid_root):
    from sceneparse.config import ConfigError

    with pytest.raises(ConfigError, match="train.ckpt_minutes"):
        train(_cfg(camvid_root, tmp_path / "run", "train.iters=2", "train.ckpt_minutes=-1"), progress=False)
