"""The claims table (scripts/directions.py): the verdict rule and the collection of per-seed results."""
import json

import pytest

from .conftest import load_script


@pytest.fixture()
def directions(tmp_path, monkeypatch):
    mod = load_script("directions")
    monkeypatch.setattr(mod, "SRC", tmp_path)
    return mod


def test_verdict_rule_uses_the_larger_seed_spread(directions):
    v = directions.verdict
    assert v([60.0, 61.0], [58.0, 58.5]) == ("holds", 2.25, 1.0)  # 60.5 - 58.25 > max(1.0, 0.5)
    assert v([60.0, 61.0], [59.5, 60.0]) == ("tie", 0.75, 1.0)
    assert v([57.0, 57.2], [60.0, 59.0]) == ("against", -2.4, 1.0)
    assert v([60.0], [58.0, 59.0]) == ("1 seed", 1.5, None)
    assert v([], [58.0]) == ("not run", None, None)


def test_collect_reads_per_seed_results_and_budget(directions, tmp_path):
    for seed, (ip, no_ip) in enumerate([(59.4, 57.0), (58.8, 57.3)]):
        for run, miou in (("dlv3_ip_true_e30", ip), ("dlv3_ip_false_e30", no_ip)):
            (tmp_path / f"{run}_s{seed}_eval_os16.json").write_text(json.dumps({"mIoU": miou, "boundary": {"F": 50}}))
            (tmp_path / f"{run}_s{seed}_config.yaml").write_text(
                "model: {output_stride: 16, pretrained: true}\n"
                "train: {epochs: 30, batch_size: 8, lr: 0.01}\ndata: {crop_size: [360, 480]}\n")
            (tmp_path / f"{run}_s{seed}_log.csv").write_text("iter,loss\n10,1.0\n1350,0.3\n")
    claims = {c["id"]: c for c in directions.collect()}
    assert len(claims) == 15
    c = claims["dlv3_t5_image_pooling"]
    assert c["values"] == {"dlv3_ip": [59.4, 58.8], "dlv3_no_ip": [57.0, 57.3]}
    assert c["verdict"] == "holds" and c["margin"] == pytest.approx(1.95) and c["spread"] == pytest.approx(0.6)
    assert c["budget"]["dlv3_ip"] == {"epochs": 30, "iterations": 1350, "crop": [360, 480], "batch": 8,
                                      "output_stride_train": 16, "lr": 0.01, "lr_policy": "poly", "pretrained": True}
    assert claims["dlv3_eval_os8"]["verdict"] == "not run"  # no os8 evaluation written
    md = directions.markdown(list(claims.values()))
    assert "| +1.95 (0.60) |" in md and md.count("not run") >= 14
    # every row with results, its mIoU and boundary F per seed
    assert "| 59.40 / 58.80 | 50.00 / 50.00 | 0, 1 |" in md


def test_pyramid_rows_report_how_much_each_level_supervised(directions, tmp_path):
    """The relabelling is shown active: the supervised share per level at the end of training (the mean over
    the last tenth of the logged iterations), per row and seed, in the claim and the page."""
    lines = [{"iter": i, "sup_s32": 0.0 if i <= 90 else 20.0, "sup_s16": 30.0, "sup_s8": 50.0, "sup_s4": 100.0,
              "sup_none": 0.0} for i in range(1, 101)]
    (tmp_path / f"{directions.ROWS['sf_final'][0]}_s0_diagnostics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / f"{directions.ROWS['sf_final'][0]}_s0_eval_os16.json").write_text(json.dumps({"mIoU": 50.0, "boundary": {"F": 50}}))
    share = directions.supervision_share("sf_final")
    assert share == {0: {"sup_s32": 20.0, "sup_s16": 30.0, "sup_s8": 50.0, "sup_s4": 100.0, "sup_none": 0.0}}
    assert directions.supervision_share("dlv3_ip") == {}
    claims = {c["id"]: c for c in directions.collect()}
    assert claims["sf_fuse_vs_finest"]["supervision_share"]["sf_final"] == share
    assert "| pyramid, final relabelling, context modules | 0 | 20.0 | 30.0 | 50.0 | 100.0 | 0.0 |" in \
        directions.markdown(list(claims.values()))


def test_refinement_rows_report_their_ce_against_the_front_on_the_same_batches(directions, tmp_path):
    """The same-batches check of a refinement row: its main CE minus the frozen front's CE on the same
    training batches (log.csv loss - loss_front), mean over the first and the last tenth of the logged
    iterations, per seed, in the claim and on the page."""
    rows = ["iter,epoch,lr,loss,loss_aux,loss_front,val_mIoU", "0,0,,,,,60.7"]
    rows += [f"{i},0,0.001,{0.30 + (0.1 if i <= 20 else 0.2)},1.0,0.30," for i in range(10, 210, 10)]
    (tmp_path / "grn_aux0_lr0.01_on_fcn_rgbscale_s0_log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "grn_aux0_lr0.01_on_fcn_rgbscale_s0_eval_os16.json").write_text(json.dumps({"mIoU": 50.0, "boundary": {"F": 50}}))
    gap = directions.same_batch_ce("grn")
    assert gap == {0: {"first": pytest.approx(0.1), "last": pytest.approx(0.2), "iterations": 200}}
    assert directions.same_batch_ce("dlv3_ip") == {}
    claims = {c["id"]: c for c in directions.collect()}
    assert claims["grn_vs_front"]["same_batch_ce"]["grn"] == gap
    md = directions.markdown(list(claims.values()))
    assert "| front (fcn_e60_rerun) + GRN" in md and "| 0 | +0.100 | +0.200 | 200 |" in md


def test_a_row_without_boundary_f_shows_a_dash(directions, tmp_path):
    """The finest level alone (from `sceneparse analyze`) has an mIoU but no boundary F."""
    (tmp_path / f"{directions.ROWS['sf_finest'][0]}_s0_eval_os16.json").write_text(json.dumps({"mIoU": 61.99}))
    assert directions.row_values("sf_finest", "mIoU")[0] == [61.99]
    md = directions.markdown(directions.collect())
    assert "| 61.99 | - | 0 |" in md



def test_the_crf_row_is_the_front_evaluated_with_the_chosen_crf(directions, tmp_path):
    (tmp_path / "fcn_e60_rerun_s0_eval_os16.json").write_text(json.dumps({"mIoU": 60.7, "boundary": {"F": 54.3}}))
    (tmp_path / "fcn_e60_rerun_s0_eval_os16_crf.json").write_text(json.dumps({"mIoU": 61.8, "boundary": {"F": 58.9}}))
    assert directions.row_values("crf", "mIoU")[0] == [61.8]
    assert directions.row_values("front_fcn_rerun", "boundary_F")[0] == [54.3]
    cmd = directions._commands("crf")[1]
    assert "fcn_e60_rerun_s<seed>/final.pt --crf --crf-param bilateral_compat=3.0" in cmd
    md = directions.markdown(directions.collect())
    assert "dense CRF" in md and "| 61.80 | 58.90 | 0 |" in md
