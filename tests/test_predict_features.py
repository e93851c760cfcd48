"""Issue 18: predict as people use it: recursive folders, confidence maps, the fast paths."""
import json

import numpy as np
from PIL import Image

from sceneparse.cli import main


def _tree(root, camvid_root):
    src = sorted((camvid_root / "val").iterdir())[:3]
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.open(src[0]).resize((96, 72)).save(root / "x.png")
    Image.open(src[1]).resize((96, 72)).save(root / "a" / "y.jpg")
    Image.open(src[2]).resize((96, 72)).save(root / "a" / "b" / "z.png")
    Image.open(src[2]).resize((96, 72)).save(root / ".hidden" / "h.png")


def test_recursive_mirrors_the_tree_and_skips_its_own_output_inside_it(tiny_run, camvid_root, tmp_path, capsys):
    _tree(tmp_path / "in", camvid_root)
    out = tmp_path / "in" / "parsed"  # inside the input tree: must not be parsed again on a rerun
    args = ["predict", str(tmp_path / "in"), "--out", str(out), "--checkpoint", str(tiny_run / "final.pt"),
            "-r", "--no-progress"]
    assert main(args) == 0
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.png")} == {"x.png", "a/y.png", "a/b/z.png"}
    assert (out / "a" / "b" / "z_overlay.jpg").is_file()
    assert json.loads((out / "a" / "predictions.json").read_text())["outputs"]["y.png"].endswith("a/y.jpg")
    capsys.readouterr()
    assert main(args) == 0  # again: the outputs inside in/ are not inputs
    assert "parsed 3 of 3" in capsys.readouterr().out
    assert not list(out.rglob("*_2.png"))


def test_confidence_map_is_the_max_probability(tiny_run, camvid_root, tmp_path):
    import sceneparse

    _tree(tmp_path / "in", camvid_root)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in" / "x.png"), "--out", str(out), "--checkpoint",
                 str(tiny_run / "final.pt"), "--confidence", "--no-progress"]) == 0
    conf = np.asarray(Image.open(out / "x_conf.png"))
    probs = sceneparse.load(tiny_run / "final.pt", device="cpu", fold_bn=False).probs(tmp_path / "in" / "x.png")
    assert conf.shape == probs.shape[1:] and conf.dtype == np.uint8
    assert np.abs(conf.astype(int) - np.round(probs.max(0) * 255)).max() <= 1
    labels = np.asarray(Image.open(out / "x.png"))
    assert (labels == probs.argmax(0)).mean() > 0.999


def test_fast_paths_give_the_same_labels(tiny_run, camvid_root, tmp_path):
    _tree(tmp_path / "in", camvid_root)
    outs = {}
    for name, flags in {"plain": [], "folded": ["--fold-bn"], "bf16": ["--bf16"]}.items():
        out = tmp_path / name
        assert main(["predict", str(tmp_path / "in" / "x.png"), "--out", str(out), "--checkpoint",
                     str(tiny_run / "final.pt"), "--no-progress", *flags]) == 0
        outs[name] = np.asarray(Image.open(out / "x.png"))
    assert (outs["folded"] == outs["plain"]).mean() > 0.999
    assert (outs["bf16"] == outs["plain"]).mean() > 0.9  # bf16 rounding flips a few near-tie pixels
