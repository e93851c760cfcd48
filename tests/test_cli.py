import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sceneparse.cli import main
from sceneparse.cli.common import DEFAULT_WEIGHTS


def test_evaluate_writes_json_with_standard_keys(tiny_run, camvid_root, tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--checkpoint", str(tiny_run / "final.pt"), f"data.root={camvid_root}",
               "data.max_val_samples=3", "--out", str(out), "--no-progress"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert {"mIoU", "aAcc", "mAcc", "IoU"} <= set(m)
    assert list(m["IoU"]) == ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                              "Car", "Pedestrian", "Bicyclist"]
    assert m["num_images"] == 3
    assert "mIoU" in capsys.readouterr().out
    conf = np.array(m["confusion_matrix"])
    assert conf.shape == (11, 11) and conf.sum() > 0
    assert (tmp_path / "m.md").read_text().count("\n| ") == 12  # header + 11 classes
    for png in ("m_confusion.png", "m_iou.png"):
        assert Image.open(tmp_path / png).size[0] > 100


def test_evaluate_at_other_output_stride(tiny_run, camvid_root, tmp_path):
    out = tmp_path / "m8.json"
    assert main(["evaluate", "--checkpoint", str(tiny_run / "final.pt"), f"data.root={camvid_root}",
                 "data.max_val_samples=1", "--output-stride", "8", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["output_stride"] == 8


def test_predict_skips_corrupt_file_and_parses_the_others(tiny_run, camvid_root, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(camvid_root / "val/0016E5_07959.png", inp / "street.png")
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rc = main(["predict", str(inp), str(tmp_path / "missing.png"), "--out", str(tmp_path / "out"),
               "--checkpoint", str(tiny_run / "final.pt"), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "missing.png" in err
    label = Image.open(tmp_path / "out/street.png")
    assert label.mode == "P" and label.size == (480, 360)
    assert np.asarray(label).max() < 11
    assert Image.open(tmp_path / "out/street_overlay.jpg").size == (480, 360)
    assert not (tmp_path / "out/broken.png").exists()


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="packaged weights not built")
def test_packaged_model_is_the_default_and_parses_a_street(camvid_root, tmp_path):
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 2**20
    assert main(["predict", str(camvid_root / "val/0016E5_07959.png"), "--out", str(tmp_path), "--no-progress"]) == 0
    pred = np.asarray(Image.open(tmp_path / "0016E5_07959.png")).astype(np.int64)
    gt = np.asarray(Image.open(camvid_root / "valannot/0016E5_07959.png")).astype(np.int64)
    keep = gt < 11
    assert (pred[keep] == gt[keep]).mean() > 0.8  # a trained model, not a random one


def test_bad_config_key_exits_with_message(tmp_path, capsys):
    assert main(["train", "configs/camvid/pspnet_effl0.yaml", "train.itres=3"]) == 2
    assert "did you mean 'train.iters'" in capsys.readouterr().err


def test_predict_large_image_switches_to_sliding_window(tiny_run, tmp_path, caplog):
    import logging

    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(big)
    with caplog.at_level(logging.INFO):
        rc = main(["predict", str(big), "--out", str(tmp_path / "o"), "--checkpoint", str(tiny_run / "final.pt"),
                   "--max-whole-pixels", "10000", "--no-progress"])
    assert rc == 0 and "sliding window" in caplog.text
    assert Image.open(tmp_path / "o/big.png").size == (500, 300)


def test_validation_and_evaluate_use_the_configs_eval_section(camvid_root, tmp_path):
    """Issue 16: validation during training runs the config's eval settings, the same ones `evaluate`
    uses by default (here a sliding window with flip), so the two scores are the same number."""
    from .conftest import REPO, TINY

    work = tmp_path / "run"
    assert main(["train", str(REPO / "configs/camvid/pspnet_effl0.yaml"), *TINY, f"data.root={camvid_root}",
                 f"work_dir={work}", "train.iters=2", "eval.mode=slide", "eval.crop_size=[96,128]",
                 "eval.flip=true", "--no-progress"]) == 0
    trained = json.loads((work / "val_metrics.json").read_text())
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(work / "final.pt"), "--out", str(out), "--no-progress"]) == 0
    evaluated = json.loads(out.read_text())
    assert evaluated["inference"]["mode"] == "slide" and evaluated["inference"]["flip"] is True
    assert evaluated["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-9)
    assert main(["evaluate", "--checkpoint", str(work / "final.pt"), "--out", str(out), "--mode", "whole",
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["inference"]["mode"] == "whole"  # a flag overrides the section


def test_doctor_reports_versions_cpu_and_extras(capsys):
    import json

    from sceneparse.cli import main
    from sceneparse.utils.sysinfo import EXTRAS, cpu_model

    assert main(["doctor", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["cpu"] == cpu_model() and r["torch"].startswith("2.") and r["problems"] == []
    assert set(r["extras"]) == set(EXTRAS) and all("adds" in e for e in r["extras"].values())
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    installed = "x" if r["extras"]["demo"]["installed"] else " "
    assert "torchvision" in out and "training precision" in out and f"[{installed}] demo" in out


def test_a_torchvision_that_does_not_fit_torch_says_what_to_install(monkeypatch):
    import sys

    import torch

    from sceneparse.utils.sysinfo import check_torch_pair, matching_torchvision

    assert matching_torchvision("2.13.0+cpu") == "0.28.0" and matching_torchvision("2.14.1") == "0.29.1"
    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it fails, as a mismatched build does
    with pytest.raises(ImportError, match=r"pip install torch==\d+\.\d+\.\d+ torchvision==0\.\d+\.\d+") as e:
        check_torch_pair()
    assert torch.__version__ in str(e.value)


def test_evaluate_refuses_model_overrides_instead_of_ignoring_them(tiny_run, camvid_root, tmp_path, capsys):
    # the model is rebuilt from the checkpoint's own config: a model.* override would silently not apply
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--checkpoint", str(tiny_run / "final.pt"), f"data.root={camvid_root}",
               "model.head.iterations=1", "--out", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "model.head.iterations" in err and "--output-stride" in err
    assert not out.exists()
    # analyze has no --output-stride: the same refusal without that hint
    rc = main(["analyze", "--checkpoint", str(tiny_run / "final.pt"), f"data.root={camvid_root}",
               "model.output_stride=8", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.output_stride" in err and "--output-stride" not in err
    assert not out.exists()


def test_evaluating_a_packaged_model_by_name_writes_into_the_current_folder(camvid_root, tmp_path, monkeypatch):
    """Without --out, the report goes beside a checkpoint file; for a packaged model given by name that would be
    the package's own folder: it goes into the current folder instead, named after the model."""
    from sceneparse.api import resolve_model

    weights_dir = resolve_model(None).parent
    before = set(weights_dir.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--checkpoint", "camvid_pyramid_effl0", "--no-progress", f"data.root={camvid_root}",
                 "data.max_val_samples=1"]) == 0
    assert (tmp_path / "camvid_pyramid_effl0_metrics_val.json").is_file()
    assert set(weights_dir.iterdir()) == before
    assert main(["analyze", "--checkpoint", "camvid_pyramid_effl0", "--no-progress", f"data.root={camvid_root}",
                 "data.max_val_samples=1"]) == 0
    assert (tmp_path / "camvid_pyramid_effl0_analysis_val.json").is_file()
    assert set(weights_dir.iterdir()) == before
