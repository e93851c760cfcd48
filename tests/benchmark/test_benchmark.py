import json

import pytest
import torch
import torch.nn as nn

from sceneparse import build_model
from sceneparse.cli import main
from sceneparse.benchmark.throughput import benchmark_inference, count_flops
from sceneparse.inference.engine import InferenceConfig


class OneByOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_flops_of_a_1x1_conv_are_hand_computed():
    assert count_flops(OneByOne(), torch.randn(1, 3, 10, 20)) == 2 * 3 * 4 * 10 * 20


def test_benchmark_reports_memory_and_throughput():
    r = benchmark_inference(OneByOne(), (32, 48), batch=2, repeats=3, warmup=1,
                            infer=InferenceConfig(mode="slide", crop_size=(16, 16)))
    assert r["input"] == [2, 3, 32, 48] and len(r["latency_s_all"]) == 3
    median = sorted(r["latency_s_all"])[1]
    assert r["images_per_s"] == pytest.approx(2 / median)  # batch / median latency
    assert r["peak_rss_MiB"] > 50  # the process holds at least torch itself
    assert r["gflops_per_image"] is None  # not defined for a multi-window pass


def test_benchmark_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["benchmark", "--arch", "fcn", "--backbone", "resnet18", "--size", "64", "80", "--repeats", "2",
                 "--warmup", "1", "--output-stride", "32", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["output_stride"] == 32
    assert r["gflops_per_image"] == pytest.approx(count_flops(build_model("fcn", "resnet18", 19, 32),
                                                              torch.randn(1, 3, 64, 80)) / 1e9, rel=1e-6)
    assert r["achieved_gflops_per_s"] == pytest.approx(r["gflops_per_image"] * r["images_per_s"], rel=1e-6)
    # fcn-resnet18 at OS32 has no dilated or depthwise convolution: no layer was rewritten, whatever the CPU
    assert r["layer_rewrites"] == {"prepadded_dense": 0, "prepadded_depthwise": 0, "float32_depthwise": 0,
                                   "native_depthwise_bf16": 0}


class Dilated(nn.Module):
    def __init__(self, dilation):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=dilation, dilation=dilation, bias=False)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_padding_flops_are_hand_computed():
    from sceneparse.benchmark.throughput import padding_flops

    x = torch.randn(1, 1, 4, 4)
    # 3x3, padding 1 on 4x4: per axis the taps that read the input are 3 + 4 + 3 = 10 of 12
    assert count_flops(Dilated(1), x) == 2 * 16 * 9
    assert padding_flops(Dilated(1), x) == 2 * (144 - 100)
    # dilation 4 on 4x4: only the centre tap reads the input (4 of 12 per axis)
    assert padding_flops(Dilated(4), x) == 2 * (144 - 16)
    assert padding_flops(OneByOne(), torch.randn(1, 3, 5, 5)) == 0


def test_benchmark_labels_times_what_predict_computes(tmp_path, monkeypatch):
    import sceneparse.benchmark.throughput as bench

    seen, real = [], bench.predict_labels

    def spy(model, x, cfg=None):  # the function predict calls, on the model as benchmark prepared it
        seen.append((model.upsample_eval_logits, tuple(x.shape)))
        return real(model, x, cfg)

    monkeypatch.setattr(bench, "predict_labels", spy)
    out = tmp_path / "b.json"
    assert main(["benchmark", "--arch", "pspnet", "--backbone", "resnet18", "--size", "64", "80", "--repeats", "2",
                 "--warmup", "1", "--labels", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["output"] == "labels" and len(r["latency_s_all"]) == 2
    assert seen == [(False, (1, 3, 64, 80))] * 3  # decode-head logits, fused upsample + argmax; warmup + 2 timed
    assert main(["benchmark", "--arch", "pspnet", "--backbone", "resnet18", "--size", "64", "80", "--repeats", "1",
                 "--warmup", "0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["output"] == "probs" and len(seen) == 3


def test_benchmark_runs_a_runtime_backend(tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "b.json"  # a runtime model has no parameters: no FLOP count, no crash
    assert main(["benchmark", "--arch", "pspnet", "--backbone", "resnet18", "--size", "64", "80", "--repeats", "2",
                 "--warmup", "1", "--backend", "openvino", "--labels", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["backend"] == "openvino" and r["output"] == "labels" and r["images_per_s"] > 0
    assert r["gflops_per_image"] is None
