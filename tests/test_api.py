"""Issue 18: the Python API (sceneparse.load / list_models / Segmenter) and the overlay legend."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sceneparse
from sceneparse.models.factory import model_from_checkpoint
from sceneparse.inference.engine import InferenceConfig, predict_labels
from sceneparse.inference.vis import class_shares, draw_legend, overlay
from sceneparse.data.transforms import normalize_image


@pytest.fixture(scope="module")
def image():
    g = np.random.default_rng(0)
    return g.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd size: labels must come back at it


def test_load_parses_pil_array_and_path_alike_and_matches_the_engine(tiny_run, image, tmp_path):
    ckpt = tiny_run / "final.pt"
    seg = sceneparse.load(ckpt, device="cpu", fold_bn=False)
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    labels = seg(image)
    assert labels.shape == (37, 53) and labels.dtype == np.uint8
    np.testing.assert_array_equal(seg(Image.fromarray(image)), labels)
    np.testing.assert_array_equal(seg(str(path)), labels)
    model, c = model_from_checkpoint(ckpt)
    x = normalize_image(image, c["meta"]["mean"], c["meta"]["std"])[None]
    expect = predict_labels(model, x, InferenceConfig.for_config(c["config"]))[0].numpy()
    np.testing.assert_array_equal(labels, expect)
    probs = seg.probs(image)
    assert probs.shape == (len(seg.classes), 37, 53) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), labels)
    assert seg.classes == c["meta"]["classes"] and len(seg.palette) == len(seg.classes)
    assert seg.meta["dataset"] == "camvid" and seg.meta["crop_size"] == [96, 128]


def test_batches_lists_and_tensors_give_what_single_calls_give(tiny_run, image):
    seg = sceneparse.load(tiny_run / "final.pt", device="cpu", fold_bn=False)
    small = image[:20, :31].copy()
    out = seg([image, Image.fromarray(small)])  # any sizes: a list of label maps
    assert isinstance(out, list) and [o.shape for o in out] == [(37, 53), (20, 31)]
    np.testing.assert_array_equal(out[0], seg(image))
    np.testing.assert_array_equal(out[1], seg(small))
    flipped = image[:, ::-1].copy()
    batch = torch.from_numpy(np.stack([image, flipped])).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    labels = seg(batch)
    assert labels.shape == (2, 37, 53) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[1], seg(flipped))
    np.testing.assert_array_equal(seg(batch.float() / 255), labels)  # torchvision's to_tensor convention
    np.testing.assert_array_equal(seg(np.stack([image, flipped])), labels)  # (N, H, W, 3) uint8
    probs = seg.probs(batch)
    assert probs.shape == (2, len(seg.classes), 37, 53)
    np.testing.assert_array_equal(probs.argmax(1), labels)


def test_load_with_folded_bn_and_inference_keywords(tiny_run, image):
    plain = sceneparse.load(tiny_run / "final.pt", device="cpu", fold_bn=False)
    folded = sceneparse.load(tiny_run / "final.pt", device="cpu")
    assert (folded(image) == plain(image)).mean() > 0.99  # same function up to float rounding
    tta = sceneparse.load(tiny_run / "final.pt", device="cpu", scales=(0.75, 1.0), flip=True, fold_bn=False)
    assert tta.inference.flip and tuple(tta.inference.scales) == (0.75, 1.0)
    from sceneparse.inference.engine import infer_probs

    model, c = model_from_checkpoint(tiny_run / "final.pt")
    even = image[:36, :48]  # 0.75x is exact: flipping commutes with the resizing, so views can be built by hand
    x = normalize_image(even, c["meta"]["mean"], c["meta"]["std"])[None]
    views = [infer_probs(model, x, InferenceConfig(scales=(s,))) for s in (0.75, 1.0)]
    views += [infer_probs(model, x.flip(-1), InferenceConfig(scales=(s,))).flip(-1) for s in (0.75, 1.0)]
    expect = (sum(views) / 4)[0].numpy()
    np.testing.assert_allclose(tta.probs(even), expect, atol=1e-5)  # the mean of the four views
    slide = sceneparse.load(tiny_run / "final.pt", device="cpu", mode="slide", crop_size=(32, 32))
    assert slide(image).shape == (37, 53)
    with pytest.raises(ValueError, match="crop_size"):
        sceneparse.load(tiny_run / "final.pt", device="cpu", mode="slide")


def test_overlay_is_the_blend_plus_a_legend_box(tiny_run, image):
    seg = sceneparse.load(tiny_run / "final.pt", device="cpu")
    big = np.kron(image, np.ones((8, 8, 1), dtype=np.uint8))  # 296x424: room for the legend
    labels = seg(big)
    plain = seg.overlay(big, alpha=0.4, legend=False)
    np.testing.assert_array_equal(np.asarray(plain), overlay(big, labels, seg.palette, 0.4))
    with_legend = np.asarray(seg.overlay(big, alpha=0.4))
    assert with_legend.shape == big.shape
    changed = np.argwhere((with_legend != np.asarray(plain)).any(-1))
    top, left, bottom, right = changed[:, 0].min(), changed[:, 1].min(), changed[:, 0].max(), changed[:, 1].max()
    assert (top == 0 or bottom == big.shape[0] - 1) and (left == 0 or right == big.shape[1] - 1)  # in a corner
    assert (bottom - top + 1) * (right - left + 1) < 0.2 * big.shape[0] * big.shape[1]  # hiding little
    with pytest.raises(ValueError, match="alpha"):
        seg.overlay(big, alpha=1.5)


def test_overlay_draws_class_borders_and_the_legend_avoids_detail():
    image = np.full((360, 480, 3), 128, np.uint8)
    label = np.zeros((360, 480), np.uint8)  # "Sky" (grey) over a grey image: the colour alone shows nothing
    label[200:, :] = 3
    label[250:300, 20:120] = 8  # detail in the bottom-left
    palette = [(128, 128, 128)] * 3 + [(128, 64, 128)] + [(0, 0, 0)] * 4 + [(64, 0, 128)]
    out = overlay(image, label, palette, 0.5)
    assert (out[199, 10] < 64).all() and (out[100, 10] == 128).all()  # the Sky/Road border is drawn
    plain = Image.fromarray(out)
    with_legend = np.asarray(draw_legend(plain, label, ["c"] * 9, palette))
    changed = np.argwhere((with_legend != out).any(-1))
    assert changed[:, 0].min() == 0 and changed[:, 1].min() == 0  # top-left: nothing but one class there
    label[:100, :150] = np.arange(150) % 2  # now the top-left is busy, the top-right is not
    with_legend = np.asarray(draw_legend(Image.fromarray(overlay(image, label, palette)), label, ["c"] * 9, palette))
    changed = np.argwhere((with_legend != overlay(image, label, palette)).any(-1))
    assert changed[:, 1].max() == 479 and changed[:, 0].min() == 0


def test_class_shares_and_legend_rows():
    label = np.array([[0, 0, 0, 2], [2, 255, 1, 0]], dtype=np.uint8)
    np.testing.assert_allclose(class_shares(label, 3), [4 / 8, 1 / 8, 2 / 8])
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    img = Image.new("RGB", (300, 200), (128, 128, 128))
    out = np.asarray(draw_legend(img, np.kron(label, np.ones((100, 75), dtype=np.uint8)), ["a", "b", "c"], palette))
    # colour swatches in share order: red (a, 50%), blue (c, 25%), green (b, 12.5%)
    swatch_x = 4 + 5  # pad + half the 10-px swatch (font size 10 at min side 200)
    rows = [tuple(out[y, swatch_x]) for y in range(out.shape[0]) if tuple(out[y, swatch_x]) in map(tuple, palette)]
    order = list(dict.fromkeys(rows))
    assert order == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    tiny = np.asarray(draw_legend(Image.new("RGB", (40, 24)), np.arange(3, dtype=np.uint8)[None].repeat(24, 0)
                                  .repeat(14, 1)[:, :40], ["a", "b", "c"], palette))
    assert tiny.shape == (24, 40, 3)  # the size never changes
    # 10 px font, 13 px rows: one row fits in 24 px, so the box holds "+3 more" and no colour swatch
    assert not any((tiny == np.array(c, dtype=np.uint8)).all(-1).any() for c in palette)
    assert (tiny.max(-1) > 200).any()  # its white text


def test_bad_inputs_and_names_get_one_line_errors(tiny_run, image):
    seg = sceneparse.load(tiny_run / "final.pt", device="cpu")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        seg(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        seg(image[..., 0])
    with pytest.raises(TypeError, match="PIL image"):
        seg(b"\x89PNG")
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        seg(torch.randn(3, 8, 8))  # an already normalised tensor: the model normalises itself
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        seg(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty list"):
        seg([])
    from sceneparse.data.base import DataError
    with pytest.raises(DataError, match="not found"):
        seg("/nonexistent/x.jpg")
    with pytest.raises(ValueError, match="neither a model name"):
        sceneparse.load("no_such_model")


def test_load_refuses_a_file_that_would_run_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned > " + str(tmp_path / "marker"),))

    bad = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ValueError, match="system"):
        sceneparse.load(bad)
    assert not (tmp_path / "marker").exists()


def test_list_models_and_the_models_command_show_the_packaged_default(capsys):
    from sceneparse.cli import main
    from sceneparse.constants import DEFAULT_MODEL

    models = sceneparse.list_models()
    assert DEFAULT_MODEL in models and models[DEFAULT_MODEL]["default"]
    m = models[DEFAULT_MODEL]
    assert m["dataset"] == "camvid" and m["num_classes"] == 11 and m["metrics"]["split"] == "val"
    assert 0 < m["metrics"]["mIoU"] <= 100 and m["size_mb"] <= 20
    assert main(["models"]) == 0
    assert f"{DEFAULT_MODEL} (default)" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[DEFAULT_MODEL]["arch"] == m["arch"]


def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    from sceneparse.config import load_config, packaged_configs, resolve_config_path
    from sceneparse.constants import PACKAGED_CONFIGS_DIR

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: what a wheel install sees
    assert "camvid/pspnet_effl0" in packaged_configs()
    expect = PACKAGED_CONFIGS_DIR / "camvid/pspnet_effl0.yaml"
    for name in ("camvid/pspnet_effl0", "camvid/pspnet_effl0.yaml", "configs/camvid/pspnet_effl0.yaml"):
        assert resolve_config_path(name) == expect
    assert load_config("camvid/pspnet_effl0").model.arch == "pspnet"
    with pytest.raises(FileNotFoundError, match="shipped configs: .*camvid/pspnet_effl0"):
        resolve_config_path("camvid/nope")


def test_pack_records_the_recipe_and_training_splits(tiny_run, tmp_path):
    from sceneparse.cli import main
    from sceneparse.checkpoint import load_checkpoint

    out = tmp_path / "packed.pt"
    assert main(["pack", str(tiny_run / "final.pt"), str(out), "--fp16"]) == 0
    meta = load_checkpoint(out)["meta"]
    assert meta["train_splits"] == ["train"]
    assert meta["recipe"].startswith("pspnet efficientnet_lite0 OS16, random init, head bins 1-2-3-6; camvid train, "
                                     "crops 96x128")
    assert "batch 2, 4 iterations" in meta["recipe"] and "loss CE" in meta["recipe"]
    seg = sceneparse.load(out, device="cpu")
    assert seg.meta["recipe"] == meta["recipe"] and seg.meta["train_splits"] == ["train"]
    again = tmp_path / "again.pt"  # repacking a packed file keeps its metadata
    assert main(["pack", str(out), str(again)]) == 0
    assert load_checkpoint(again)["meta"]["recipe"] == meta["recipe"]


def test_packaged_weights_named_like_in_a_checkout_are_found_from_anywhere(tmp_path, monkeypatch):
    from sceneparse.constants import DEFAULT_MODEL, PACKAGED_WEIGHTS_DIR
    from sceneparse.hub import resolve_weights

    monkeypatch.chdir(tmp_path)  # configs written before the src/ layout name sceneparse/weights/<name>.pt
    expect = PACKAGED_WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt"
    assert resolve_weights(f"sceneparse/weights/{DEFAULT_MODEL}.pt") == expect == resolve_weights(DEFAULT_MODEL)
    with pytest.raises(ValueError, match="neither a model name"):
        resolve_weights("elsewhere/weights/camvid_pspnet_effl0.pt")


def test_config_names_stay_inside_the_shipped_folder(tmp_path, monkeypatch):
    from sceneparse.config import resolve_config_path

    monkeypatch.chdir(tmp_path)
    for bad in ("", ".", "configs", "camvid/../../weights/camvid_pspnet_effl0.pt", "camvid"):
        with pytest.raises(FileNotFoundError, match="shipped configs"):
            resolve_config_path(bad)


def test_a_sample_photo_ships_and_the_package_imports_without_torch():
    import subprocess
    import sys

    path = sceneparse.sample_image()
    assert path.is_file() and Image.open(path).size == (480, 360)
    code = ("import sys, sceneparse; from sceneparse.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)); "
            "print(sceneparse.__version__, callable(sceneparse.load))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", out  # `sceneparse --help` and `import sceneparse` load no torch (help in well under 1 s)
    assert out[1].endswith("True")  # and the API is there on first use


def test_models_json_into_a_closed_pipe_is_quiet():
    import subprocess
    import sys

    # the reader is gone before the first write (`true` exits at once; the import takes longer): EPIPE
    proc = subprocess.run(f"{sys.executable} -m sceneparse models --json | true; echo ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True)
    assert proc.stderr == "" and proc.stdout.strip() == "0", (proc.stdout, proc.stderr)


def test_a_model_folder_adds_models_to_the_zoo(tiny_run, camvid_root, tmp_path, monkeypatch, capsys):
    # files in $SCENEPARSE_MODELS are models by name for load, --checkpoint and `sceneparse models`; the packaged
    # default keeps its name; an unreadable file is listed with its error and hides nothing
    import shutil

    from sceneparse.cli import main
    from sceneparse.constants import DEFAULT_MODEL
    from sceneparse.hub import MODELS_ENV, available_models, model_dirs

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    assert main(["pack", str(tiny_run / "final.pt"), str(zoo / "tiny_zoo.pt")]) == 0
    shutil.copy(zoo / "tiny_zoo.pt", zoo / f"{DEFAULT_MODEL}.pt")  # shadowed: the packaged file wins
    (zoo / "broken.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv(MODELS_ENV, f"{tmp_path / 'missing'}{os.pathsep}{zoo}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert model_dirs()[-3:] == [tmp_path / "missing", zoo, tmp_path / "cache/sceneparse/models"]
    found = available_models()
    assert found["tiny_zoo"] == zoo / "tiny_zoo.pt" and found[DEFAULT_MODEL].parent.name == "weights"
    models = sceneparse.list_models()
    assert not models["tiny_zoo"]["packaged"] and models[DEFAULT_MODEL]["packaged"]
    assert "is not a checkpoint" in models["broken"]["error"]
    capsys.readouterr()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"from {zoo}" in out and "broken: cannot be read" in out
    seg = sceneparse.load("tiny_zoo")
    assert seg.meta["dataset"] == "camvid"
    img = str(sorted((camvid_root / "val").glob("*.png"))[0])
    assert main(["predict", img, "--checkpoint", "tiny_zoo", "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    assert (tmp_path / "p" / Path(img).name).is_file()


def test_models_speed_times_each_model_here(monkeypatch, capsys):
    from sceneparse.cli import main
    from sceneparse.constants import DEFAULT_MODEL

    calls = []

    def fake_speed(name, repeats=5, **kw):  # the timing itself is model_speed's; here: that it is asked and shown
        calls.append((name, repeats))
        return {"s_per_image": 0.0123, "image": [360, 480], "repeats": repeats, "threads": 2, "cpu": "TestCPU"}

    import sceneparse.api

    monkeypatch.setattr(sceneparse.api, "model_speed", fake_speed)
    assert main(["models", "--speed", "2"]) == 0
    assert (DEFAULT_MODEL, 2) in calls
    assert "speed: 12 ms per 480x360 image (median of 2; fp32, 2 threads, TestCPU)" in capsys.readouterr().out


def test_model_speed_runs_the_model_on_the_sample_image():
    from sceneparse.api import model_speed

    r = model_speed(None, repeats=1, warmup=0)
    assert r["image"] == [360, 480] and r["s_per_image"] > 0 and r["repeats"] == 1 and r["cpu"]
