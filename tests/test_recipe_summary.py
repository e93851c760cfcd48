"""recipe_summary: the one-line training recipe shown by `sceneparse models` and the zoo page."""
from sceneparse.hub import recipe_summary


def _cfg(**train):
    t = {"batch_size": 8, "epochs": 20, "iters": 0, "lr": 0.01, "optimizer": "sgd", "head_lr_mult": 1.0,
         "poly_power": 0.9, "aux_weight": 0.0}
    t.update(train)
    return {"model": {"arch": "refine", "backbone": "efficientnet_lite0", "output_stride": 16, "pretrained": True},
            "data": {"dataset": "camvid", "train_split": "train"}, "train": t}


def test_poly_schedule_is_named_with_its_power():
    s = recipe_summary(_cfg(lr_policy="poly"), 900)
    assert "sgd lr 0.01 (head x1), poly 0.9, aux 0.0" in s


def test_step_schedule_names_its_drops_not_poly():
    s = recipe_summary(_cfg(lr_policy="step", lr_step_epochs=[10.0], lr_step_gamma=0.1), 900)
    assert "poly" not in s
    assert "sgd lr 0.01 (head x1), step x0.1 at epoch 10, aux 0.0" in s
    s2 = recipe_summary(_cfg(lr_policy="step", lr_step_epochs=[10.0, 15.0], lr_step_gamma=0.5), 900)
    assert "step x0.5 at epochs 10, 15" in s2


def test_a_refinement_cascade_names_its_frozen_front():
    front = {"arch": "fcn", "backbone": "efficientnet_lite0", "output_stride": 16, "num_classes": 11}
    s = recipe_summary(_cfg(), 900, front=front)
    assert s.startswith("refine efficientnet_lite0 OS16 on a frozen fcn efficientnet_lite0 OS16 front, ImageNet init")
    assert "frozen" not in recipe_summary(_cfg(), 900)


def test_a_config_without_lr_policy_is_poly():
    assert "lr_policy" not in _cfg()["train"]  # configs written before the step schedule existed
    assert ", poly 0.9, aux 0.0" in recipe_summary(_cfg(), 900)
