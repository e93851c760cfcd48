"""Issue 18: the Python API (sceneparse.load / list_models / Segmenter) and the overlay legend."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import sceneparse
from sceneparse.engine.checkpoint import model_from_checkpoint
from sceneparse.engine.inference import InferenceConfig, predict_labels
from sceneparse.engine.predict import class_shares, draw_legend, normalise, overlay


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
    x = normalise(image, c["meta"]["mean"], c["meta"]["std"])[None]
    expect = predict_labels(model, x, InferenceConfig.for_config(c["config"]))[0].numpy()
    np.testing.assert_array_equal(labels, expect)
    probs = seg.probs(image)
    assert probs.shape == (len(seg.classes), 37, 53) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), labels)
    assert seg.classes == c["meta"]["classes"] and len(seg.palette) == len(seg.classes)
    assert seg.meta["dataset"] == "camvid" and seg.meta["crop_size"] == [96, 128]


def test_load_with_folded_bn_and_inference_keywords(tiny_run, image):
    plain = sceneparse.load(tiny_run / "final.pt", device="cpu", fold_bn=False)
    folded = sceneparse.load(tiny_run / "final.pt", device="cpu")
    assert (folded(image) == plain(image)).mean() > 0.99  # same function up to float rounding
    tta = sceneparse.load(tiny_run / "final.pt", device="cpu", scales=(0.75, 1.0), flip=True, fold_bn=False)
    assert tta.inference.flip and tuple(tta.inference.scales) == (0.75, 1.0)
    from sceneparse.engine.inference import infer_probs

    model, c = model_from_checkpoint(tiny_run / "final.pt")
    even = image[:36, :48]  # 0.75x is exact: flipping commutes with the resizing, so views can be built by hand
    x = normalise(even, c["meta"]["mean"], c["meta"]["std"])[None]
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
    assert len(changed) and changed[:, 0].min() < 20 and changed[:, 1].min() < 20  # the top-left corner
    assert changed[:, 0].max() < big.shape[0] - 1 or changed[:, 1].max() < big.shape[1] - 1  # not everything
    with pytest.raises(ValueError, match="alpha"):
        seg.overlay(big, alpha=1.5)


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
        seg(torch.zeros(3, 8, 8))
    from sceneparse.data.base import DataError
    with pytest.raises(DataError, match="not found"):
        seg("/nonexistent/x.jpg")
    with pytest.raises(ValueError, match="neither a packaged model"):
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
    from sceneparse.engine.checkpoint import load_checkpoint

    out = tmp_path / "packed.pt"
    assert main(["pack", str(tiny_run / "final.pt"), str(out), "--fp16"]) == 0
    meta = load_checkpoint(out)["meta"]
    assert meta["train_splits"] == ["train"]
    assert meta["recipe"].startswith("pspnet efficientnet_lite0 OS16, random init; camvid train, crops 96x128")
    assert "batch 2, 4 iterations" in meta["recipe"] and "loss CE" in meta["recipe"]
    seg = sceneparse.load(out, device="cpu")
    assert seg.meta["recipe"] == meta["recipe"] and seg.meta["train_splits"] == ["train"]
    again = tmp_path / "again.pt"  # repacking a packed file keeps its metadata
    assert main(["pack", str(out), str(again)]) == 0
    assert load_checkpoint(again)["meta"]["recipe"] == meta["recipe"]


def test_packaged_weights_named_like_in_a_checkout_are_found_from_anywhere(tmp_path, monkeypatch):
    from sceneparse.constants import DEFAULT_MODEL, PACKAGED_WEIGHTS_DIR
    from sceneparse.engine.checkpoint import resolve_weights

    monkeypatch.chdir(tmp_path)  # the refine configs name sceneparse/weights/camvid_pspnet_effl0.pt
    expect = PACKAGED_WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt"
    assert resolve_weights(f"sceneparse/weights/{DEFAULT_MODEL}.pt") == expect == resolve_weights(DEFAULT_MODEL)
    with pytest.raises(ValueError, match="neither a packaged model"):
        resolve_weights("elsewhere/weights/camvid_pspnet_effl0.pt")


def test_config_names_stay_inside_the_shipped_folder(tmp_path, monkeypatch):
    from sceneparse.config import resolve_config_path

    monkeypatch.chdir(tmp_path)
    for bad in ("", ".", "configs", "camvid/../../weights/camvid_pspnet_effl0.pt", "camvid"):
        with pytest.raises(FileNotFoundError, match="shipped configs"):
            resolve_config_path(bad)
