"""Bad input fails before any work, with a message naming the parameter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ddlib
from ddlib import RunConfig
from ddlib.run import load_scenario


@pytest.mark.parametrize("overrides, name", [
    ({"method": "ewc"}, "method"),
    ({"dataset": "mnist"}, "dataset"),
    ({"increment": 0}, "increment"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"expert_balanced_epochs": "2"}, "expert_balanced_epochs"),
    ({"batch_size": -1}, "batch_size"),
    ({"expert_epochs": 0}, "expert_epochs"),
    ({"similar_k": 5}, "similar_k"),
    ({"similar_k": -1}, "similar_k"),
    ({"temperature_new": 0.5}, "temperature_new"),
    ({"temperature_old": 0.9}, "temperature_old"),
    ({"milestones": (9,)}, "milestones"),
    ({"lr": 0}, "lr"),
    ({"device": "tpu"}, "device"),
    ({"class_order_seed": -1}, "class_order_seed"),
    ({"no_such_knob": 1}, "no_such_knob"),
])
def test_bad_config_names_the_parameter(overrides, name):
    with pytest.raises(ValueError, match=name):
        RunConfig.resolve("smoke", **overrides)


def test_class_order_seed_changes_identity_and_scenario_only_when_given(smoke):
    usual, dedicated = smoke(), smoke(class_order_seed=18)
    assert usual.identity() == smoke(class_order_seed=None).identity()
    assert dedicated.identity() != usual.identity()
    assert dedicated.round_one_identity() != usual.round_one_identity()  # not shared
    assert load_scenario(dedicated).order.tolist() == \
        np.random.RandomState(18).permutation(20).tolist()
    assert load_scenario(usual).order.tolist() == \
        np.random.RandomState(1993).permutation(20).tolist()


def test_unknown_profile():
    with pytest.raises(ValueError, match="profile"):
        RunConfig.resolve("huge")


@pytest.mark.slow
@pytest.mark.parametrize("overrides, name", [
    ({"increment": 16}, "increment=16 .*synthetic's 20 classes"),  # 15 left after round 1
    ({"init_classes": 21}, "init_classes"),
    ({"memory": 19}, "memory"),              # 20 classes need 20 exemplars at least
])
def test_bad_settings_for_the_data(smoke, overrides, name):
    with pytest.raises(ValueError, match=name):
        ddlib.run(smoke(**overrides), verbose=False)


def test_remainder_goes_into_a_last_round(smoke):
    scenario = load_scenario(smoke(init_classes=5, increment=6))
    assert scenario.rounds == [5, 6, 6, 3]


@pytest.mark.slow
def test_missing_cifar_folder_says_where_and_how(smoke, tmp_path):
    cfg = smoke(dataset="cifar100", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere") as err:
        ddlib.run(cfg, verbose=False)
    assert "download" in str(err.value)


@pytest.mark.slow
def test_malformed_npz_fails_before_training(smoke, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, train_x=np.zeros((4, 8, 8, 3), np.float32), train_y=np.zeros(4, int),
             test_x=np.zeros((2, 8, 8, 3), np.uint8), test_y=np.zeros(2, int))
    with pytest.raises(ValueError, match="train_x"):
        ddlib.run(smoke(dataset="arrays", data_dir=str(path)), verbose=False)


@pytest.mark.slow
def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ddlib", "run", "--method", "ewc",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "method='ewc'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_smoke_run_prints_round_table(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ddlib", "run", "--profile", "smoke",
                           "--no-progress", "--threads", "1", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "acc_nme" in proc.stdout + proc.stderr
    assert list(tmp_path.rglob("order0.json"))
