"""The convergence rule (ddlib.convergence) on hand values, the expert-vs-classifier
evidence (ddlib.mechanism) against what the run itself recorded, and the comparison of the
expert's two starts on hand-made results."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from test_analysis import COUNTS, two_rounds

import ddlib
from ddlib import convergence, mechanism, results
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


def _arm(rule, avg, last, epochs=None):
    return {"rule": rule, "avg_inc_acc": {rule: avg, "cnn" if rule == "nme" else "nme": 0.0},
            "last_acc": {rule: last}, "overrides": {} if epochs is None else {"epochs": epochs}}


def test_epochs_table_reads_each_methods_rule_and_the_gain_of_doubling():
    summary = {"epochs12": {"icarl": _arm("nme", 50.0, 40.0), "ucir": _arm("cnn", 55.0, 45.0)},
               "epochs24": {"icarl": _arm("nme", 60.5, 52.0, 24)},
               "epochs48": {"icarl": _arm("nme", 61.0, 53.0, 48)},
               "size32": {"icarl": _arm("nme", 99.0, 99.0)}}  # not an epoch arm: left out
    table = convergence.epochs_table(summary, profile_epochs=12).set_index(["method", "epochs"])
    assert list(table.index) == [("icarl", 12), ("icarl", 24), ("icarl", 48), ("ucir", 12)]
    assert table.loc[("icarl", 24), "avg_inc_acc"] == 60.5  # NME, not the 0.0 CNN entry
    assert table.loc[("icarl", 24), "gain"] == pytest.approx(10.5)
    assert table.loc[("icarl", 48), "gain"] == pytest.approx(0.5)
    assert math.isnan(table.loc[("icarl", 12), "gain"]) and math.isnan(table.loc[("ucir", 12), "gain"])


def _run(name, rule, avg, last, epochs=None):
    return {**_arm(rule, avg, last, epochs), "run": name}


def test_dd_runs_stay_out_of_the_rule_and_pair_with_their_baseline():
    summary = {"epochs12": {"icarl": _run("icarl", "nme", 50.0, 40.0)},
               "epochs24": {"icarl": _run("icarl", "nme", 60.0, 52.0, 24),
                            "icarl+dd": _run("icarl+dd", "nme", 61.5, 54.0, 24),
                            "ucir+dd": _run("ucir+dd", "cnn", 70.0, 60.0, 24)},  # no baseline
               "epochs48": {"icarl": _run("icarl", "nme", 64.0, 58.0, 48),
                            "icarl+dd": {**_run("icarl+dd", "nme", 63.0, 59.0, 48),
                                         "expert_lead": 0.5}},
               "expert48": {"icarl+dd": _run("icarl+dd", "nme", 99.0, 99.0)}}  # not an epoch arm
    epochs = convergence.epochs_table(summary, profile_epochs=12)
    assert list(epochs["method"]) == ["icarl"] * 3  # the +DD runs never enter the rule
    assert epochs.set_index("epochs").loc[24, "avg_inc_acc"] == 60.0
    table = convergence.dd_epochs_table(summary, profile_epochs=12).set_index("epochs")
    assert list(table.index) == [24, 48] and set(table["method"]) == {"icarl"}
    assert table.loc[24, "gain"] == pytest.approx(1.5) and table.loc[24, "gain_last"] == pytest.approx(2.0)
    assert table.loc[48, "gain"] == pytest.approx(-1.0) and table.loc[48, "dd_last"] == 59.0
    text = convergence.dd_epochs_verdict(table.reset_index())
    assert "**iCaRL**" in text and "+1.50 points at 24 epochs (last round +2.00)" in text
    assert "-1.00 points at 48 epochs (last round +1.00, expert lead +0.50)" in text
    assert math.isnan(table.loc[24, "expert_lead"])
    empty = convergence.dd_epochs_table({"epochs12": summary["epochs12"]}, 12)
    assert "no method run with and without DD" in convergence.dd_epochs_verdict(empty)


def _expert_run(expert_accs, changes_a, changes_b, **overrides):
    return {**_run("icarl+dd", "nme", 99.0, 99.0), "overrides": overrides,
            "expert_acc_b": expert_accs, "expert_a_last_fifth_change": changes_a,
            "expert_b_last_fifth_change": changes_b}


CPU_LIKE = {"epochs": 24, "expert_epochs": 20, "expert_balanced_epochs": 10}


def test_expert_epochs_table_reads_the_experts_own_accuracy_at_the_classifiers_epochs():
    summary = {
        "epochs24": {"icarl": _run("icarl", "nme", 60.0, 50.0, 24),  # a baseline: no expert
                     "icarl+dd": _expert_run([70.0, 80.0], [0.01, 0.02], [0.03, 0.04], epochs=24)},
        "expert12": {"icarl+dd": _expert_run([60.0, 70.0], [0.1, 0.2], [0.0, 0.0], epochs=24,
                                             expert_epochs=10, expert_balanced_epochs=5)},
        "expert48": {"icarl+dd": _expert_run([75.0, 75.4], [0.0, 0.0], [0.01, 0.0], epochs=24,
                                             expert_epochs=40, expert_balanced_epochs=20)},
        # the classifier's epochs or the data changed too: not an expert arm
        "epochs48": {"icarl+dd": _expert_run([90.0, 90.0], [0.0], [0.0], epochs=48)},
        "size32": {"icarl+dd": _expert_run([90.0, 90.0], [0.0], [0.0], image_size=32)}}
    table = convergence.expert_epochs_table(summary, CPU_LIKE).set_index("expert_epochs")
    assert list(table.index) == [10, 20, 40] and list(table["expert_balanced_epochs"]) == [5, 10, 20]
    assert table.loc[20, "expert_acc"] == 75.0  # mean over rounds 2..R
    assert table.loc[10, "largest_change"] == 0.2 and table.loc[20, "largest_change"] == 0.04
    assert table.loc[20, "gain"] == pytest.approx(10.0)
    assert table.loc[40, "gain"] == pytest.approx(0.2) and math.isnan(table.loc[10, "gain"])
    text = convergence.expert_epochs_verdict(table.reset_index(), CPU_LIKE)
    assert "**iCaRL**" in text and "10 + 5 → 20 + 10: +10.0; 20 + 10 → 40 + 20: +0.2 points" in text
    assert "20 + 10 epochs pass the doubling test" in text
    # the loss still moving at the profile's epochs fails the rule whatever doubling buys
    summary["epochs24"]["icarl+dd"]["expert_b_last_fifth_change"] = [0.03, 0.06]
    table = convergence.expert_epochs_table(summary, CPU_LIKE)
    assert "fail the rule: the loss has not settled" in convergence.expert_epochs_verdict(table, CPU_LIKE)
    del summary["expert48"]
    table = convergence.expert_epochs_table(summary, CPU_LIKE)
    assert "stage A + B), 10 + 5 → 20 + 10: +10.0 points: 20 + 10 epochs have not been doubled" in (
        convergence.expert_epochs_verdict(table, CPU_LIKE))
    alone = convergence.expert_epochs_table({"epochs24": summary["epochs24"]}, CPU_LIKE)
    assert "(stage A + B), none measured: 20 + 10 epochs have not been doubled" in (
        convergence.expert_epochs_verdict(alone, CPU_LIKE))
    summary["expert48"] = {"icarl+dd": _expert_run([80.0, 81.0], [0.0], [0.0], epochs=24,
                                                   expert_epochs=40, expert_balanced_epochs=20)}
    summary["epochs24"]["icarl+dd"]["expert_b_last_fifth_change"] = [0.0]
    table = convergence.expert_epochs_table(summary, CPU_LIKE)
    assert "20 + 10 epochs fail the doubling test" in convergence.expert_epochs_verdict(table, CPU_LIKE)
    empty = convergence.expert_epochs_table({"epochs24": {"icarl": summary["epochs24"]["icarl"]}},
                                            CPU_LIKE)
    assert "no run that changes the expert's epochs" in convergence.expert_epochs_verdict(empty, CPU_LIKE)


def test_single_task_table_parses_the_settings():
    measured = {"fine_amp=0.14 coarse_only=0.3 classes=20 epochs=96": {
        "test_acc": 95.0, "train_acc_last_epoch": 98.0, "errors_inside_superclass": 70.0}}
    row = convergence.single_task_table(measured).iloc[0]
    assert (row.fine_amp, row.coarse_only, row.classes, row.epochs) == (0.14, 0.3, 20, 96)
    assert row.test_acc == 95.0
    assert (row.train_acc, row.errors_in_superclass) == (98.0, 70.0)


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


def init_run(arm, accs, *, order=0, method="icarl", expert=70.0, on_expert=52.0):
    """A hand-made two-round result of `method`: arm 'baseline', 'old' or 'scratch' (+DD at
    k = 1), NME accuracies `accs` per round (the CNN's 30 points lower, so a wrong rule
    shows) and, for +DD, the expert's and the classifier's accuracy on its classes. Only
    'scratch' names its expert_init, as results written before the option: 'old' is the
    default."""
    result = two_rounds(COUNTS, dd=arm != "baseline", order=order, inference="nme")
    result["config"]["method"] = method
    if arm == "scratch":
        result["config"]["expert_init"] = "scratch"
    for rec, acc in zip(result["rounds"], accs):
        rec.update(acc_nme=acc, acc_cnn=acc - 30.0)
    if arm != "baseline":
        result["rounds"][1].update(expert_classes=[2, 3, 0, 1], expert_acc_b=expert,
                                   classifier_acc_on_expert_classes=on_expert)
    return result


def init_runs(order=0, shift=0.0):
    """iCaRL's three arms on one order: averages 60, 65 and 63 (+ `shift`), last rounds
    40, 50 and 46; experts 70 (old) and 55 (scratch)."""
    return [init_run("baseline", (80.0, 40.0 + 2 * shift), order=order),
            init_run("old", (80.0, 50.0 + 2 * shift), order=order),
            init_run("scratch", (80.0, 46.0 + 2 * shift), order=order, expert=55.0,
                     on_expert=48.0)]


def test_init_summary_compares_the_arms_by_the_methods_rule():
    k2 = init_run("old", (80.0, 90.0))
    k2["config"]["similar_k"] = 2  # Figure 7's arm, not this page's
    summary = mechanism.init_summary(init_runs() + [k2]).set_index("arm")
    assert summary.loc[["baseline", "old", "scratch"], "avg_mean"].tolist() == [60.0, 65.0, 63.0]
    assert summary.loc[["baseline", "old", "scratch"], "last_mean"].tolist() == [40.0, 50.0, 46.0]
    assert summary["avg_std"].tolist() == [0.0, 0.0, 0.0] and set(summary["orders"]) == {1}
    rounds = mechanism.init_rounds(init_runs())
    assert rounds.columns.tolist() == ["Method", "Round", "t", "Expert (old)", "+DD (old)",
                                       "Expert (scratch)", "+DD (scratch)"]
    assert rounds.iloc[0].tolist() == ["iCaRL", 2, 4, 70.0, 52.0, 55.0, 48.0]
    comparison = mechanism.init_comparison(init_runs()).iloc[0]
    assert comparison["old_lead"] == pytest.approx(2.0) and comparison["orders"] == 1
    assert (comparison["expert_old"], comparison["expert_scratch"]) == (70.0, 55.0)
    with pytest.raises(ValueError, match="from scratch on one class order"):
        mechanism.init_summary(init_runs()[:2])


def test_init_summary_averages_the_orders_every_arm_has():
    two = init_runs() + init_runs(order=1, shift=2.0)
    summary = mechanism.init_summary(two).set_index("arm")
    assert summary.loc["old", "avg_mean"] == pytest.approx(66.0)
    assert summary.loc["old", "avg_std"] == pytest.approx(2 ** 0.5)
    assert set(summary["orders"]) == {2}
    # order 1 without its scratch run: the arms are compared on order 0 alone
    one = mechanism.init_summary(two[:-1]).set_index("arm")
    assert one.loc["old", "avg_mean"] == 65.0 and set(one["orders"]) == {1}
    curves = mechanism.init_curves(two)
    last = curves[(curves["arm"] == "scratch") & (curves["classes_seen"] == 4)].iloc[0]
    assert last["mean"] == pytest.approx(48.0) and last["std"] == pytest.approx(8 ** 0.5)


def test_verdicts_follow_the_numbers():
    summary = {"epochs12": {"icarl": _arm("nme", 50.0, 40.0), "ucir": _arm("cnn", 55.0, 45.0)},
               "epochs24": {"icarl": _arm("nme", 50.3, 52.0, 24), "ucir": _arm("cnn", 60.0, 1, 24)}}
    text = convergence.epochs_verdict(convergence.epochs_table(summary, 12), 12)
    assert "**iCaRL**" in text and "12 → 24: +0.3" in text and "12 epochs pass" in text
    assert "12 → 24: +5.0" in text and "12 epochs fail" in text
    assert "pass it: 12." in text and "no measured doubling passes it." in text
    summary["epochs48"] = {"ucir": _arm("cnn", 60.4, 1, 48)}  # 24 -> 48 buys +0.4: 24 pass
    text = convergence.epochs_verdict(convergence.epochs_table(summary, 12), 12)
    assert "24 → 48: +0.4" in text and "12 epochs fail" in text and "pass it: 24." in text
    measured = {f"fine_amp=0.14 coarse_only={share} classes=20 epochs={e}": {
        "test_acc": acc, "train_acc_last_epoch": acc + 2, "errors_inside_superclass": 70.0}
        for e, acc, share in ((12, 60.0, 0.0), (96, 95.0, 0.0), (96, 10.0, 0.3))}
    text = convergence.single_task_verdict(convergence.single_task_table(measured), 0.14, 0.0)
    assert "60.0 % after 12 epochs, 95.0 % after 96" in text and "gap of +2.0" in text
    text = convergence.single_task_verdict(convergence.single_task_table(measured), 0.14, 0.3)
    assert "10.0 % after 96 epochs;" in text  # one length measured: said once


def test_forgetting_verdict_compares_the_longest_arm_with_joint_training():
    epochs = convergence.epochs_table(
        {"epochs12": {"icarl": _arm("nme", 50.0, 40.0)},
         "epochs48": {"icarl": _arm("nme", 60.0, 70.0, 48), "ucir": _arm("cnn", 60.0, 66.0, 48)}}, 12)
    tasks = convergence.single_task_table({
        f"fine_amp=0.3 coarse_only=0.3 classes={c} epochs={e}": {
            "test_acc": acc, "train_acc_last_epoch": acc, "errors_inside_superclass": 50.0}
        for c, e, acc in ((100, 12, 70.0), (100, 24, 74.0), (20, 48, 99.0))})
    text = convergence.forgetting_verdict(epochs, tasks, 0.3, 0.3)
    assert "at 48 epochs: iCaRL 70.0 %, UCIR 66.0 %, against 74.0 %" in text
    assert "all 100 classes at once (24 epochs), a gap of 6.0 points" in text
    assert "no joint-training run" in convergence.forgetting_verdict(epochs, tasks, 0.1, 0.0)


def _entry(method, dd, order, avg, acc, errors, init="old", leads=()):
    return {"method": method, "dd": dd, "order": order, "expert_init": init if dd else None,
            "rule": "cnn", "acc": acc, "avg_inc_acc": avg, "last_acc": acc[-1],
            "errors": dict(zip(("confusion", "forgetting", "other"), errors)),
            **({"mechanism": [{"round": r + 2, "t": 4, "expert": 60.0 + lead,
                               "baseline": 60.0, "dd": 61.0} for r, lead in enumerate(leads)]}
               if dd else {})}


def _orders_study():
    runs = [_entry("icarl", False, 0, 70.0, [80, 60], (100, 50, 10)),
            _entry("icarl", False, 1, 72.0, [82, 62], (200, 40, 10)),
            _entry("icarl", True, 0, 71.0, [80, 62], (90, 40, 10), leads=(2.0, 4.0)),
            _entry("icarl", True, 1, 74.0, [82, 66], (150, 40, 0), leads=(1.0, 1.0)),
            _entry("icarl", True, 0, 69.0, [80, 58], (100, 50, 10), "scratch", (-1.0, 0.0)),
            _entry("bic", False, 0, 65.0, [75, 55], (100, 20, 5)),
            _entry("bic", True, 0, 64.0, [75, 53], (110, 20, 5), leads=(-2.0, 1.0))]
    return {f"{i}": run for i, run in enumerate(runs)}


def test_study_accuracy_means_stds_and_paired_gains_by_hand():
    table = mechanism.study_accuracy(_orders_study()).set_index(["Method", "Arm"])
    base, dd = table.loc[("iCaRL", "baseline")], table.loc[("iCaRL", "+DD")]
    assert (base["Avg"], base["Avg std"]) == (71.0, pytest.approx(math.sqrt(2)))
    assert (dd["R1"], dd["R2"], dd["Avg"], dd["Last"]) == (81.0, 64.0, 72.5, 64.0)
    assert dd["Gain"] == pytest.approx(1.5) and math.isnan(base["Gain"])
    # scratch ran on order 0 only: its gain is against order 0's baseline, not the mean
    scratch = table.loc[("iCaRL", "+DD (scratch)")]
    assert (scratch["Orders"], scratch["Gain"], scratch["Avg std"]) == ("0", -1.0, 0.0)
    assert list(table.index.get_level_values("Method").unique()) == ["iCaRL", "BiC"]


def test_study_has_pairs_needs_every_arm_on_one_order():
    study = _orders_study()
    assert mechanism.study_has_pairs(study) and mechanism.study_has_pairs(study, "old", "scratch")
    apart = {"b": _entry("icarl", False, 0, 70.0, [80, 60], (1, 1, 1)),
             "d": _entry("icarl", True, 1, 71.0, [80, 62], (1, 1, 1)),
             "s": _entry("icarl", True, 0, 69.0, [80, 58], (1, 1, 1), "scratch")}
    assert mechanism.study_has_pairs(apart, "scratch")
    assert not mechanism.study_has_pairs(apart, "old")  # baseline on order 0, +DD on 1
    assert not mechanism.study_has_pairs(apart, "old", "scratch")


def test_study_pairs_and_verdict_by_hand():
    pairs = mechanism.study_pairs(_orders_study()).set_index(["Method", "Order"])
    first = pairs.loc[("iCaRL", 0)]
    assert first["Gain"] == 1.0 and first["Expert lead"] == 3.0 and first["Rounds led"] == "2 of 2"
    assert first["Confusion %"] == -10.0 and first["Forgetting %"] == -20.0
    assert pairs.loc[("iCaRL", 1), "Other %"] == -100.0
    assert pairs.loc[("BiC", 0), "Rounds led"] == "1 of 2"
    verdict = mechanism.study_verdict(pairs.reset_index())
    assert "in 2 of 3 (method, order) pairs" in verdict
    assert "where it does not, by -0.50" in verdict and "helps, the expert leads" in verdict
    scratch = mechanism.study_pairs(_orders_study(), arm="scratch")
    assert list(scratch["Gain"]) == [-1.0] and list(scratch["Expert lead"]) == [-0.5]
    with pytest.raises(ValueError, match="no method"):
        mechanism.study_pairs({"0": _entry("bic", True, 0, 64.0, [75, 53], (1, 1, 1))})


def test_study_init_pairs_each_start_and_keeps_old_by_the_rule():
    table = mechanism.study_init(_orders_study())
    assert table.to_dict("records") == [{
        "Method": "iCaRL", "Order": 0, "Gain (old)": 1.0, "Gain (scratch)": -1.0,
        "Expert lead (old)": 3.0, "Expert lead (scratch)": -0.5}]
    verdict = mechanism.study_init_verdict(table)
    assert "-2.00 points against the old start's" in verdict and "stays `old`" in verdict
    assert verdict.startswith("Over 1 (method, order) pair,") and "(from" not in verdict
    better = table.assign(**{"Gain (scratch)": [1.6]})
    assert "scratch is the better start" in mechanism.study_init_verdict(better)
    # a larger mean is not enough when one pair goes the other way
    mixed = pd.concat([better, table]).reset_index(drop=True)
    mixed["Gain (scratch)"] = [3.0, 0.9]  # +2.0 and -0.1 against old: mean +0.95
    assert "stays `old`" in mechanism.study_init_verdict(mixed)


def _reduced(name, avg, changes=(0.2, 0.01, 0.03), lead=None, **overrides):
    run = {**_run(name, "nme", avg, avg - 5, None), "overrides": overrides,
           "classifier_last_fifth_change": list(changes)}
    return run if lead is None else {**run, "expert_lead": lead}


def test_reductions_table_sets_each_undone_reduction_against_the_profiles_runs():
    summary = {
        "epochs24": {"icarl": _reduced("icarl", 70.0, epochs=24),
                     "icarl+dd": _reduced("icarl+dd", 70.5, lead=1.0, epochs=24),
                     "lwf": _reduced("lwf", 69.0, epochs=24)},  # no arm of its own: left out
        "epochs48": {"icarl": _reduced("icarl", 90.0, epochs=48)},  # an epoch arm: left out
        "expert48": {"icarl+dd": _reduced("icarl+dd", 90.0, epochs=24, expert_epochs=40)},
        "per400": {"icarl": _reduced("icarl", 74.0, (0.3, 0.02, 0.08), train_per_class=400),
                   "icarl+dd": _reduced("icarl+dd", 76.0, lead=3.0, train_per_class=400)},
        "size32": {"icarl": _reduced("icarl", 71.0, image_size=32),
                   "icarl+dd": _reduced("icarl+dd", 71.2, lead=0.5, image_size=32)},
        "width1": {"icarl": _reduced("icarl", 72.0, width=1.0)}}  # its +DD still training
    table = convergence.reductions_table(summary, CPU_LIKE | {"image_size": 16, "width": 0.5,
                                                              "train_per_class": 100})
    assert list(table["change"]) == ["none (the profile)", "image size 16 → 32",
                                     "network width 0.5 → 1.0", "training images per class 100 → 400"]
    rows = table.set_index("change")
    assert rows.loc["none (the profile)", "gain"] == pytest.approx(0.5)
    assert rows.loc["training images per class 100 → 400", "gain"] == pytest.approx(2.0)
    assert rows.loc["training images per class 100 → 400", "expert_lead"] == 3.0
    # round 1 left out of the loss change: it starts from random weights
    assert rows.loc["training images per class 100 → 400", "baseline_change"] == pytest.approx(0.08)
    assert math.isnan(rows.loc["network width 0.5 → 1.0", "dd"])
    text = convergence.reductions_verdict(table)
    assert "**iCaRL, training images per class 100 → 400**: the baseline +4.00 points; DD's gain " \
           "+0.50 → +2.00 (expert lead +1.00 → +3.00)." in text
    assert "**iCaRL, network width 0.5 → 1.0**: the baseline +2.00 points." in text
    assert text.endswith("by 0.5 points or more in: iCaRL: training images per class 100 → 400.")
    assert "no run that undoes" in convergence.reductions_verdict(
        convergence.reductions_table({"epochs48": summary["epochs48"]}, CPU_LIKE))
