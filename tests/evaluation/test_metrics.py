import math

import pytest
import torch

from sceneparse.evaluation.metrics import ConfusionMatrix, format_table, scores_from_confusion


def test_metrics_against_hand_computed_case():
    # 3 classes; class 2 never appears in the labels nor in the predictions -> NaN, left out of the means
    target = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # the two ignore pixels (one predicted as class 2) are not counted
    assert cm.mat.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    s = cm.compute(["a", "b", "c"])
    # IoU_a = 2 / (3 + 3 - 2) = 0.5 ; IoU_b = 2 / (3 + 3 - 2) = 0.5
    assert s["IoU"]["a"] == pytest.approx(50.0) and s["IoU"]["b"] == pytest.approx(50.0)
    assert s["IoU"]["c"] is None and s["Acc"]["c"] is None
    assert s["mIoU"] == pytest.approx(50.0)
    assert s["aAcc"] == pytest.approx(4 / 6 * 100)
    assert s["mAcc"] == pytest.approx((2 / 3 + 2 / 3) / 2 * 100)


def test_class_predicted_but_absent_has_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]))
    s = cm.compute()
    assert s["IoU"]["2"] == 0.0 and s["Acc"]["2"] is None  # counts in mIoU, not in mAcc
    assert s["mIoU"] == pytest.approx((50 + 100 + 0) / 3)
    assert s["mAcc"] == pytest.approx((50 + 100) / 2)


def test_accumulates_over_updates_and_rejects_bad_values():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    cm.update(torch.tensor([1]), torch.tensor([0]))
    assert cm.mat.tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))


def test_empty_matrix_and_table():
    s = scores_from_confusion(torch.zeros(2, 2, dtype=torch.int64), ["x", "y"])
    assert math.isnan(s["mIoU"]) and math.isnan(s["aAcc"])
    s = scores_from_confusion(torch.tensor([[3, 1], [0, 4]]), ["x", "y"])
    assert "mIoU 77.50" in format_table(s)


def test_boundary_fscore_hand_case():
    from sceneparse.evaluation.metrics import BoundaryFScore, label_boundaries

    gt = torch.zeros(6, 6, dtype=torch.long)
    gt[:, 3:] = 1  # vertical boundary between columns 2 and 3
    b = label_boundaries(gt)
    assert b[:, 2].all() and b[:, 3].all() and b.sum() == 12
    shifted = torch.zeros(6, 6, dtype=torch.long)
    shifted[:, 4:] = 1  # predicted boundary one pixel to the right
    exact = BoundaryFScore(tolerance=0)
    exact.update(shifted, gt)
    # pred boundary columns 3,4; gt 2,3: half of each matches exactly
    assert exact.compute()["F"] == pytest.approx(50.0)
    tol = BoundaryFScore(tolerance=1)
    tol.update(shifted, gt)
    assert tol.compute()["F"] == pytest.approx(100.0)
    ign = gt.clone()
    ign[:, :2] = 255  # an ignore region: its edge is not a boundary, and predictions there do not count
    bf = BoundaryFScore(tolerance=0)
    bf.update(torch.zeros(6, 6, dtype=torch.long), ign)
    assert bf.compute()["precision"] != bf.compute()["precision"]  # NaN: no predicted boundary
    assert bf.compute()["recall"] == 0.0


def test_evaluation_scores_class_groups_of_a_dataset_that_declares_them():
    # a dataset with CATEGORIES (Cityscapes') gets category IoU: class 1 predicted for class 0 is wrong as a
    # class and right as a category
    from sceneparse.evaluation.evaluate import evaluate_model

    class Groups(torch.utils.data.Dataset):
        CLASSES = ("a0", "a1", "b")
        CATEGORIES = {"a": (0, 1), "b": (2,)}
        num_classes = 3

        def __len__(self):
            return 1

        def __getitem__(self, i):
            label = torch.zeros(4, 6, dtype=torch.long)
            label[:, 3:] = 2
            return {"image": torch.zeros(3, 4, 6), "label": label}

    class Predicts(torch.nn.Module):  # class 1 on the left half, class 2 on the right
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[2:])
            out[:, 1, :, :3] = 1
            out[:, 2, :, 3:] = 1
            return {"out": out}

    s = evaluate_model(Predicts(), Groups(), progress=False, boundary_tolerance=None)
    assert s["IoU"]["a0"] == 0.0 and s["IoU"]["b"] == 100.0
    assert s["IoU_category"] == {"a": 100.0, "b": 100.0} and s["mIoU_category"] == 100.0


def test_the_console_report_says_n_a_for_an_undefined_boundary_precision():
    """A model that predicts no boundary has no boundary precision (the JSON writes null): the console line
    says so instead of printing nan."""
    from sceneparse.evaluation.metrics import ConfusionMatrix
    from sceneparse.evaluation.report import summary_text

    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 1], [0, 1]]]))
    scores = {**cm.compute(), "boundary": {"tolerance_px": 3, "F": float("nan"), "precision": float("nan"),
                                           "recall": 0.0}}
    line = summary_text(scores).splitlines()[-1]
    assert line == "boundary F-score (3 px): F n/a  P n/a (no boundary predicted)  R 0.00", line
