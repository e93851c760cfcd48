import csv
import math
import shutil

import pytest
import torch

from sceneparse.config import ConfigError, load_config
from sceneparse.training.distributed import EpochSampler
from sceneparse.training.trainer import poly_lr_lambda, step_lr_lambda, train

from ..conftest import REPO, TINY


def _cfg(camvid_root, work, *extra):
    return load_config(REPO / "configs/camvid/pspnet_effl0.yaml",
                       TINY + [f"data.root={camvid_root}", f"work_dir={work}", *extra])


def _losses(work):
    with open(work / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def test_loss_falls_on_four_camvid_images(tmp_path, camvid_root):
    work = tmp_path / "run"
    cfg = _cfg(camvid_root, work, "train.iters=16", "train.lr=0.01", "train.eval_interval=16")
    scores = train(cfg, progress=False)
    losses = _losses(work)
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
    assert 0 <= scores["mIoU"] <= 100
    for f in ("config.yaml", "final.pt", "val_metrics.json", "curves.png"):
        assert (work / f).is_file(), f


def test_resume_gives_same_state_as_uninterrupted(tmp_path, camvid_root):
    a, b = tmp_path / "a", tmp_path / "b"
    extra = ("train.iters=6", "train.ckpt_interval=2", "train.eval_interval=3", "data.num_workers=1",
             "data.scale_range=[0.3,0.6]", "data.hflip=0.5", "model.head.dropout=0.3")
    train(_cfg(camvid_root, a, *extra), progress=False)
    train(_cfg(camvid_root, b, *extra), progress=False)
    # emulate a run killed after iteration 2: only that checkpoint survives
    for p in (b / "checkpoints").glob("*.pt"):
        if p.name != "iter_00000002.pt":
            p.unlink()
    (b / "final.pt").unlink()
    train(_cfg(camvid_root, b, *extra), resume="auto", progress=False)
    sa = torch.load(a / "final.pt", weights_only=True)["model"]
    sb = torch.load(b / "final.pt", weights_only=True)["model"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ca = torch.load(a / "checkpoints/iter_00000006.pt", weights_only=True)
    cb = torch.load(b / "checkpoints/iter_00000006.pt", weights_only=True)
    for sa_, sb_ in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa_["momentum_buffer"], sb_["momentum_buffer"])
    assert _losses(a) == _losses(b)  # the log has no duplicated or missing rows either


def test_epoch_sampler_resumes_mid_epoch():
    full = list(EpochSampler(10, 3, seed=1, start_iter=0, total_iters=7))
    assert len(full) == 21  # 3 iterations per epoch, 7 iterations
    assert [e for e, _ in full[:9]] == [0] * 9 and full[9][0] == 1
    assert list(EpochSampler(10, 3, seed=1, start_iter=4, total_iters=7)) == full[12:]
    assert len({i for _, i in full[:9]}) == 9  # no repeats inside an epoch


def test_poly_lr():
    f = poly_lr_lambda(100, 0.9)
    assert f(0) == 1.0 and f(100) == 0.0
    assert f(50) == pytest.approx(0.5 ** 0.9)


def test_config_rejects_unknown_key_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'train.batch_size'"):
        load_config(REPO / "configs/camvid/pspnet_effl0.yaml", ["train.batchsize=4"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.iters"])


def test_freeze_bn_keeps_statistics_and_affine_fixed(tmp_path, camvid_root):
    import torch.nn as nn

    from sceneparse.config import to_dict
    from sceneparse.models.factory import build_model_from_config

    work = tmp_path / "fz"
    cfg = _cfg(camvid_root, work, "train.iters=3", "train.freeze_bn=true", "train.eval_interval=100",
               "train.divergence_factor=0")  # random init under frozen BN explodes (loss 5 -> 533); not the point here
    train(cfg, progress=False)
    torch.manual_seed(cfg.train.seed)
    init = build_model_from_config(to_dict(cfg)["model"], 11)[0].state_dict()
    final = torch.load(work / "final.pt", weights_only=True)["model"]
    model = build_model_from_config(to_dict(cfg)["model"], 11)[0]
    bn_keys = [f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
               for p in ("weight", "bias", "running_mean", "running_var")]
    assert bn_keys and all(torch.equal(init[k], final[k]) for k in bn_keys)
    assert not torch.equal(init["decode_head.classifier.weight"], final["decode_head.classifier.weight"])


def test_downsampled_labels_protocol():
    from sceneparse.training.losses import SegLoss

    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = 5.0  # predicts class 1 everywhere
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0::2, 0::2] = 1  # the nearest-neighbour samples are all class 1 ...
    down, _ = SegLoss(downsample_labels=True)(({"out": logits}), target)
    up, _ = SegLoss()({"out": logits}, target)  # ... while 3/4 of the full-resolution pixels are class 0
    assert down.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.ones(1, 2, 2, dtype=torch.long)).item())
    assert up.item() > down.item() + 1


def test_training_with_feature_resolution_logits(tmp_path, camvid_root):
    work = tmp_path / "noul"
    scores = train(_cfg(camvid_root, work, "train.iters=2", "train.upsample_logits=false"), progress=False)
    assert len(_losses(work)) == 2 and 0 <= scores["mIoU"] <= 100


def test_bootstrapping_duplicates_images_with_hard_classes(camvid_root):
    import numpy as np

    from sceneparse.data import CamVid
    from sceneparse.training.trainer import bootstrap

    ds = CamVid(camvid_root, "train")
    ds.pairs = ds.pairs[:20]
    expected = [p for p in ds.pairs if (np.asarray(__import__("PIL.Image").Image.open(p[1])) == 10).any()]
    assert 0 < len(expected) < 20
    n = bootstrap(ds, ["Bicyclist"], copies=2)
    assert n == len(expected) and len(ds.pairs) == 20 + 2 * n
    assert ds.pairs[20:] == expected * 2
    with pytest.raises(ValueError, match="not in"):
        bootstrap(ds, ["bicycle"])


def test_init_weights_fine_tunes_from_a_checkpoint(tmp_path, camvid_root, tiny_run):
    work = tmp_path / "ft"
    cfg = _cfg(camvid_root, work, "train.iters=1", f"model.init_weights={tiny_run / 'final.pt'}",
               "model.output_stride=8", "train.lr=0", "train.head_lr_mult=0", "train.freeze_bn=true")
    train(cfg, progress=False)
    a = torch.load(tiny_run / "final.pt", weights_only=True)["model"]
    b = torch.load(work / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0 and frozen BN: the weights are the loaded ones


def test_init_weights_takes_a_model_name(tmp_path, camvid_root):
    """model.init_weights, like every --checkpoint, takes a zoo model's name (the PSPNet one: this config's arch)."""
    from sceneparse.hub import resolve_weights

    name = "camvid_pspnet_effl0"

    work = tmp_path / "ft"
    cfg = _cfg(camvid_root, work, "train.iters=1", f"model.init_weights={name}", "model.head.head_channels=256",
               "model.head.aux_channels=128", "train.lr=0", "train.head_lr_mult=0", "train.freeze_bn=true")
    train(cfg, progress=False)
    a = torch.load(resolve_weights(name), weights_only=True)["model"]
    b = torch.load(work / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_keep_best_bf16_ohem_and_class_weights_through_the_config(tmp_path, camvid_root):
    """Training features end to end: bf16 autocast on CPU, OHEM, median-frequency class weights,
    and best.pt = the validation with the best mIoU."""
    import csv

    work = tmp_path / "run"
    scores = train(_cfg(camvid_root, work, "train.iters=4", "train.eval_interval=1", "train.amp=bf16",
                        "train.ohem_thresh=0.7", "train.ohem_min_kept=1000", "train.class_weighting=median_freq"),
                   progress=False)
    with (work / "log.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["val_mIoU"]]
    assert len(rows) == 4 and all(math.isfinite(float(r["loss"])) for r in rows)
    best = max(rows, key=lambda r: float(r["val_mIoU"]))
    ckpt = torch.load(work / "best.pt", weights_only=True)
    assert ckpt["iter"] == int(best["iter"]) and ckpt["metrics"]["mIoU"] == pytest.approx(float(best["val_mIoU"]), abs=1e-3)
    assert scores["mIoU"] == pytest.approx(float(rows[-1]["val_mIoU"]), abs=1e-3)  # final = the last validation


def test_poly_with_warmup_and_floor_is_hand_computed():
    f = poly_lr_lambda(100, 1.0, warmup_iters=10, warmup_ratio=0.1, min_ratio=0.2)
    assert f(0) == pytest.approx(1.0 * 0.1)  # poly 1, ramp at its start
    assert f(5) == pytest.approx((0.8 * 0.95 + 0.2) * (0.1 + 0.9 * 0.5))
    assert f(10) == pytest.approx(0.8 * 0.9 + 0.2)  # ramp over
    assert f(100) == pytest.approx(0.2)  # the floor
    assert poly_lr_lambda(100, 0.9)(50) == pytest.approx(0.5 ** 0.9)  # the defaults are the papers' poly


def test_step_policy_is_hand_computed():
    f = step_lr_lambda([10, 15], gamma=0.1)
    assert [f(0), f(9), f(10), f(14), f(15), f(99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    g = step_lr_lambda([10], gamma=0.5, warmup_iters=4, warmup_ratio=0.2)
    assert g(2) == pytest.approx(0.2 + 0.8 * 0.5) and g(12) == pytest.approx(0.5)


def test_step_policy_in_training_drops_the_logged_lr_at_the_epoch(tmp_path, camvid_root):
    """The GRN/LRN paper's schedule (Sec. 4.1): lr x0.1 after lr_step_epochs; 4 images at batch 2 make
    2 iterations per epoch, so epoch 1.5 is iteration 3 (the lr of iterations 1-3 is the base)."""
    opts = ["train.iters=5", "train.lr=0.004", "train.lr_policy=step", "train.lr_step_epochs=[1.5]",
            "train.eval_interval=100", "train.ckpt_interval=100"]
    train(_cfg(camvid_root, tmp_path / "run", *opts), progress=False)
    lrs = [float(r.split(",")[2]) for r in (tmp_path / "run/log.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([0.004, 0.004, 0.004, 0.0004, 0.0004])


@pytest.mark.parametrize("opts, key", [(["train.lr_policy=step"], "train.lr_step_epochs"),
                                       (["train.lr_policy=cosine"], "train.lr_policy"),
                                       (["train.lr_policy=step", "train.lr_step_epochs=[10,5]"], "train.lr_step_epochs"),
                                       (["train.lr_step_gamma=0"], "train.lr_step_gamma")])
def test_step_policy_options_are_checked(tmp_path, camvid_root, opts, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(camvid_root, tmp_path / "run", *opts)


def test_adamw_with_warmup_logs_the_hand_computed_lr_and_resumes_exactly(tmp_path, camvid_root):
    opts = ["train.iters=4", "train.optimizer=adamw", "train.lr=0.001", "train.weight_decay=0.01",
            "train.warmup_iters=2", "train.min_lr_ratio=0.1", "train.eval_interval=100", "train.ckpt_interval=2"]
    train(_cfg(camvid_root, tmp_path / "full", *opts), progress=False)
    lrs = [float(r.split(",")[2]) for r in (tmp_path / "full/log.csv").read_text().splitlines()[1:]]
    assert lrs[0] == pytest.approx(0.001 * ((0.9 * 1 + 0.1) * 0.1))  # warmup from 10% at iteration 0
    assert lrs[1] == pytest.approx(0.001 * ((0.9 * 0.75 ** 0.9 + 0.1) * 0.55))
    assert lrs[2] == pytest.approx(0.001 * (0.9 * 0.5 ** 0.9 + 0.1))  # warmup over
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut/final.pt").unlink()
    (tmp_path / "cut/checkpoints/iter_00000004.pt").unlink()  # interrupted after iteration 2
    train(_cfg(camvid_root, tmp_path / "cut", *opts), resume="auto", progress=False)
    a = torch.load(tmp_path / "full/final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut/final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # AdamW state, warmup and floor restored exactly


def test_ema_of_the_weights_is_what_final_pt_holds_and_it_resumes(tmp_path, camvid_root):
    """train.ema_decay=0.5: the EMA copies the weights after step 1 and then averages 0.5 / 0.5, so after two
    steps final.pt = (w1 + w2) / 2 of the raw weights kept in the iteration checkpoints (BN statistics too)."""
    opts = ["train.iters=2", "train.ckpt_interval=1", "train.ema_decay=0.5", "train.eval_interval=100"]
    train(_cfg(camvid_root, tmp_path / "run", *opts), progress=False)
    w1 = torch.load(tmp_path / "run/checkpoints/iter_00000001.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "run/checkpoints/iter_00000002.pt", weights_only=True)["model"]
    final = torch.load(tmp_path / "run/final.pt", weights_only=True)["model"]
    floats = [k for k in final if final[k].is_floating_point()]
    assert any(not torch.equal(w1[k], w2[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(final[k], (w1[k] + w2[k]) / 2)
    shutil.copytree(tmp_path / "run", tmp_path / "cut")
    (tmp_path / "cut/final.pt").unlink()
    (tmp_path / "cut/checkpoints/iter_00000002.pt").unlink()
    train(_cfg(camvid_root, tmp_path / "cut", *opts), resume="auto", progress=False)
    again = torch.load(tmp_path / "cut/final.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], again[k]) for k in final)  # the EMA state is resumed exactly


def test_train_log_and_tensorboard_events(camvid_root, tmp_path):
    """Issue 18: a plain-text train.log with one line per logged iteration, and TensorBoard scalars
    (loss, lr, val scores, per-class IoU) plus validation overlays."""
    pytest.importorskip("tensorboard")  # the extra that provides it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sceneparse.config import load_config
    from sceneparse.training.trainer import train
    from tests.conftest import REPO, TINY

    cfg = load_config(REPO / "configs/camvid/pspnet_effl0.yaml",
                      TINY + [f"data.root={camvid_root}", f"work_dir={tmp_path}", "train.iters=2",
                              "train.eval_interval=2", "train.tensorboard=true", "train.tensorboard_images=2"])
    scores = train(cfg, progress=False)
    text = (tmp_path / "train.log").read_text()
    assert "iter 1  epoch" in text and "iter 2  epoch" in text and "val_mIoU" in text
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "val/mIoU", "val/aAcc", "val_IoU/Road"} <= set(tags["scalars"])
    assert acc.Scalars("val/mIoU")[-1].value == pytest.approx(scores["mIoU"], rel=1e-5)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert len([t for t in tags["images"] if t.startswith("val_overlay/")]) == 2
    image = acc.Images(tags["images"][0])[-1]
    assert (image.width, image.height) == (2 * 480, 360)  # prediction | ground truth at the image's size


def test_a_failed_validation_keeps_the_trained_iterations_and_resumes(tmp_path, camvid_root, monkeypatch):
    """Validation that fails (e.g. a val label changed on disk) after the last iteration must not lose the
    trained weights: the iteration is checkpointed, the error reaches train.log, and ``--resume auto``
    after the fix validates and writes final.pt with the weights an uninterrupted run ends with."""
    from sceneparse.training.trainer import Trainer

    extra = ("train.iters=3", "train.eval_interval=3", "train.ckpt_interval=100")
    train(_cfg(camvid_root, tmp_path / "a", *extra), progress=False)
    work = tmp_path / "b"
    real = Trainer.validate

    def broken(self, model=None):
        raise ValueError("label val/x.png has values [20] outside the 11 classes")

    monkeypatch.setattr(Trainer, "validate", broken)
    with pytest.raises(ValueError, match="values \\[20\\]"):
        train(_cfg(camvid_root, work, *extra), progress=False)
    assert (work / "checkpoints/iter_00000003.pt").is_file()
    assert not (work / "final.pt").exists()
    text = (work / "train.log").read_text()
    assert "values [20]" in text and "--resume auto" in text
    monkeypatch.setattr(Trainer, "validate", real)
    scores = train(_cfg(camvid_root, work, *extra), resume="auto", progress=False)
    assert 0 <= scores["mIoU"] <= 100 and (work / "val_metrics.json").is_file()
    sa = torch.load(tmp_path / "a/final.pt", weights_only=True)["model"]
    sb = torch.load(work / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert _losses(work) == _losses(tmp_path / "a")  # the failed iteration's loss row is kept, none twice
