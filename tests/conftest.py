import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CAMVID = SHARED / "camvid"
ADE = SHARED / "ade20k-sample" / "ADEChallengeData2016"


def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get("SCENEPARSE_TEST_THREADS", "2")))
    # SCENEPARSE_TEST_WITHOUT=openvino,onnx,gradio,...: those modules cannot be imported (as on an install
    # without the extras; importlib.util.find_spec says None too), to check that their tests skip by name
    import sys

    for name in filter(None, os.environ.get("SCENEPARSE_TEST_WITHOUT", "").split(",")):
        sys.modules[name] = None


@pytest.fixture(scope="session")
def camvid_root():
    if not (CAMVID / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID


@pytest.fixture(scope="session")
def ade_root():
    if not ADE.is_dir():
        pytest.skip(f"ADE20K sample not found at {ADE}")
    return ADE


# a tiny, deterministic training setup on 4 real CamVid images (random init, small crops, no augmentation)
TINY = ["model.pretrained=null", "model.head.head_channels=32", "model.head.aux_channels=16",
        "train.batch_size=2", "data.crop_size=[96,128]", "data.scale_range=[0.3,0.3]", "data.rotate=0",
        "data.blur=0", "data.hflip=0", "data.max_train_samples=4", "data.max_val_samples=2",
        "data.num_workers=0", "train.log_interval=1", "train.seed=0"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, camvid_root):
    """A 4-iteration training run; returns its work dir (has final.pt, log.csv, ...)."""
    from sceneparse.config import load_config
    from sceneparse.training.trainer import train

    work = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(REPO / "configs/camvid/pspnet_effl0.yaml",
                      TINY + [f"data.root={camvid_root}", f"work_dir={work}", "train.iters=4", "train.ckpt_interval=2"])
    train(cfg, progress=False)
    return work


def register_loss_hook(monkeypatch, hook, name: str = "pspnet_hooked"):
    """Register, for one test, an architecture through the public registry (``models.ARCHS``: a new
    architecture is one builder plus one entry): PSPNet whose training loss passes through
    ``hook(call_number, total, parts) -> (total, parts)``. Returns the arch name and the call counter."""
    from sceneparse.models import ARCHS

    calls = [0]

    def builder(backbone, num_classes, **head):
        model = ARCHS["pspnet"](backbone, num_classes, **head)
        own_loss = model.loss

        def loss(outputs, target, criterion):
            calls[0] += 1
            return hook(calls[0], *own_loss(outputs, target, criterion))

        model.loss = loss
        return model

    monkeypatch.setitem(ARCHS, name, builder)
    return name, calls


def load_script(name: str):
    """``scripts/NAME.py`` imported as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / f"scripts/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
