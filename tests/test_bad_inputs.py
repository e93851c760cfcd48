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
    from sceneparse.engine.checkpoint import load_model_weights
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
