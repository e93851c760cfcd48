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


def _write_video(path, frames, fps=5):
    import av

    with av.open(str(path), "w") as dst:
        stream = dst.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)


def test_video_in_overlay_video_out(tiny_run, camvid_root, tmp_path, capsys):
    import pytest

    av = pytest.importorskip("av")
    src = sorted((camvid_root / "val").iterdir())[:6]
    frames = [np.asarray(Image.open(p).convert("RGB").resize((96, 72))) for p in src]
    clip = tmp_path / "clip.mp4"
    _write_video(clip, frames)
    out = tmp_path / "out"
    assert main(["predict", str(clip), str(tmp_path / "missing.mp4"), "--out", str(out), "--checkpoint",
                 str(tiny_run / "final.pt"), "--no-progress", "--no-legend"]) == 1  # the missing one fails alone
    printed = capsys.readouterr()
    assert f"wrote overlay video {out / 'clip_overlay.mp4'}" in printed.out and "missing.mp4" in printed.err
    with av.open(str(out / "clip_overlay.mp4")) as f:
        decoded = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (72, 96, 3)
    # the same engine as for images: frame 0 (as decoded from the input) parsed and blended by hand
    import sceneparse
    from sceneparse.inference.vis import overlay

    with av.open(str(clip)) as f:
        first = next(iter(f.decode(video=0))).to_ndarray(format="rgb24")
    seg = sceneparse.load(tiny_run / "final.pt", device="cpu", fold_bn=False)
    expect = overlay(first, seg(first), seg.palette).astype(float)
    assert np.abs(decoded[0].astype(float) - expect).mean() < 8  # H.264 is lossy
    assert main(["predict", str(clip), "--out", str(out), "--checkpoint", str(tiny_run / "final.pt"),
                 "--no-progress"]) == 0
    assert (out / "clip_overlay_2.mp4").is_file()  # never over an earlier output


def test_recursive_never_parses_earlier_outputs_anywhere_in_the_tree(tiny_run, camvid_root, tmp_path, capsys):
    _tree(tmp_path / "in", camvid_root)
    ck = ["--checkpoint", str(tiny_run / "final.pt"), "-r", "--no-progress"]
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "in" / "preds"), *ck]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out2"), *ck]) == 0  # preds/ inside in/
    assert "parsed 3 of 3" in capsys.readouterr().out
    assert not (tmp_path / "out2" / "preds").exists()
    # outputs written next to the inputs themselves (--out = the input folder), twice
    for _ in range(2):
        assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "in"), *ck]) == 0
        assert "parsed 3 of 3" in capsys.readouterr().out
    assert not list((tmp_path / "in").rglob("*overlay_overlay*")) and not list((tmp_path / "in").rglob("*_3.png"))
    assert (tmp_path / "in" / "x_2.png").is_file()  # x.png is an input: its label map gets another name
    # a file given directly and through its folder is parsed once
    assert main(["predict", str(tmp_path / "in" / "x.png"), str(tmp_path / "in"), "--out", str(tmp_path / "o3"), *ck]) == 0
    assert "parsed 3 of 3" in capsys.readouterr().out


def test_more_than_256_classes_are_drawn_and_written_as_16_bit():
    from sceneparse.inference.vis import overlay, palette_image

    label = np.array([[0, 299], [150, 255]], dtype=np.int64)
    palette = [[i % 256, (3 * i) % 256, 7] for i in range(300)]
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    out = overlay(img, label, palette, alpha=1.0, boundaries=False)  # every pixel of a 2x2 map is a border
    assert out[0, 1].tolist() == palette[299]
    png = palette_image(label, palette)
    assert png.mode.startswith("I") and np.asarray(png).tolist() == label.tolist()


def test_tta_on_a_one_pixel_wide_image(tiny_run):
    import sceneparse

    seg = sceneparse.load(tiny_run / "final.pt", device="cpu", scales=(0.75, 1.0, 1.25), flip=True)
    for shape in ((1, 1, 3), (3, 1, 3), (1, 9, 3)):
        assert seg(np.full(shape, 128, dtype=np.uint8)).shape == shape[:2]


def test_a_folder_that_holds_earlier_predictions_gives_only_its_photos(tiny_run, camvid_root, tmp_path, capsys):
    """``predict DIR --out DIR`` writes label maps and overlays beside the photos; parsing DIR again into
    another folder must not take those outputs for photos (its predictions.json lists them)."""
    src = sorted((camvid_root / "val").iterdir())[0]
    (tmp_path / "sl").mkdir()
    Image.open(src).resize((96, 72)).save(tmp_path / "sl" / "c.png")
    ckpt = ["--checkpoint", str(tiny_run / "final.pt"), "--no-progress"]
    assert main(["predict", str(tmp_path / "sl"), "--out", str(tmp_path / "sl"), *ckpt]) == 0
    assert len(list((tmp_path / "sl").glob("*.png"))) == 2  # the photo and its label map (c_2.png)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "sl"), "--out", str(tmp_path / "real"), *ckpt]) == 0
    assert "parsed 1 of 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "real").glob("[!.]*")) == ["c.png", "c_overlay.jpg", "predictions.json"]
