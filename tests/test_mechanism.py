"""The convergence rule (ddlib.convergence) on hand values, and the expert-vs-classifier
evidence (ddlib.mechanism) against what the run itself recorded."""

from __future__ import annotations

import math

import pytest

import ddlib
from ddlib import convergence, results
from ddlib.gradcam import load_round_model
from ddlib.mechanism import accuracy_on, expert_vs_classifiers, lead_summary, mechanism_table


def test_last_fifth_change_by_hand():
    # 10 epochs: the last fifth is the last 2; 0.50 -> 0.49 is a 2% change
    losses = [2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.50, 0.49]
    assert convergence.last_fifth_change(losses) == pytest.approx(0.02)
    # 20 epochs: the last fifth is 4 epochs, from 1.0 to 0.5
    assert convergence.last_fifth_change([3.0] * 16 + [1.0, 0.8, 0.6, 0.5]) == pytest.approx(0.5)
    assert math.isnan(convergence.last_fifth_change([1.0]))


def _stage(losses):
    return [{"loss": v, "acc": 50.0} for v in losses]


def test_plateau_table_marks_unsettled_rounds():
    result = {"rounds": [
        {"round": 1, "history_classifier": _stage([2.0, 1.0, 0.99])},
        {"round": 2, "history_classifier": _stage([2.0, 1.0, 0.5]),
         "history_expert_a": _stage([1.0, 0.9]), "history_expert_b": _stage([0.5, 0.5])}]}
    table = convergence.plateau_table(result).set_index("round")
    assert table.loc[1, "classifier"] == pytest.approx(0.01) and bool(table.loc[1, "settled"])
    assert table.loc[2, "classifier"] == pytest.approx(0.5) and not bool(table.loc[2, "settled"])
    assert table.loc[2, "expert A"] == pytest.approx(0.1) and table.loc[2, "expert B"] == 0
    frame = convergence.curves(result)
    assert len(frame) == 3 + 3 + 2 + 2 and set(frame["stage"]) == set(convergence.STAGES)
    with pytest.raises(ValueError, match="no per-epoch history"):
        convergence.plateau_table({"rounds": [{"round": 1}]})


@pytest.mark.slow
def test_expert_vs_classifiers_agrees_with_the_runs_own_record(smoke):
    dd = ddlib.run(smoke(dd=True), verbose=False)
    base = ddlib.run(smoke(dd=False), verbose=False)
    table = expert_vs_classifiers(dd, base)
    assert list(table.index) == [2, 3, 4]
    for rec in dd["rounds"][1:]:
        row = table.loc[rec["round"]]
        assert row["expert"] == rec["expert_acc_b"] and row["t"] == len(rec["expert_classes"])
        # scored the same way the run scored its own classifier during training
        model, data, scenario = load_round_model(dd, rec["round"])
        assert accuracy_on(model, data, scenario, rec["expert_classes"]) == pytest.approx(
            rec["classifier_acc_on_expert_classes"])
        assert row["expert lead"] == pytest.approx(row["expert"] - row["baseline classifier"])
    summary = lead_summary(table)
    assert summary["mean_lead"] == pytest.approx(table["expert lead"].mean(), abs=0.01)
    assert mechanism_table([dd], [base])["orders"].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="one method on one class order"):
        expert_vs_classifiers(dd, ddlib.run(smoke(method="ucir"), verbose=False))
    assert results.result_path(smoke(dd=True)).is_file()
