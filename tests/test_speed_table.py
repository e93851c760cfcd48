"""The speed tables' repeated-runs section (scripts/speed_table.py): runs grouped by row, median and range."""
import json

from .conftest import load_script


def _module():
    return load_script("speed_table")


def test_repeat_rows_group_runs_and_give_median_and_range(tmp_path):
    run = {"precision": "bf16", "output": "logits", "runtime": "openvino"}
    for name, ratio in [("pspnet_effl0_os8_openvino_bf16_logits_a", 0.95), ("pspnet_effl0_os8_openvino_bf16_logits_b", 1.06),
                        ("pspnet_effl0_os8_openvino_bf16_logits_c", 0.98), ("camvid_openvino_bf16_logits_a", 0.99),
                        ("camvid_openvino_bf16_logits_b", 1.03)]:
        (tmp_path / f"{name}.json").write_text(json.dumps({**run, "ratio_ours_over_runtime": ratio}))
    rows = _module().repeat_rows(tmp_path)
    assert len(rows) == 2
    camvid, os8 = rows
    assert camvid.startswith("| CamVid PSPNet-Lite0 OS16 (zoo) | bf16 | logits | openvino | 0.99x, 1.03x | **1.01x** | 0.99-1.03 |")
    assert "| 0.95x, 1.06x, 0.98x | **0.98x** | 0.95-1.06 |" in os8
    assert _module().repeat_rows(tmp_path / "missing") == []


def test_repeat_rows_refuse_runs_of_different_kinds_under_one_name(tmp_path):
    for name, precision in [("camvid_openvino_x_a", "bf16"), ("camvid_openvino_x_b", "fp32")]:
        (tmp_path / f"{name}.json").write_text(json.dumps({"precision": precision, "runtime": "openvino",
                                                           "ratio_ours_over_runtime": 1.0}))
    import pytest
    with pytest.raises(ValueError, match="mix precisions"):
        _module().repeat_rows(tmp_path)
