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


def _model(arch, **head):
    return {"arch": arch, "backbone": "efficientnet_lite0", "output_stride": 16, "pretrained": True, "head": head}


def test_aux_is_named_only_where_the_model_has_an_auxiliary_head():
    cfg = _cfg(aux_weight=0.4)
    for arch, head, shown in (("pspnet", {}, True), ("pspnet", {"aux_head": False}, False),
                              ("deeplabv3", {}, False), ("deeplabv3", {"aux_head": True}, True),
                              ("fcn", {}, False), ("refine", {}, True),  # refine: the GRN's residual CE weight ...
                              ("refine", {"train_stage": "grn"}, True),
                              ("refine", {"train_stage": "lrn"}, False)):  # ... which the LRN stage does not have
        s = recipe_summary({**cfg, "model": _model(arch, **head)}, 900)
        assert ("aux 0.4" in s) == shown, (arch, head, s)


def test_the_pyramid_names_its_finest_stride_and_its_own_loss():
    cfg = {**_cfg(aux_weight=0.4), "model": {**_model("pyramid_output", strides=[32, 16, 8, 4]), "output_stride": 8}}
    s = recipe_summary(cfg, 900)
    assert s.startswith("pyramid_output efficientnet_lite0 OS4, ") and "OS8" not in s
    assert s.endswith("loss Eq. 1 (CE per level + unity BCE)") and "aux" not in s
    cfg["train"].update(lovasz_weight=1.0, class_weighting="median_freq")
    assert recipe_summary(cfg, 900).endswith(
        "loss Eq. 1 (CE per level + unity BCE) + median_freq class weights + 1 Lovasz")


def test_bf16_training_is_named_from_the_metadata():
    assert ", bf16;" in recipe_summary(_cfg(), 900, precision="bf16 (dense convolutions)")
    assert "bf16" not in recipe_summary(_cfg(), 900, precision="fp32")


def test_output_stride_of_a_pyramid_is_its_finest_level():
    from sceneparse.hub import output_stride_of

    assert output_stride_of({"arch": "pyramid_output", "output_stride": 8, "head": {"strides": [32, 16, 8, 4]}}) == 4
    assert output_stride_of({"arch": "pspnet", "output_stride": 16, "head": {}}) == 16


def test_retrain_command_names_the_shipped_config_and_only_the_changed_keys():
    from sceneparse.config import load_config, to_dict
    from sceneparse.hub import retrain_command

    cfg = to_dict(load_config("camvid/pyramid_effl0"))
    cfg["model"]["head"].update(context=False, relabel_policy="simple_fix", strides=[32, 4])
    cfg["train"].update(epochs=20, eval_interval=100000)  # housekeeping keys are left out
    cfg.update(work_dir="/somewhere/run")
    cfg["data"]["root"] = "/elsewhere/camvid"
    assert retrain_command(cfg) == ("sceneparse train camvid/pyramid_effl0 model.head.strides=[32,4] "  # config order
                                    "model.head.context=false model.head.relabel_policy=simple_fix train.epochs=20")
    assert retrain_command({**cfg, "name": "my_own_experiment"}) is None  # no shipped config of that name


def test_a_fine_tuned_model_names_the_run_it_started_from():
    cfg = _cfg()
    cfg["model"]["init_weights"] = "/runs/grn_stage_s0/final.pt"
    assert "fine-tuned from grn_stage_s0/final.pt" in recipe_summary(cfg, 900)
    cfg["model"]["init_weights"] = "camvid_pspnet_effl0"
    assert "fine-tuned from camvid_pspnet_effl0" in recipe_summary(cfg, 900)
