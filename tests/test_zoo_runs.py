"""scripts/zoo_runs.sh: which trainings and evaluations a group runs, with a stub in place of sceneparse."""
import os
import subprocess

from .conftest import REPO
from .test_directions_runs import STUB


def _run(tmp_path, *groups, **env):
    stub, log, runs, repo = tmp_path / "sceneparse", tmp_path / "calls.txt", tmp_path / "runs", tmp_path / "repo"
    stub.write_text(STUB)
    stub.chmod(0o755)
    repo.mkdir(exist_ok=True)
    full = {**os.environ, "SCENEPARSE": str(stub), "STUB_LOG": str(log), "RUNS": str(runs), "REPO": str(repo), **env}
    subprocess.run(["bash", str(REPO / "scripts/zoo_runs.sh"), *groups], env=full, check=True, capture_output=True)
    return (log.read_text().splitlines() if log.exists() else []), repo / "results/camvid/zoo_runs"


def test_pole_fine_tunes_start_from_the_default_and_are_not_rerun(tmp_path):
    calls, out = _run(tmp_path, "pole_ft")
    trains = [c for c in calls if c.startswith("train ")]
    assert len(trains) == 3 and all("model.init_weights=camvid_pyramid_effl0" in c and "train.lr=0.001" in c
                                    for c in trains)
    assert [c.split("train.class_weighting=")[1].split()[0] for c in trains] == ["none", "median_freq", "inverse_log"]
    assert len([c for c in calls if c.startswith("evaluate ")]) == 3
    assert sorted(p.name for p in out.iterdir() if "median_freq" in p.name) == [
        "ft_pole_median_freq_e10_s0_config.yaml", "ft_pole_median_freq_e10_s0_eval_os16.json",
        "ft_pole_median_freq_e10_s0_log.csv"]
    again, _ = _run(tmp_path, "pole_ft")
    assert again == calls  # finished runs and evaluations are skipped (the log only grows by new calls)


def test_lite2_and_deeplabv3_runs_per_seed(tmp_path):
    calls, _ = _run(tmp_path, "pyramid_lite2", "dlv3_e60", SEEDS="0 1")
    trains = [c for c in calls if c.startswith("train ")]
    assert sum("model.backbone=efficientnet_lite2" in c for c in trains) == 2
    assert sum("deeplabv3_effl0.yaml" in c and "train.epochs=60" in c for c in trains) == 2
    assert any("train.seed=1" in c and "lite2_e120_s1" in c for c in trains)


def test_lovasz_fine_tune_adds_the_term_to_the_control_recipe(tmp_path):
    calls, out = _run(tmp_path, "pole_lovasz")
    trains = [c for c in calls if c.startswith("train ")]
    assert len(trains) == 1 and "train.lovasz_weight=1.0" in trains[0]
    assert "model.init_weights=camvid_pyramid_effl0" in trains[0] and "train.lr=0.001" in trains[0]
    assert "class_weighting" not in trains[0]  # the control's loss (unweighted) plus the term
    assert (out / "ft_pole_lovasz1_e10_s0_eval_os16.json").exists()
