"""The zoo page generator (scripts/zoo_page.py): the table row of a model, its other runs."""
import json
from pathlib import Path

from .conftest import load_script


def _zoo_page(tmp_path, monkeypatch):
    mod = load_script("zoo_page")
    monkeypatch.setattr(mod, "REPO", tmp_path)
    return mod


def test_zoo_row_gives_scores_and_the_other_runs_found(tmp_path, monkeypatch):
    mod = _zoo_page(tmp_path, monkeypatch)
    (tmp_path / "s1.json").write_text(json.dumps({"mIoU": 70.123}))
    monkeypatch.setattr(mod, "RERUNS", {"m": ["s1.json", "missing.json"]})
    assert mod.reruns("m") == [70.123] and mod.reruns("other") == []
    models = {"m": {"default": True, "arch": "pyramid_output", "backbone": "efficientnet_lite0", "output_stride": 4,
                    "metrics": {"mIoU": 71.29, "aAcc": 93.8, "mAcc": 81.4, "boundary_F": 76.1,
                                "IoU": {"Pole": 14.2}},
                    "size_mb": 6.3, "train_splits": ["train"], "recipe": "r"},
              "n": {"default": False, "arch": "pspnet", "backbone": "efficientnet_lite0", "output_stride": 16,
                    "metrics": {"mIoU": 62.11}, "size_mb": 8.8, "train_splits": ["train"]}}
    text = mod.page(models, {"m": {"s_per_image": 0.049, "cpu": "cpu", "threads": 2, "repeats": 5}}, "p.jpg",
                    Path("img.png"), False)
    rows = [line for line in text.splitlines() if line.startswith(("| m ", "| n "))]
    assert rows[0].startswith("| m (default) | Specialize and Fuse (pyramidal output), efficientnet_lite0 OS4 | "
                              "71.29 | 70.12 | 93.80 | 81.40 | 76.10 | 6.3 | 49 | train | r |")
    assert rows[1].startswith("| n | PSPNet, efficientnet_lite0 OS16 | 62.11 | - | - |")
    assert "| Pole | 14.2 |" in text
