"""scripts/class_errors.py: where one class's errors lie (distance histograms, object hits, shifted IoU), hand-made maps."""
import numpy as np
import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def ce():
    return load_script("class_errors")


def test_distances_split_near_misses_from_spurious_detections(ce):
    gt = np.zeros((20, 20), np.int64)
    gt[:, 5] = 2  # a 1-px pole in column 5
    pred = np.zeros_like(gt)
    pred[:, 6] = 2  # predicted one pixel to the right: every FP 1 px from the pole, every FN 1 px from a prediction
    pred[0:4, 15] = 2  # a spurious pole 10 px away
    fp, fn = ce.error_distances(pred, gt, 2, bins=(0, 1.5, 8, 1e9))
    assert fp.tolist() == [20, 0, 4]
    assert fn.tolist() == [20, 0, 0]


def test_distances_without_any_prediction_or_truth_go_to_the_last_bin(ce):
    gt = np.zeros((6, 6), np.int64)
    pred = np.zeros_like(gt)
    pred[2, 2] = 2
    fp, fn = ce.error_distances(pred, gt, 2, bins=(0, 2, 1e9))
    assert fp.tolist() == [0, 1] and fn.tolist() == [0, 0]
    fp, fn = ce.error_distances(gt, pred, 2, bins=(0, 2, 1e9))  # roles swapped: one missed pixel, nothing predicted
    assert fp.tolist() == [0, 0] and fn.tolist() == [0, 1]


def test_object_hits_and_widths(ce):
    gt = np.zeros((30, 30), np.int64)
    gt[0:20, 2] = 2  # 20 px, width 1: half of it hit
    gt[0:10, 10:13] = 2  # 30 px, width 3: missed
    gt[25, 25] = 2  # 1 px: below min_px, not counted
    pred = np.zeros_like(gt)
    pred[0:10, 2] = 2
    hits, widths = ce.object_hits(pred, gt, 2, min_px=20)
    assert sorted(zip(widths.tolist(), hits.tolist())) == [(1.0, 0.5), (3.0, 0.0)]


def test_shifted_iou_peaks_where_prediction_and_truth_align(ce):
    gt = np.zeros((1, 16, 16), np.int64)
    gt[:, :, 8] = 2
    pred = np.roll(gt, 1, axis=2)  # one pixel right of the truth
    table = ce.shifted_iou(pred, gt, 2, num_classes=3, shifts=(-1, 0, 1), margin=2)
    assert table[(0, -1)] == pytest.approx(100.0)  # rolled back onto the truth
    assert table[(0, 0)] == pytest.approx(0.0)
