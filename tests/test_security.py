"""Issue 15: untrusted checkpoints, inputs never overwritten, no NaN or mixed-config run, and the other
input-safety cases. Each test failed on the code before the fix."""
import errno
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.cli import main
from sceneparse.checkpoint import (CheckpointError, NonFiniteModelError, UnsafeCheckpointError, atomic_save, check_classes, load_checkpoint)
from sceneparse.models.factory import model_from_checkpoint

from .conftest import REPO, TINY

CONFIG = str(REPO / "configs/camvid/pspnet_effl0.yaml")


def _tiny(camvid_root, work, *extra):
    return [CONFIG, *TINY, f"data.root={camvid_root}", f"work_dir={work}", "train.eval_interval=1000", *extra,
            "--no-progress"]


# ---------------------------------------------------------------- 1. checkpoints never execute code
class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path):
    """A .pt whose unpickling would create ``marker`` (zip format), and the same as a raw pickle."""
    marker = tmp_path / "PWNED"
    pt = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {"model": _RunsCode(marker)}, "meta": {}}, pt)
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"model": _RunsCode(marker)}))
    return pt, raw, marker


def test_crafted_checkpoint_is_refused_by_every_entry_point(evil, tiny_run, camvid_root, tmp_path, capsys):
    pt, raw, marker = evil
    img = camvid_root / "val/0016E5_07959.png"
    runs = tmp_path / "runs"
    auto = runs / "auto/checkpoints"
    auto.mkdir(parents=True)
    shutil.copy(pt, auto / "iter_00000009.pt")
    entry_points = {
        "predict": ["predict", str(img), "--out", str(tmp_path / "p"), "--checkpoint", str(pt), "--no-progress"],
        "evaluate": ["evaluate", "--checkpoint", str(pt), f"data.root={camvid_root}", "--no-progress"],
        "analyze": ["analyze", "--checkpoint", str(pt), f"data.root={camvid_root}", "--no-progress"],
        "pack": ["pack", str(pt), str(tmp_path / "packed.pt")],
        "export": ["export", "--checkpoint", str(pt), "--out", str(tmp_path / "m.onnx")],
        "benchmark": ["benchmark", "--checkpoint", str(pt), "--size", "32", "32", "--repeats", "1"],
        "train --resume PATH": ["train", *_tiny(camvid_root, runs / "r", "train.iters=2"), "--resume", str(pt)],
        "model.init_weights": ["train", *_tiny(camvid_root, runs / "i", "train.iters=1",
                                               f"model.init_weights={pt}")],
        "model.head.front": ["train", str(REPO / "configs/camvid/refine/grn_stage.yaml"), f"model.head.front={pt}",
                             f"data.root={camvid_root}", f"work_dir={runs / 'f'}", "data.check=false",
                             "train.iters=1", "--no-progress"],
        "raw pickle": ["predict", str(img), "--out", str(tmp_path / "p2"), "--checkpoint", str(raw)],
    }
    for name, argv in entry_points.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert "refusing to load" in err and "evil" in err and "posix.system" in err, (name, err)
        assert not marker.exists(), f"{name} executed code from the checkpoint"
    # --resume auto does not start over next to it (the new run's files would mix with it): names it
    assert main(["train", *_tiny(camvid_root, runs / "auto", "train.iters=1"), "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "iter_00000009.pt: refusing to load" in err
    assert not marker.exists()
    assert not (tmp_path / "packed.pt").exists() and not (tmp_path / "m.onnx").exists()


def test_our_checkpoints_load_with_weights_only(tiny_run):
    for path in [tiny_run / "final.pt", *sorted((tiny_run / "checkpoints").glob("iter_*.pt"))]:
        ckpt = torch.load(path, weights_only=True)  # no allow-list: tensors and plain values only
        assert "model" in ckpt
    rng = torch.load(tiny_run / "checkpoints/iter_00000004.pt", weights_only=True)["rng"]
    assert isinstance(rng["numpy"]["keys"], torch.Tensor) and len(rng["python"]["state"]) == 625


@pytest.mark.parametrize("numpy_module", ["numpy._core", "numpy.core"])  # written under numpy 2.x / 1.x
def test_checkpoint_with_the_old_numpy_rng_state_still_resumes(tiny_run, camvid_root, tmp_path, numpy_module):
    """Training checkpoints written before this fix held numpy arrays: those (only those) still load."""
    import zipfile

    ckpt = torch.load(tiny_run / "checkpoints/iter_00000004.pt", weights_only=True)
    ckpt["rng"]["numpy"] = np.random.RandomState(3).get_state()  # tuple holding a numpy array
    torch.save(ckpt, tmp_path / "new.pt")
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)
    old = work / "checkpoints/iter_00000004.pt"
    with zipfile.ZipFile(tmp_path / "new.pt") as src, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():  # protocol-2 pickles name globals as text lines: rename the module
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray\n", numpy_module.encode() + b".multiarray\n")
            dst.writestr(info, data)
    assert (numpy_module + ".multiarray._reconstruct") in torch.serialization.get_unsafe_globals_in_checkpoint(old)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(old, weights_only=True)
    assert isinstance(load_checkpoint(old)["rng"]["numpy"][1], np.ndarray)
    # and the run resumes from it
    (work / ".lock").write_text("")
    assert main(["train", *_tiny(camvid_root, work, "train.iters=4", "train.ckpt_interval=2"), "--resume", "auto"]) == 0
    assert (work / "final.pt").is_file()


@pytest.mark.parametrize("field, change", [
    ("iter", lambda c: c.update(iter=10 ** 9)), ("iter", lambda c: c.update(iter="4")),
    ("iter", lambda c: c.update(iter=-1)), ("iter", lambda c: c.update(iter=True)),
    ("rng.numpy", lambda c: c["rng"].pop("numpy")), ("rng.torch", lambda c: c["rng"].update(torch=[1, 2])),
    ("rng", lambda c: c["rng"]["python"].update(state=[0, 1])), ("optimizer", lambda c: c.update(optimizer=[])),
    ("optimizer", lambda c: c["optimizer"].update(param_groups=[{"params": [0]}]))])
def test_a_checkpoints_fields_are_checked_before_resuming(tiny_run, camvid_root, tmp_path, capsys, field, change):
    """An attacker's (or a damaged) training checkpoint: a one-line refusal naming the file and the field,
    exit 2, and nothing written (no final.pt from untrained weights, no log rows)."""
    ckpt = torch.load(tiny_run / "checkpoints/iter_00000004.pt", weights_only=True)
    change(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    work = tmp_path / "run"
    assert main(["train", *_tiny(camvid_root, work, "train.iters=4", "train.ckpt_interval=2"), "--resume", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0] and f"'{field}" in err[0], err
    assert not (work / "final.pt").exists() and not list(work.glob("checkpoints/*.pt"))
    assert not (work / "log.csv").exists() or len((work / "log.csv").read_text().splitlines()) <= 1


def test_truncated_checkpoints_are_corrupt_not_unsafe(tiny_run, tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(tiny_run / "final.pt", weights_only=True), legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    for cut in (2, 40, 300, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="cannot read checkpoint"):
            load_checkpoint(tmp_path / "cut.pt")
    assert load_checkpoint(legacy)["meta"]["classes"][0] == "Sky"


def test_ade20k_checkpoints_with_the_earlier_class_names_still_evaluate():
    from sceneparse.data.ade20k import ADE20K

    ade = ADE20K.__new__(ADE20K)
    old_names = [n.split()[0] for n in ADE20K.CLASSES]  # what sceneparse wrote into meta before
    check_classes({"meta": {"classes": old_names}}, ade)
    check_classes({"num_classes": 150, "meta": {}}, ade)
    with pytest.raises(ValueError, match="predicts 149 classes"):
        check_classes({"meta": {"classes": old_names[:149]}}, ade)


# ---------------------------------------------------------------- 2. predict never writes over an input
def test_predict_never_overwrites_inputs_and_counts_what_it_wrote(tiny_run, camvid_root, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    src = Image.open(camvid_root / "val/0016E5_07959.png").convert("RGB").resize((96, 72))
    src.save(photos / "street.png")
    for name in ("a.jpg", "a.png", "a.webp", "b.JPG", "b.bmp"):
        src.save(photos / name)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    ckpt = ["--checkpoint", str(tiny_run / "final.pt"), "--no-progress"]
    assert main(["predict", str(photos), "--out", str(photos), *ckpt]) == 0
    out = capsys.readouterr().out
    assert all((photos / n).read_bytes() == b for n, b in before.items()), "an input was overwritten"
    made = sorted(set(p.name for p in photos.iterdir()) - set(before))
    labels = [n for n in made if n.endswith(".png")]
    assert len(labels) == 6 and len([n for n in made if n.endswith("_overlay.jpg")]) == 6
    assert "parsed 6 of 6 image(s): wrote 12 file(s)" in out
    manifest = json.loads((photos / "predictions.json").read_text())["outputs"]
    assert sorted(Path(manifest[n]).name for n in labels) == sorted(before)  # every input has its own outputs
    # a second run into the same folder parses the photos again (not its own outputs) and replaces its outputs
    assert main(["predict", str(photos), "--out", str(photos), *ckpt]) == 0
    assert "parsed 6 of 6 image(s)" in capsys.readouterr().out
    assert sorted(set(p.name for p in photos.iterdir()) - set(before)) == made
    # a file predict did not write is never replaced: the output takes another name
    other = tmp_path / "other"
    other.mkdir()
    (other / "street.png").write_bytes(b"user's file")
    assert main(["predict", str(photos / "street.png"), "--out", str(other), *ckpt]) == 0
    assert (other / "street.png").read_bytes() == b"user's file" and (other / "street_2.png").is_file()


def test_pack_and_export_refuse_to_write_over_their_input(tiny_run, tmp_path, capsys):
    ckpt = tmp_path / "c.pt"
    shutil.copy(tiny_run / "final.pt", ckpt)
    before = ckpt.read_bytes()
    assert main(["pack", str(ckpt), str(ckpt)]) == 2
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(ckpt)]) == 2
    assert "refusing to write over it" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


# ---------------------------------------------------------------- 3. no non-finite model is ever saved
def test_atomic_save_refuses_non_finite_weights(tmp_path):
    with pytest.raises(NonFiniteModelError, match="w"):
        atomic_save({"model": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_exploding_lr_stops_with_exit_3_and_saves_nothing(camvid_root, tmp_path, capsys):
    work = tmp_path / "lr"
    assert main(["train", *_tiny(camvid_root, work, "train.lr=1e30", "train.iters=1", "train.ckpt_interval=1")]) == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "No checkpoint was saved" in err
    assert not (work / "final.pt").exists() and not list(work.glob("checkpoints/*.pt"))


def test_loss_explosion_stops_before_nan_and_names_the_last_good_checkpoint(camvid_root, tmp_path, monkeypatch,
                                                                            capsys):
    from .conftest import register_loss_hook

    arch, _ = register_loss_hook(monkeypatch, lambda call, total, parts: (
        (total * 1000, {**parts, "loss": parts["loss"] * 1000}) if call >= 3 else (total, parts)))
    work = tmp_path / "boom"
    assert main(["train", *_tiny(camvid_root, work, "train.iters=5", "train.ckpt_interval=1", f"model.arch={arch}")]) == 3
    err = capsys.readouterr().err
    assert "at iteration 3 is above 20 x its running mean" in err
    assert f"The last good checkpoint is {work / 'checkpoints/iter_00000002.pt'}" in err
    assert not (work / "final.pt").exists()


def test_non_finite_checkpoint_is_refused_by_predict(tiny_run, camvid_root, tmp_path, capsys):
    ckpt = torch.load(tiny_run / "final.pt", weights_only=True)
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][first] = torch.full_like(ckpt["model"][first], float("nan"))
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteModelError):
        model_from_checkpoint(tmp_path / "nan.pt")
    assert main(["predict", str(camvid_root / "val/0016E5_07959.png"), "--out", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path / "nan.pt")]) == 3
    assert "NaN/inf" in capsys.readouterr().err and not (tmp_path / "o/0016E5_07959.png").exists()


# ---------------------------------------------------------------- 4. resume never mixes configurations
def test_resume_refuses_changed_config_unless_allowed_and_uses_the_new_values(camvid_root, tmp_path, capsys):
    work = tmp_path / "run"
    assert main(["train", *_tiny(camvid_root, work, "train.ckpt_interval=2", "train.iters=2")]) == 0
    config_before = (work / "config.yaml").read_text()
    changed = _tiny(camvid_root, work, "train.ckpt_interval=2", "train.iters=4", "train.lr=0.02",
                    "model.output_stride=8")
    assert main(["train", *changed, "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert all(k in err for k in ("train.iters: 2 -> 4", "train.lr: 0.01 -> 0.02", "model.output_stride: 16 -> 8",
                                  "--allow-config-change"))
    assert (work / "config.yaml").read_text() == config_before  # a refused run writes nothing
    # an allowed change the checkpoint cannot take (other pyramid bins: other weight shapes) fails to resume,
    # and a failed resume writes nothing either: no new config.yaml, no resume record, no log rows lost
    log_before = (work / "log.csv").read_text()
    other_bins = _tiny(camvid_root, work, "train.ckpt_interval=2", "train.iters=4", "train.lr=0.02",
                       "model.output_stride=8", "model.head.bins=[1,2]")
    assert main(["train", *other_bins, "--resume", "auto", "--allow-config-change",
                 "train.iters", "train.lr", "model.output_stride", "model.head.bins"]) == 2
    capsys.readouterr()
    assert (work / "config.yaml").read_text() == config_before and not (work / "resumes.jsonl").exists()
    assert (work / "log.csv").read_text() == log_before
    assert main(["train", *changed, "--resume", "auto", "--allow-config-change", "train.iters", "train.lr",
                 "model.output_stride"]) == 0
    rows = [r.split(",") for r in (work / "log.csv").read_text().splitlines()]
    lr3 = float(next(r for r in rows[1:] if r[0] == "3")[2])
    assert lr3 == pytest.approx(0.02 * (1 - 2 / 4) ** 0.9)  # the new lr and the new schedule, from iteration 2
    record = json.loads((work / "resumes.jsonl").read_text().splitlines()[-1])
    assert record["changed"]["train.lr"] == [0.01, 0.02] and record["iter"] == 2
    final = torch.load(work / "final.pt", weights_only=True)
    assert final["config"]["train"]["lr"] == 0.02 and final["config"]["model"]["output_stride"] == 8


def test_resume_from_a_final_model_says_what_it_is(tiny_run, camvid_root, tmp_path, capsys):
    assert main(["train", *_tiny(camvid_root, tmp_path / "r", "train.iters=2"), "--resume",
                 str(tiny_run / "final.pt")]) == 2
    err = capsys.readouterr().err
    assert "model weights only" in err and "model.init_weights=" in err and "--resume auto" in err


# ---------------------------------------------------------------- 5. one training per run directory
def test_second_training_in_a_locked_run_directory_is_refused(camvid_root, tmp_path, capsys):
    from sceneparse.utils.runlock import RunLock

    work = tmp_path / "run"
    with RunLock(work):
        assert main(["train", *_tiny(camvid_root, work, "train.iters=1")]) == 2
        assert f"in use by another training (pid {os.getpid()}" in capsys.readouterr().err
    assert not (work / "log.csv").exists() and not (work / "config.yaml").exists()
    # a lock left by a dead process is stale: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (work / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 0}))
    assert main(["train", *_tiny(camvid_root, work, "train.iters=1")]) == 0


def test_fresh_training_over_an_earlier_run_is_refused_unless_restart(camvid_root, tmp_path, capsys):
    work = tmp_path / "run"
    first = _tiny(camvid_root, work, "train.iters=2", "train.ckpt_interval=1", "train.keep_checkpoints=5")
    assert main(["train", *first]) == 0
    final = (work / "final.pt").read_bytes()
    # the old run's iter_2 would outlive a new run's iter_1 and be what --resume auto picks
    assert main(["train", *_tiny(camvid_root, work, "train.iters=1", "train.seed=1")]) == 2
    assert "already holds a run" in capsys.readouterr().err and (work / "final.pt").read_bytes() == final
    # a run's own final.pt as the new run's init weights: --restart would delete its input
    shutil.copy(work / "final.pt", tmp_path / "copy.pt")
    assert main(["train", *_tiny(camvid_root, work, "train.iters=1", f"model.init_weights={work / 'final.pt'}"),
                 "--restart"]) == 2
    assert "which --restart would delete" in capsys.readouterr().err and (work / "final.pt").read_bytes() == final
    assert main(["train", *_tiny(camvid_root, work, "train.iters=1", f"model.init_weights={tmp_path / 'copy.pt'}"),
                 "--restart"]) == 0
    assert [p.name for p in (work / "checkpoints").iterdir()] == ["iter_00000001.pt"]
    assert [r.split(",")[0] for r in (work / "log.csv").read_text().splitlines()[1:]] == ["1"]


def test_lock_held_by_another_process_is_refused(tmp_path):
    from sceneparse.utils.runlock import RunLock, RunLockedError

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sceneparse.utils.runlock import RunLock\n"
                               f"with RunLock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the holder died: its lock went with it
        pass


# ---------------------------------------------------------------- 6. disk full while checkpointing
def test_failed_write_names_the_file_removes_the_temporary_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.zeros(4)}}, target)
    before = target.read_bytes()
    script = ("import resource, signal, torch\n"
              "from sceneparse.checkpoint import atomic_save\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
              f"atomic_save({{'model': {{'w': torch.zeros(1 << 20)}}}}, {str(target)!r})\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert r.returncode != 0 and f"cannot write {target}" in r.stderr
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_disk_full_message(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=f"no space left on device writing {tmp_path / 'c.pt'}"):
        atomic_save({"model": {"w": torch.zeros(3)}}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_training_removes_temporaries_left_by_an_interrupted_write(camvid_root, tmp_path):
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)
    stale = work / "checkpoints/.iter_00000002.pt.tmp4242"
    stale.write_bytes(b"x" * 1000)
    (work / ".lock").write_text("")  # the killed run's (released) lock
    assert main(["train", *_tiny(camvid_root, work, "train.iters=1")]) == 0
    assert not stale.exists()


# ---------------------------------------------------------------- 7. decompression bomb
def _png_declaring(path, width, height):
    """A valid 1x1 PNG whose header is rewritten to declare width x height."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def test_decompression_bomb_is_a_per_file_error(tiny_run, camvid_root, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    _png_declaring(inp / "bomb.png", 20000, 20000)
    shutil.copy(camvid_root / "val/0016E5_07959.png", inp / "good.png")
    ckpt = ["--checkpoint", str(tiny_run / "final.pt"), "--no-progress"]
    assert main(["predict", str(inp), "--out", str(tmp_path / "out"), *ckpt]) == 1
    captured = capsys.readouterr()
    assert "bomb.png" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out/good.png").is_file() and "parsed 1 of 2 image(s)" in captured.out
    # the limit is configurable: a smaller one refuses the 360x480 street too
    assert main(["predict", str(inp / "good.png"), "--out", str(tmp_path / "o2"), "--max-image-pixels", "1000",
                 *ckpt]) == 1
    assert "above the limit" in capsys.readouterr().err


# ---------------------------------------------------------------- 8. check-data decodes what training decodes
def test_check_data_finds_a_truncated_jpeg_that_verify_accepts(tmp_path):
    from sceneparse.data import build_dataset
    from sceneparse.data.check import check_dataset

    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("good", "cut"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"images/train/{name}.jpg")
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / f"labels/train/{name}.png")
    jpg = tmp_path / "images/train/cut.jpg"
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) * 2 // 3])
    with Image.open(jpg) as im:
        im.verify()  # the header check the old scan relied on passes
    report = check_dataset(build_dataset("folder", str(tmp_path), "train"), progress=False)
    assert [Path(p["image"]).name for p in report["problems"]] == ["cut.jpg"]


# ---------------------------------------------------------------- 9. classes of checkpoint and dataset
def test_evaluate_refuses_a_model_of_other_classes(tiny_run, ade_root, tmp_path, capsys):
    rc = main(["evaluate", "--checkpoint", str(tiny_run / "final.pt"), "data.dataset=ade20k", f"data.root={ade_root}",
               "data.val_split=validation", "--out", str(tmp_path / "m.json"), "--no-progress"])
    assert rc == 2 and "predicts 11 classes but ADE20K has 150" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    ds = type("DS", (), {"CLASSES": ("Sky", "Road")})()
    with pytest.raises(ValueError, match="'Building' vs 'Road'"):
        check_classes({"meta": {"classes": ["Sky", "Building"]}}, ds)


# ---------------------------------------------------------------- 10. class names: official, distinct, none lost
def test_every_dataset_has_distinct_class_names_and_ade20k_the_official_ones():
    from sceneparse.data import DATASETS
    from sceneparse.data.ade20k import ADE20K_CLASSES
    from sceneparse.evaluation.metrics import scores_from_confusion

    for name, cls in DATASETS.items():
        assert len(set(cls.CLASSES)) == len(cls.CLASSES), name
    assert len(ADE20K_CLASSES) == 150
    assert {"chest of drawers", "pool table", "screen door", "screen", "crt screen", "traffic light"} <= set(ADE20K_CLASSES)
    scores = scores_from_confusion(torch.eye(150, dtype=torch.long), ADE20K_CLASSES)
    assert len(scores["IoU"]) == 150
    with pytest.raises(ValueError, match="repeated"):
        scores_from_confusion(torch.eye(2, dtype=torch.long), ["screen", "screen"])


def test_folder_dataset_refuses_repeated_class_names(tmp_path):
    from sceneparse.data import DataError, build_dataset

    (tmp_path / "classes.txt").write_text("road\ncar\nroad\n")
    with pytest.raises(DataError, match="repeated: \\['road'\\]"):
        build_dataset("folder", str(tmp_path), "train")


# ---------------------------------------------------------------- 11. one-line errors, exit 2, naming the key or file
@pytest.mark.parametrize("override, key", [
    ("data.crop_size=[0,0]", "data.crop_size"), ("data.crop_size=[96]", "data.crop_size"),
    ("train.batch_size=0", "train.batch_size"), ("train.ckpt_interval=0", "train.ckpt_interval"),
    ("train.log_interval=0", "train.log_interval"), ("train.iters=-5", "train.iters"),
    ("train.lr=nan", "train.lr"), ("data.crop_size=[96", "data.crop_size")])
def test_bad_values_are_one_line_errors(override, key, camvid_root, tmp_path, capsys):
    assert main(["train", *_tiny(camvid_root, tmp_path / "w", override)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.01\n  iters: [3\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: YAML syntax error at line" in err and "Traceback" not in err


def test_checkpoint_without_model_config_is_named(tiny_run, camvid_root, tmp_path, capsys):
    ckpt = torch.load(tiny_run / "final.pt", weights_only=True)
    del ckpt["config"]["model"]
    torch.save(ckpt, tmp_path / "nocfg.pt")
    with pytest.raises(CheckpointError, match="no config.model"):
        load_checkpoint(tmp_path / "nocfg.pt")
    assert main(["predict", str(camvid_root / "val/0016E5_07959.png"), "--out", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path / "nocfg.pt")]) == 2
    assert "nocfg.pt" in capsys.readouterr().err


def test_predict_checks_out_before_loading_the_model(tiny_run, camvid_root, tmp_path, monkeypatch, capsys):
    import sceneparse.models.factory as ck

    monkeypatch.setattr(ck, "model_from_checkpoint", lambda *a, **k: pytest.fail("model loaded before --out check"))
    (tmp_path / "file").write_text("x")
    img = str(camvid_root / "val/0016E5_07959.png")
    assert main(["predict", img, "--out", str(tmp_path / "file"), "--checkpoint", str(tiny_run / "final.pt")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root")
        assert main(["predict", img, "--out", str(ro / "sub"), "--checkpoint", str(tiny_run / "final.pt")]) == 2
        assert "cannot write there" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- 12. messages that say what happened
def test_loading_trained_weights_does_not_announce_random_init(tiny_run, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        model_from_checkpoint(tiny_run / "final.pt")
    assert "RANDOM" not in caplog.text


def test_data_error_in_an_evaluate_worker_is_one_line(tiny_run, camvid_root, tmp_path, capsys):
    root = tmp_path / "camvid"
    shutil.copytree(camvid_root, root, ignore=shutil.ignore_patterns("train*", "test*"))
    first = (root / "val.txt").read_text().split()[0]
    (root / first.lstrip("/")).write_bytes(b"\x89PNG broken")
    rc = main(["evaluate", "--checkpoint", str(tiny_run / "final.pt"), f"data.root={root}", "data.num_workers=2",
               "data.max_val_samples=2", "--out", str(tmp_path / "m.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read image" in err and "Traceback" not in err and "DataLoader worker" not in err


# ---------------------------------------------------------------- the same classes, found by a second round of misuse
def test_training_never_writes_into_a_folder_that_is_not_a_run(camvid_root, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    for name in ("config.yaml", "log.csv", "curves.png"):
        (user / name).write_text(f"user's {name}")
    shutil.copy(CONFIG, user / "config.yaml")
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    assert main(["train", str(user / "config.yaml"), *_tiny(camvid_root, user, "train.iters=1")[1:]]) == 2
    assert "not a sceneparse run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before


def test_a_refused_model_option_leaves_no_half_made_run(camvid_root, tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["train", *_tiny(camvid_root, work, "train.iters=1", "model.head.bins=[0,2]")]) == 2
    assert "bins must be" in capsys.readouterr().err and not work.exists()


def test_outputs_of_the_wrong_type_are_refused_before_any_work(tiny_run, tmp_path, capsys):
    victim = tmp_path / "photo.png"
    victim.write_bytes(b"user's photo")
    ckpt = str(tiny_run / "final.pt")
    for argv in (["pack", ckpt, str(victim)], ["export", "--checkpoint", ckpt, "--out", str(victim)],
                 ["benchmark", "--checkpoint", ckpt, "--size", "64", "64", "--out", str(victim)],
                 ["check-data", CONFIG, "--out", str(victim)], ["check-data", CONFIG, "--out", CONFIG]):
        assert main(argv) == 2, argv
        assert "expected a" in capsys.readouterr().err
    assert victim.read_bytes() == b"user's photo"


def test_folder_dataset_refuses_shared_stems_and_bad_colours(tmp_path):
    from sceneparse.data import DataError, build_dataset

    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("road 300 0 0\n")
    with pytest.raises(DataError, match="RGB values are 0..255"):
        build_dataset("folder", str(tmp_path), "train")
    (tmp_path / "classes.txt").write_text("road\ncar\n")
    for name in ("v0.jpg", "v0.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / "images/train" / name)
    with pytest.raises(DataError, match="share the stem 'v0'"):
        build_dataset("folder", str(tmp_path), "train")


@pytest.mark.parametrize("content, message", [("", "an empty file"), ("just a string\n", "expected a YAML mapping"),
                                              (b"name: caf\xe9\n", "not UTF-8")])
def test_config_files_that_are_not_configs(content, message, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["train", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["predict", "x.png", "--out", "o", "--window-batch", "0"], ["predict", "x.png", "--out", "o", "--scales", "nan"],
    ["predict", "x.png", "--out", "o", "--crop-size", "0", "0"], ["predict", "x.png", "--out", "o", "--scales", "-1"],
    ["predict", "x.png", "--out", "o", "--max-image-pixels", "-1"],
    ["predict", "x.png", "--out", "o", "--crf-iterations", "-3"],
    ["evaluate", "--checkpoint", "c.pt", "--boundary-tolerance", "-1"],
    ["benchmark", "--size", "0", "0"], ["benchmark", "--batch", "0"], ["benchmark", "--repeats", "0"],
    ["export", "--checkpoint", "c.pt", "--out", "m.onnx", "--size", "-64", "64"]])
def test_flag_values_out_of_range_are_rejected_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "expected" in capsys.readouterr().err


def test_device_checkpoint_and_resume_paths_that_are_wrong(tiny_run, camvid_root, tmp_path, capsys):
    img = str(camvid_root / "val/0016E5_07959.png")
    ckpt = str(tiny_run / "final.pt")
    assert main(["predict", img, "--out", str(tmp_path / "o"), "--checkpoint", ckpt, "--device", "banana"]) == 2
    assert "is not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["predict", img, "--out", str(tmp_path / "o"), "--checkpoint", ckpt, "--device", "cuda:7"]) == 2
        assert "usable CUDA device" in capsys.readouterr().err
    assert main(["predict", img, "--out", str(tmp_path / "o"), "--checkpoint", img]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err  # not "unsafe unpickling": it is no pickle at all
    assert main(["predict", img, "--out", str(tmp_path / "o"), "--crf", "--crf-param", "bilateral_compat=abc",
                 "--checkpoint", ckpt]) == 2
    assert "--crf-param 'bilateral_compat=abc'" in capsys.readouterr().err
    assert main(["train", *_tiny(camvid_root, tmp_path / "r", "train.iters=1"), "--resume",
                 str(tiny_run / "checkpoints")]) == 2
    assert "is a directory; give a training checkpoint file" in capsys.readouterr().err


def test_allow_config_change_of_a_key_that_does_not_exist(tiny_run, camvid_root, tmp_path, capsys):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work)
    assert main(["train", *_tiny(camvid_root, work, "train.iters=4", "train.ckpt_interval=2"), "--resume", "auto",
                 "--allow-config-change", "train.bogus"]) == 2
    assert "no config key train.bogus" in capsys.readouterr().err


def test_a_corrupt_matlab_annotation_is_named(tmp_path):
    pytest.importorskip("scipy")
    from sceneparse.data import DataError
    from sceneparse.data.base import read_mat

    (tmp_path / "a.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)
    with pytest.raises(DataError, match="cannot read MATLAB file .*a.mat"):
        read_mat(tmp_path / "a.mat")


def test_pack_to_safetensors_predicts_the_same_labels(tiny_run, camvid_root, tmp_path):
    pytest.importorskip("safetensors")
    st = tmp_path / "model.safetensors"
    assert main(["pack", str(tiny_run / "final.pt"), str(st)]) == 0
    assert st.read_bytes()[8:9] == b"{"  # safetensors: a length, then a JSON header; no pickle anywhere
    loaded = load_checkpoint(st)
    assert loaded["meta"]["classes"][0] == "Sky" and loaded["config"]["model"]["arch"] == "pspnet"
    img = str(camvid_root / "val/0016E5_07959.png")
    for name, ckpt in (("pt", tiny_run / "final.pt"), ("st", st)):
        assert main(["predict", img, "--out", str(tmp_path / name), "--checkpoint", str(ckpt), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pt/0016E5_07959.png")),
                          np.asarray(Image.open(tmp_path / "st/0016E5_07959.png")))


# ---------------------------------------------------------------- predicting into a folder in use
def _photos(camvid_root, folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    src = Image.open(camvid_root / "val/0016E5_07959.png").convert("RGB").resize((64, 48))
    for name in names:
        src.save(folder / name)
    return folder


def test_predict_refuses_a_folder_another_predict_or_a_live_training_writes(tiny_run, camvid_root, tmp_path,
                                                                            capsys):
    """Two predicts into one --out (or a predict into a live training's work_dir) would replace each
    other's outputs and claim them in one predictions.json: the second refuses, naming the owner."""
    from sceneparse.utils.runlock import RunLock

    photos = _photos(camvid_root, tmp_path / "in", ["curves.png", "a.png"])
    out = tmp_path / "out"
    ckpt = ["--checkpoint", str(tiny_run / "final.pt"), "--no-progress"]
    for command, message in (("predict", "another sceneparse predict"), ("train", "another training")):
        with RunLock(out, command):  # held by this process through another open file: flock refuses
            assert main(["predict", str(photos), "--out", str(out), *ckpt]) == 2
        err = capsys.readouterr().err
        assert message in err and f"pid {os.getpid()}" in err, err
        assert not (out / "curves.png").exists() and not (out / "predictions.json").exists()
    assert main(["predict", str(photos), "--out", str(out), *ckpt]) == 0  # free again: it runs
    assert json.loads((out / "predictions.json").read_text())["outputs"]["curves.png"].endswith("curves.png")


def test_a_full_disk_leaves_a_manifest_that_claims_every_file_and_a_rerun_replaces_them(
        tiny_run, camvid_root, tmp_path, monkeypatch, capsys):
    """ENOSPC after the first image: the files left behind are in predictions.json, so a re-run (space
    freed) replaces them instead of writing `_2` copies beside them as if they were someone else's."""
    from sceneparse.inference import predict as pred

    photos = _photos(camvid_root, tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    real = pred.write_atomically
    calls = {"n": 0}

    def full_disk(path, write):
        calls["n"] += 1
        if calls["n"] > 3:  # a.png's label and overlay, then b.png's label: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    def manifest_fails_at_the_end(path, data, _real=pred.write_bytes_atomically):
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return _real(path, data)

    monkeypatch.setattr(pred, "write_atomically", full_disk)
    monkeypatch.setattr(pred, "write_bytes_atomically", manifest_fails_at_the_end)
    ckpt = ["--checkpoint", str(tiny_run / "final.pt"), "--no-progress"]
    assert main(["predict", str(photos), "--out", str(out), *ckpt]) == 1
    left = sorted(p.name for p in out.iterdir() if p.name not in (".lock", "predictions.json"))
    assert left == ["a.png", "a_overlay.jpg", "b.png"]
    claimed = json.loads((out / "predictions.json").read_text())["outputs"]
    assert set(left) <= set(claimed)
    monkeypatch.setattr(pred, "write_atomically", real)
    monkeypatch.setattr(pred, "write_bytes_atomically", manifest_fails_at_the_end.__defaults__[0])
    capsys.readouterr()
    assert main(["predict", str(photos), "--out", str(out), *ckpt]) == 0
    names = sorted(p.name for p in out.iterdir() if p.name not in (".lock", "predictions.json"))
    assert names == ["a.png", "a_overlay.jpg", "b.png", "b_overlay.jpg", "c.png", "c_overlay.jpg"]  # no _2 copies
    assert set(json.loads((out / "predictions.json").read_text())["outputs"]) == set(names)


@pytest.mark.parametrize("content, message", [
    ("trian:\n  lr: 0.1\n", "c.yaml: invalid config key or value 'trian'"),
    ("train:\n  lr: abc\n", "c.yaml: invalid config key or value 'train.lr'")])
def test_a_bad_key_or_value_in_a_config_file_names_the_file(content, message, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    assert main(["train", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_class_count_override_says_where_the_count_comes_from(capsys):
    assert main(["train", "camvid/pspnet_effl0", "model.num_classes=5"]) == 2
    assert "the class count comes from the dataset" in capsys.readouterr().err


def test_a_bad_override_value_quotes_what_was_typed(capsys):
    assert main(["train", "camvid/pspnet_effl0", "data.hflip=yes"]) == 2
    assert "override 'data.hflip=yes'" in capsys.readouterr().err


def test_an_exported_onnx_file_given_as_a_checkpoint_says_how_to_run_it(tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX protobuf starts like this
    assert main(["evaluate", "--checkpoint", str(onnx)]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint" in err and "exported graph" in err and "onnxruntime" in err
