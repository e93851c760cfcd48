"""Where an output pixel's logits come from when OS16-trained weights run at OS8 (DeepLabv3 Sec. 3.3)."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from sceneparse.models.segmentor import SegmentationModel

REPO = Path(__file__).resolve().parents[2]


class CentreBackbone(nn.Module):
    """A stand-in backbone whose stride-s feature (i, j) holds the image position it is centred on,
    (s*i, s*j), as the stride-2 convolutions (odd kernel, padding k // 2) of the real backbones place it."""

    def __init__(self, output_stride: int):
        super().__init__()
        self.output_stride, self.out_channels = output_stride, [2]

    def set_output_stride(self, output_stride: int) -> None:
        self.output_stride = output_stride

    def forward(self, x):
        s = self.output_stride
        h, w = math.ceil(x.shape[-2] / s), math.ceil(x.shape[-1] / s)
        rows = (s * torch.arange(h, dtype=torch.float32))[:, None].expand(h, w)
        cols = (s * torch.arange(w, dtype=torch.float32))[None, :].expand(h, w)
        return [torch.stack([rows, cols])[None].expand(x.shape[0], 2, h, w)]


class LastFeature(nn.Module):
    def forward(self, feats):
        return feats[-1]


@pytest.mark.parametrize("size", [(360, 480), (352, 480), (361, 479)])
def test_weights_run_at_another_output_stride_keep_their_trained_geometry(size):
    """Each output pixel shows the features centred at ``pixel - offset``. Trained at OS16, the weights
    learned the OS16 offset (on a side divisible by 16: 7.5 px, where bilinear upsampling with
    align_corners=False puts a feature centred at pixel c); at OS8 that upsampling alone would put it at
    c + 3.5, so the map would come out 4 px up/left of what the weights predict for. The OS8 output must
    show the same offsets as the OS16 one, on average over the image (for a side the stride does not divide,
    the OS16 offset varies across the image and the OS8 one cannot follow it exactly)."""
    model = SegmentationModel(CentreBackbone(16), LastFeature()).eval()
    x = torch.zeros(1, 3, *size)
    h, w = size
    pixel = torch.stack([torch.arange(h, dtype=torch.float32)[:, None].expand(h, w),
                         torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)])
    with torch.no_grad():
        off16 = pixel - model(x)["out"][0]
        model.set_output_stride(8)
        off8 = pixel - model(x)["out"][0]
        model.set_output_stride(16)
        again16 = pixel - model(x)["out"][0]
    inner = (slice(None), slice(16, -16), slice(16, -16))  # away from the edge clamping
    torch.testing.assert_close(again16, off16)
    for axis in (0, 1):
        gap = float((off8[inner][axis] - off16[inner][axis]).mean())
        assert abs(gap) <= 0.5, (axis, gap)
    if w % 16 == 0:  # a constant 7.5 px offset at both strides
        assert torch.allclose(off16[inner][1], torch.tensor(7.5)) and torch.allclose(off8[inner][1], torch.tensor(7.5))


def test_low_resolution_logits_are_only_returned_at_the_trained_output_stride():
    """The engine upsamples low-resolution logits itself (align_corners=False, no shift): a model switched to
    another output stride returns full-size logits, placed as above."""
    model = SegmentationModel(CentreBackbone(16), LastFeature()).eval()
    assert model.set_eval_logit_upsampling(False)
    x = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        assert model(x)["out"].shape[-2:] == (4, 6)
        model.set_output_stride(8)
        assert model(x)["out"].shape[-2:] == (64, 96)


def _delta(n: int, s: int) -> float:
    """Mean offset (px) at which bilinear upsampling (align_corners=False) shows a stride-s feature."""
    return ((n - 1) - s * (math.ceil(n / s) - 1)) / 2


@pytest.mark.parametrize("size", [(270, 360), (450, 600), (180, 240), (720, 960), (5, 7)])
def test_input_size_for_gives_the_training_crops_geometry(size):
    """Trained on 360x480 crops at OS16 (mean offsets 3.5 / 7.5 px), the model asks for the nearest input size
    with the same offsets: e.g. 270x360 (0.75x CamVid: 6.5 / 3.5 px) becomes 264x368."""
    model = SegmentationModel(CentreBackbone(16), LastFeature())
    assert model.input_size_for(*size) == size  # no training size known: as given
    model.train_size = (360, 480)
    h, w = model.input_size_for(*size)
    assert (_delta(h, 16), _delta(w, 16)) == (3.5, 7.5)
    assert h > 0 and w > 0 and (min(size) < 16 or (abs(h - size[0]) <= 8 and abs(w - size[1]) <= 8))
    assert model.input_size_for(360, 480) == (360, 480)
    model.set_output_stride(8)  # the rule follows the trained stride
    assert model.input_size_for(*size) == (h, w)


class SizeRecorder(nn.Module):
    """Records the input sizes it is run at; uniform logits at stride 16."""

    def __init__(self, train_size):
        super().__init__()
        self.seen, self.model = [], SegmentationModel(CentreBackbone(16), LastFeature())
        self.model.train_size = train_size
        self.input_size_for = self.model.input_size_for
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return {"out": torch.zeros(x.shape[0], 2, math.ceil(x.shape[-2] / 16), math.ceil(x.shape[-1] / 16))}


def test_multi_scale_inference_runs_each_scale_at_the_training_geometry():
    from sceneparse.inference.engine import InferenceConfig, infer_probs, predict_labels

    model = SizeRecorder((360, 480))
    x = torch.zeros(1, 3, 360, 480)
    probs = infer_probs(model, x, InferenceConfig(scales=(0.75, 1.0, 1.25), flip=False))
    assert probs.shape == (1, 2, 360, 480)
    assert model.seen == [model.input_size_for(270, 360), (360, 480), model.input_size_for(450, 600)]
    assert all((_delta(h, 16), _delta(w, 16)) == (3.5, 7.5) for h, w in model.seen)
    model.seen.clear()
    assert predict_labels(model, torch.zeros(1, 3, 720, 960)).shape == (1, 720, 960)
    assert model.seen == [model.input_size_for(720, 960)] != [(720, 960)]
    model.seen.clear()  # the sliding window's crops carry their own geometry: sizes as they are
    infer_probs(model, x, InferenceConfig(mode="slide", crop_size=(360, 480), stride=(240, 320), scales=(0.75,)))
    assert model.seen == [(360, 480)]  # 270x360 padded to the 360x480 window


def test_a_loaded_checkpoint_knows_its_training_crops(tiny_run):
    from sceneparse.models.factory import model_from_checkpoint

    model, _ = model_from_checkpoint(tiny_run / "final.pt")
    assert model.train_size == (96, 128)  # TINY's data.crop_size
    assert model.input_size_for(360, 480) == (368, 480)  # 96 and 128 are multiples of 16, as 368 and 480


def test_congruent_input_size_by_hand():
    """Crops 360x480 at stride 16 (residues 8 and 0): 270 -> 264 (8 + 16 * 16), 360 -> 368 (23 * 16); a side
    half a stride from two candidates rounds up; sides that would be 0 or less become the smallest positive
    one."""
    from sceneparse.models.segmentor import congruent_input_size

    assert congruent_input_size(270, 360, (360, 480), 16) == (264, 368)
    assert congruent_input_size(360, 480, (360, 480), 16) == (360, 480)
    assert congruent_input_size(5, 7, (360, 480), 16) == (8, 16)
    assert congruent_input_size(100, 100, (97, 97), 8) == (97, 97)  # 100 is 3 from 97, 5 from 105
    assert congruent_input_size(101, 101, (97, 97), 8) == (105, 105)  # 4 from both: rounds up


def test_training_geometry_is_what_runtimes_and_exported_files_carry():
    from sceneparse.deploy.backends import RuntimeModel
    from sceneparse.models.segmentor import training_geometry

    model = SegmentationModel(CentreBackbone(16), LastFeature())
    assert training_geometry(model) is None  # training size unknown: no rule
    model.train_size = (360, 480)
    g = training_geometry(model)
    assert g == {"crop_size": [360, 480], "output_stride": 16}
    model.set_output_stride(8)
    assert training_geometry(model) == g  # the trained stride, not the current one

    class Cascade(nn.Module):  # a refinement cascade's rule is its front's
        def __init__(self, front):
            super().__init__()
            self.front = front

    assert training_geometry(Cascade(model)) == g
    assert training_geometry(nn.Conv2d(3, 3, 1)) is None
    runtime = RuntimeModel(input_geometry=g)
    for size in ((270, 360), (450, 600), (5, 7)):
        assert runtime.input_size_for(*size) == model.input_size_for(*size)
    assert RuntimeModel().input_size_for(270, 360) == (270, 360)


def test_an_ir_written_before_the_geometry_was_stored_reads_it_from_its_config():
    """Such an IR's rule is that of the model its config describes (built without weights): PSPNet trained on
    360x480 crops at OS16 has one; the pyramid model (config output_stride 8, but it resizes its input itself)
    has none, nor has a config that builds nothing."""
    from sceneparse.config import load_config, to_dict
    from sceneparse.inference.pipeline import ir_geometry

    psp = to_dict(load_config(REPO / "configs/camvid/pspnet_effl0.yaml", ["model.pretrained=null"]))
    pyr = to_dict(load_config(REPO / "configs/camvid/pyramid_effl0.yaml", ["model.pretrained=null"]))
    assert ir_geometry({"config": psp, "num_classes": 11}) == {"crop_size": [360, 480], "output_stride": 16}
    assert ir_geometry({"config": pyr, "num_classes": 11}) is None
    stored = {"crop_size": [96, 128], "output_stride": 8}
    assert ir_geometry({"config": psp, "num_classes": 11, "input_geometry": stored}) == stored
    assert ir_geometry({"config": {"model": {"arch": "no_such_arch"}}, "num_classes": 11}) is None


def test_shifted_upsampling_repeats_the_edge_rows_and_columns():
    """The OS8 output of OS16 weights on a 40x64 input: moved by geometry_shift = (0, 4) px (the 40-px side: 3.5
    px offset at both strides; the 64-px side: 7.5 at OS16, 3.5 at OS8), the first 4 columns repeating the
    upsampled map's first."""
    model = SegmentationModel(CentreBackbone(16), LastFeature()).eval()
    model.set_output_stride(8)
    logits = torch.randn(1, 3, 5, 8)
    assert model.geometry_shift((40, 64)) == (0, 4)
    plain = torch.nn.functional.interpolate(logits, size=(40, 64), mode="bilinear", align_corners=False)
    out = model.upsample_logits(logits, (40, 64))
    torch.testing.assert_close(out[..., 4:], plain[..., :-4])
    torch.testing.assert_close(out[..., :4], plain[..., :1].expand(-1, -1, -1, 4))


class TruncInt(int):
    """An int whose ``//`` truncates toward zero, as an exported graph's integer division does."""

    def _wrap(self, v):
        return TruncInt(v)

    def __floordiv__(self, o):
        q = abs(int(self)) // abs(int(o))
        return TruncInt(q if (int(self) >= 0) == (int(o) >= 0) else -q)

    def __rfloordiv__(self, o):
        return TruncInt(o).__floordiv__(self)

    def __add__(self, o):
        return TruncInt(int(self) + int(o))

    __radd__ = __add__

    def __sub__(self, o):
        return TruncInt(int(self) - int(o))

    def __rsub__(self, o):
        return TruncInt(int(o) - int(self))

    def __mul__(self, o):
        return TruncInt(int(self) * int(o))

    __rmul__ = __mul__

    def __neg__(self):
        return TruncInt(-int(self))


@pytest.mark.parametrize("strides", [(16, 8), (16, 32), (8, 16)])
def test_geometry_shift_is_the_same_under_an_exported_graphs_truncating_division(strides):
    """The shift is computed from the input size inside an exported graph (symbolic H, W), whose integer
    division truncates toward zero: its ceil must not divide a negative number (written as -(-n // s) it gave
    77 -> 9 instead of 10 cells at OS8, and logits 4 px off in the file); the final halving is exact."""
    trained, run = strides
    model = SegmentationModel(CentreBackbone(trained), LastFeature())
    model.set_output_stride(run)
    for n in (77, 165, 360, 480, 9, 1, 100):
        assert model.geometry_shift((TruncInt(n), TruncInt(n))) == model.geometry_shift((n, n)), n


@pytest.mark.slow
def test_an_output_stride_switched_model_exports_with_dynamic_sizes(tmp_path):
    """``sceneparse export --output-stride 8`` of OS16 weights: the shift is computed from the graph's symbolic
    sizes, so the file runs every size (not only the tracing example's) and equals PyTorch at each."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sceneparse.deploy.export import export_onnx, onnx_parity
    from sceneparse.models import build_model

    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", 5, output_stride=16, head_channels=8).eval()
    model.set_output_stride(8)
    path = export_onnx(model, tmp_path / "m.onnx", (96, 128), input_format="float", outputs="logits")
    r = onnx_parity(path, model, [(96, 128), (77, 165)])
    assert r["argmax_agreement"] > 0.999 and max(r["per_size"].values()) < 1e-3, r
