"""The bad-input matrix of issue 8: every case gives a clear error or a documented handling."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.data import CamVid, DataError, read_image
from sceneparse.data.base import read_label


def test_image_modes_are_read_as_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (3, 4, 3) and (out == gray[..., None]).all()

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, colour kept
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert (read_image(tmp_path / "rgba.png") == [200, 0, 0]).all()

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png")[0, 1].tolist() == [40, 50, 60]

    # 16-bit grayscale: scaled by >> 8, not clipped to 255 (PIL's convert would saturate)
    Image.fromarray(np.array([[0, 32768], [65535, 256]], np.uint16)).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g16.png")[..., 0].tolist() == [[0, 128], [255, 1]]


def test_exif_rotated_jpeg_is_upright(tmp_path):
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))  # stored 10 high, 20 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_truncated_and_missing_files(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="cannot read image .*cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match="label not found"):
        read_label(tmp_path / "nolabel.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read label"):
        read_label(tmp_path / "empty.png")


def test_empty_split_list_is_refused(tmp_path):
    (tmp_path / "train.txt").write_text("\n")
    with pytest.raises(DataError, match="no image/label pairs"):
        CamVid(tmp_path, "train")


def test_image_smaller_than_the_crop_is_padded_with_ignore(camvid_root):
    from sceneparse.data import build_train_transform

    ds = CamVid(camvid_root, "val", transform=build_train_transform((512, 640), (0.5,) * 3, (0.25,) * 3,
                                                                    scale_range=(0.5, 0.5), rotate=0.0))
    sample = ds[0]
    assert sample["image"].shape == (3, 512, 640) and sample["label"].shape == (512, 640)
    assert (sample["label"] == 255).float().mean() > 0.5  # the padded area is ignored, not class 0


def test_checkpoint_of_another_arch_or_class_count_lists_the_keys(tmp_path, capsys):
    from sceneparse.cli import main
    from sceneparse.models.factory import load_model_weights
    from sceneparse.models import build_model

    psp = build_model("pspnet", "resnet18", 11, 16, head_channels=16)
    with pytest.raises(ValueError, match=r"missing: .*decode_head\.aspp"):
        load_model_weights(build_model("deeplabv3", "resnet18", 11, 16, head_channels=16), psp.state_dict())
    with pytest.raises(ValueError, match=r"shape mismatch: .*classifier.weight: \(11, 16, 1, 1\) vs \(19, 16, 1, 1\)"):
        load_model_weights(build_model("pspnet", "resnet18", 19, 16, head_channels=16), psp.state_dict())
    torch.save({"not": "a checkpoint"}, tmp_path / "x.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "x.pt" in capsys.readouterr().err


def test_evaluation_where_every_label_is_ignored_is_an_error_with_valid_json(tiny_run, camvid_root, tmp_path, capsys):
    """Every val label 'Unlabelled' (11 -> ignore_index): the scores are undefined. Exit 2 with one line
    saying so, and the JSON is still written, valid (null, not a bare NaN)."""
    import json
    import shutil

    from sceneparse.cli import main

    root = tmp_path / "camvid"
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    lines = []
    for line in (camvid_root / "val.txt").read_text().splitlines()[:2]:
        img, lbl = line.split()
        shutil.copy(camvid_root / img, root / img)
        h, w = np.asarray(Image.open(camvid_root / lbl)).shape[:2]
        Image.fromarray(np.full((h, w), 11, np.uint8)).save(root / lbl)
        lines.append(line)
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--checkpoint", str(tiny_run / "final.pt"), f"data.root={root}", "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no labelled pixel" in err and str(out) in err
    scores = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert scores["mIoU"] is None and scores["aAcc"] is None and scores["num_images"] == 2


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_overrides_a_user_might_mistype_are_one_line_errors(camvid_root, tmp_path, capsys):
    from sceneparse.cli import main

    config = "configs/camvid/pspnet_effl0.yaml"
    work = tmp_path / "w"
    assert main(["train", config, "model.head.bins.x=1", f"--work-dir={work}"]) == 2  # a key below a list
    assert "model.head.bins.x" in _one_error_line(capsys) and not work.exists()
    # the run folder is work_dir/name: a name cannot put it anywhere else
    for name in ("../../tmp/escape", "/tmp/escape", "..", "a/b"):
        assert main(["train", config, f"name={name}", f"--work-dir={work}"]) == 2, name
        assert "name=" in _one_error_line(capsys)
    assert not (tmp_path / "tmp").exists() and not work.exists()


def test_environment_variables_never_reach_a_config(monkeypatch, camvid_root, tmp_path, capsys):
    """${oc.env:...} would copy a secret into config.yaml and every checkpoint, which are made to be shared."""
    from sceneparse.cli import main
    from sceneparse.config import ConfigError, load_config

    monkeypatch.setenv("SCENEPARSE_TEST_SECRET", "hunter2")
    with pytest.raises(ConfigError, match="oc.env"):
        load_config("configs/camvid/pspnet_effl0.yaml", ["name=${oc.env:SCENEPARSE_TEST_SECRET}"])
    shared = tmp_path / "shared.yaml"
    shared.write_text("data:\n  root: ${oc.env:SCENEPARSE_TEST_SECRET}\n")
    with pytest.raises(ConfigError, match=r"data.root=.*oc.env"):
        load_config(shared)
    assert main(["train", str(shared), f"work_dir={tmp_path / 'w'}"]) == 2
    err = _one_error_line(capsys)
    assert "hunter2" not in err and not (tmp_path / "w").exists()
    assert load_config(None, ["train.lr=0.02", "train.head_lr_mult=${train.lr}"]).train.head_lr_mult == 0.02


def test_a_list_file_that_is_not_utf8_names_the_file_and_line(camvid_root, tmp_path, capsys):
    from sceneparse.cli import main

    root = tmp_path / "camvid"
    root.mkdir()
    good = (camvid_root / "train.txt").read_bytes().splitlines(keepends=True)
    (root / "train.txt").write_bytes(b"".join(good[:2]) + b"val/caf\xff.png valannot/x.png\n")
    with pytest.raises(DataError, match=r"train.txt:3: not UTF-8 text \(byte 0xff"):
        CamVid(root, "train")
    assert main(["check-data", "configs/camvid/pspnet_effl0.yaml", f"data.root={root}", "--no-progress"]) == 2
    assert "train.txt:3" in _one_error_line(capsys)


def test_an_unreadable_checkpoint_is_named(capsys, tmp_path):
    from sceneparse.cli import main

    mem = "/proc/self/mem"  # a file that opens, then fails every read with EIO
    assert main(["evaluate", "--checkpoint", mem, "--no-progress"]) == 2
    err = _one_error_line(capsys)
    assert mem in err and "Input/output error" in err


def test_model_files_are_not_replaced_without_force(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnxscript")  # the extra that provides it
    from sceneparse.cli import main

    ckpt = str(tiny_run / "final.pt")
    for argv, out in ((["export", "--checkpoint", ckpt, "--size", "64", "64", "--no-check", "--out"], "m.onnx"),
                      (["pack", ckpt], "p.pt")):
        victim = tmp_path / out
        victim.write_bytes(b"an earlier model")
        assert main([*argv, str(victim)]) == 2
        assert "exists; pass --force" in _one_error_line(capsys)
        assert victim.read_bytes() == b"an earlier model"
        assert main([*argv, str(victim), "--force"]) == 0
        assert victim.read_bytes() != b"an earlier model"
    assert main(["export", "--checkpoint", "camvid_pspnet_effl0", "--size", "64", "64", "--no-check", "--out",
                 str(tmp_path / "packaged.onnx")]) == 0  # a packaged model's name, as every command takes
    import onnx

    import sceneparse
    from sceneparse.deploy.export import read_metadata

    meta, scores = read_metadata(tmp_path / "packaged.onnx"), sceneparse.list_models()["camvid_pspnet_effl0"]["metrics"]
    assert meta["name"] == "camvid_pspnet_effl0" and meta["metrics"]["mIoU"] == pytest.approx(scores["mIoU"], abs=0.01)
    m = onnx.load(str(tmp_path / "packaged.onnx"), load_external_data=False)
    assert (m.producer_name, m.producer_version, m.model_version) == ("sceneparse", sceneparse.__version__, 1)
    assert f"mIoU {scores['mIoU']:.2f}" in m.doc_string


def test_predict_recursive_says_what_it_skipped(tiny_run, camvid_root, tmp_path, caplog):
    import logging
    import os

    from sceneparse.cli import main

    tree = tmp_path / "in"
    (tree / "sub").mkdir(parents=True)
    Image.open(sorted((camvid_root / "val").glob("*.png"))[0]).convert("RGB").resize((64, 48)).save(tree / "sub/a.png")
    Image.new("RGB", (8, 8)).save(tree / "anim.gif")
    os.mkfifo(tree / "pipe.png")
    (tree / "gone.png").symlink_to(tmp_path / "nowhere.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tree / "linked").symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="sceneparse"):
        assert main(["predict", str(tree), "-r", "--checkpoint", str(tiny_run / "final.pt"),
                     "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (tmp_path / "out/sub/a.png").is_file()
    said = [r.getMessage() for r in caplog.records if "skipped under" in r.getMessage()]
    assert len(said) == 1, said
    for what in ("anim.gif", "pipe.png", "gone.png", "linked", "dangling", "FIFO", "not followed"):
        assert what in said[0], (what, said[0])


def test_a_relative_data_root_that_is_not_there_names_the_folder_it_was_read_from(tmp_path, monkeypatch, capsys):
    from sceneparse.cli import main

    monkeypatch.chdir(tmp_path)  # the shipped config's root (../shared/data/camvid) is relative
    assert main(["check-data", "camvid/pspnet_effl0", "--no-progress"]) == 2
    err = _one_error_line(capsys)
    assert "../shared/data/camvid not found" in err and f"current folder, {tmp_path}" in err and "data.root=" in err


def test_predict_checks_its_inputs_before_the_model_and_leaves_no_empty_folder(tiny_run, camvid_root, tmp_path,
                                                                              monkeypatch, capsys, caplog):
    import logging

    from sceneparse.cli import main
    from sceneparse.models import factory as checkpoint

    out = tmp_path / "out"
    real = checkpoint.model_from_checkpoint
    monkeypatch.setattr(checkpoint, "model_from_checkpoint", lambda *a, **k: pytest.fail("model loaded first"))
    assert main(["predict", str(tmp_path / "nope.jpg"), "--checkpoint", str(tiny_run / "final.pt"),
                 "--out", str(out), "--no-progress"]) == 2
    assert "nope.jpg not found" in _one_error_line(capsys) and not out.exists()
    monkeypatch.setattr(checkpoint, "model_from_checkpoint", real)
    photo = tmp_path / "ok.png"
    Image.open(sorted((camvid_root / "val").glob("*.png"))[0]).convert("RGB").resize((64, 48)).save(photo)
    with caplog.at_level(logging.ERROR, logger="sceneparse"):
        assert main(["predict", str(tmp_path / "nope.jpg"), str(photo), "--checkpoint", str(tiny_run / "final.pt"),
                     "--out", str(out), "--no-progress"]) == 1
    assert (out / "ok.png").is_file()
    said = [r.getMessage() for r in caplog.records] + capsys.readouterr().err.splitlines()
    assert sum("image not found" in m for m in said) == 1, said  # said once, not twice
    # a model that cannot be loaded: the --out folder made for it is removed again
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["predict", str(photo), "--checkpoint", str(tmp_path / "corrupt.pt"), "--out",
                 str(tmp_path / "out2"), "--no-progress"]) == 2
    assert not (tmp_path / "out2").exists()


def test_a_folder_where_one_image_is_read_says_it_is_a_folder(tmp_path):
    from sceneparse.data import DataError, read_image

    with pytest.raises(DataError, match="is a directory, not an image"):
        read_image(tmp_path)
