"""scripts/directions_runs.sh: which trainings and evaluations a group runs, with a stub in place of sceneparse."""
import os
import subprocess

from .conftest import REPO

STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
while [ $# -gt 0 ]; do
  case $1 in
    --work-dir) mkdir -p "$2"; touch "$2/final.pt"; echo iter > "$2/log.csv"; echo "a: 1" > "$2/config.yaml"; shift ;;
    --out) echo '{}' > "$2"; shift ;;
  esac
  shift
done
"""


def _run(tmp_path, group, **env):
    tmp_path.mkdir(parents=True, exist_ok=True)
    stub, log, runs = tmp_path / "sceneparse", tmp_path / "calls.txt", tmp_path / "runs"
    stub.write_text(STUB)
    stub.chmod(0o755)
    py = tmp_path / "python"  # stands for the interpreter running scripts/merge_parallel.py GRN LRN OUT
    py.write_text('#!/usr/bin/env bash\necho "python $*" >> "$STUB_LOG"\ntouch "$4"\n')
    py.chmod(0o755)
    (runs / "fcn_e60_rerun_s0").mkdir(parents=True)
    (runs / "fcn_e60_rerun_s0" / "final.pt").touch()
    repo = tmp_path / "repo"
    repo.mkdir()
    full = {**os.environ, "SCENEPARSE": str(stub), "PYTHON": str(py), "STUB_LOG": str(log), "RUNS": str(runs), "REPO": str(repo), **env}
    subprocess.run(["bash", str(REPO / "scripts/directions_runs.sh"), group], env=full, check=True,
                   capture_output=True, text=True)
    return log.read_text().splitlines(), repo / "results/camvid/directions"


def test_refine_rows_after_a_chosen_grn_at_another_lrn_lr(tmp_path):
    calls, out = _run(tmp_path, "refine_t2", SEEDS="0", SUFFIX="_x", FRONT_SUFFIX="_rerun", GRN_STAGE="skip",
                      GRN_ROW="grn_aux0_lr0.01_on_fcn", LRN_LR="0.01")
    trains = [c for c in calls if c.startswith("train ")]
    assert [c.split()[1] for c in trains] == ["configs/camvid/refine/lrn_stage.yaml",
                                              "configs/camvid/refine/lrn_stage.yaml",
                                              "configs/camvid/refine/context_stage.yaml"]  # no GRN stage
    lrn, grn_lrn, _ = trains
    assert "train.lr=0.01" in lrn.split() and lrn.split()[-4].endswith("/lrn_lr0.01_on_fcn_x_s0")
    assert f"model.init_weights={tmp_path}/runs/grn_aux0_lr0.01_on_fcn_x_s0/final.pt" in grn_lrn.split()
    assert "train.lr=0.01" in grn_lrn.split() and f"model.head.front={tmp_path}/runs/fcn_e60_rerun_s0/final.pt" in lrn
    assert sorted(p.name for p in out.glob("*_eval_os16*.json")) == [
        "context_on_fcn_x_s0_eval_os16.json", "fcn_e60_rerun_s0_eval_os16_crf.json",
        "grn_lrn_lr0.01_on_fcn_x_s0_eval_os16.json", "lrn_lr0.01_on_fcn_x_s0_eval_os16.json",
        "parallel_grn_aux0_lr0.01_lrn_lr0.01_on_fcn_x_s0_eval_os16.json"]
    # parallel fusion: the chosen GRN row and the LRN row, averaged, then evaluated
    merge = next(c for c in calls if c.startswith("python "))
    assert merge.split()[1:] == ["scripts/merge_parallel.py", f"{tmp_path}/runs/grn_aux0_lr0.01_on_fcn_x_s0/final.pt",
                                 f"{tmp_path}/runs/lrn_lr0.01_on_fcn_x_s0/final.pt",
                                 f"{tmp_path}/runs/parallel_grn_aux0_lr0.01_lrn_lr0.01_on_fcn_x_s0/final.pt"]
    # the dense CRF row: the front itself, evaluated with the CRF settings chosen on training images
    crf = next(c for c in calls if c.startswith("evaluate ") and "--crf" in c)
    assert crf.split()[2] == f"{tmp_path}/runs/fcn_e60_rerun_s0/final.pt" and "bilateral_compat=3.0" in crf


def test_a_grn_check_trains_the_grn_row_only_and_the_default_lrn_lr_is_the_papers(tmp_path):
    calls, _ = _run(tmp_path, "refine_t2", SEEDS="0", SUFFIX="_x", FRONT_SUFFIX="_rerun", AUX_GRN="0")
    assert [c.split()[1] for c in calls if c.startswith("train ")] == ["configs/camvid/refine/grn_stage.yaml"]
    calls, _ = _run(tmp_path / "b", "refine_t2", SEEDS="0", SUFFIX="_x", FRONT_SUFFIX="_rerun")
    trains = [c for c in calls if c.startswith("train ")]
    assert len(trains) == 4 and "train.lr=0.0001" in trains[1].split() and "/lrn_on_fcn_x_s0" in trains[1]


def test_pspnet_table2_rows_are_evaluated_on_val_and_on_their_training_split(tmp_path):
    calls, out = _run(tmp_path, "psp_t2", SEEDS="0")
    trains = [c for c in calls if c.startswith("train ")]
    assert [c.split("train.aux_weight=")[1].split()[0] for c in trains] == ["0.4", "0"]
    evals = [c for c in calls if c.startswith("evaluate ")]
    assert len(evals) == 4 and sum("--split train" in c for c in evals) == 2
    assert (out / "psp_aux0_e30_s0_eval_train.json").exists() and (out / "psp_aux0_e30_s0_eval_os16.json").exists()


def test_sf_rows_chosen_by_sf_rows_and_the_relabel_tau_check(tmp_path):
    calls, out = _run(tmp_path / "a", "sf", SEEDS="2", SF_ROWS="simple_fix naive")
    trains = [c for c in calls if c.startswith("train ")]
    assert len(trains) == 2
    assert "model.head.relabel_policy=simple_fix" in trains[0] and "pyr_simple_fix_e20_s2" in trains[0]
    assert "model.head.relabel_policy=naive" in trains[1] and "train.seed=2" in trains[1]
    assert sum(c.startswith("evaluate ") for c in calls) == 2
    calls, out = _run(tmp_path / "b", "sf_rtau", SEEDS="0")
    (train,) = [c for c in calls if c.startswith("train ")]
    assert "model.head.relabel_tau=0.5" in train and "model.head.relabel_policy=final" in train
    assert "model.head.context=false" in train and "pyr_final_noctx_rtau0.5_e20_s0" in train
    assert (out / "pyr_final_noctx_rtau0.5_e20_s0_eval_os16.json").exists()
