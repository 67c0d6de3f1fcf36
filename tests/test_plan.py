"""ddlib.plan: the runs of one notebook, validated up front; their summaries
(ddlib.analysis, exported as ddlib.summary_table etc.)."""

from __future__ import annotations

import math

import pytest

import ddlib
from ddlib import analysis, results, utils
from ddlib import plan as plan_module
from ddlib.plan import run_all


def test_plan_enumerates_increments_dd_and_orders():
    runs = ddlib.plan("smoke", method="lwf", increments=[5, 10], dd=[False, True],
                      orders=[0, 1])
    assert [(r.increment, r.dd, r.order) for r in runs] == [
        (i, d, o) for i in (5, 10) for d in (False, True) for o in (0, 1)]
    assert all(r.method == "lwf" and r.profile == "smoke" for r in runs)
    assert [r.dd for r in ddlib.plan("smoke", method="lwf", dd=True)] == [True]


def test_epochs_override_moves_milestones_and_the_experts_phases():
    (cfg,) = ddlib.plan("paper", method="icarl", dd=True, epochs=50)
    assert cfg.epochs == 50 and cfg.milestones == (25, 38)  # paper: 100 epochs, (50, 75)
    assert (cfg.expert_epochs, cfg.expert_balanced_epochs) == (40, 20)  # 80 + 40 halved
    assert cfg.expert_milestones == (20, 30) and cfg.expert_balanced_milestones == (10,)
    (cfg,) = ddlib.plan("paper", method="icarl", dd=True, epochs=4, milestones=(1,),
                        expert_epochs=2)
    assert cfg.milestones == (1,) and cfg.expert_epochs == 2 and cfg.expert_milestones == (1,)


def test_every_entry_point_scales_an_epochs_override_alike():
    # `python -m ddlib run --epochs 48` resolves through RunConfig.resolve, not plan: a
    # schedule doubled there must be the one a study's plan doubles
    direct = ddlib.RunConfig.resolve("cpu", method="icarl", dd=True, epochs=48, progress=False)
    (planned,) = ddlib.plan("cpu", method="icarl", dd=True, epochs=48, progress=False)
    assert direct.identity() == planned.identity()
    assert direct.milestones == (24, 36) and direct.expert_milestones == (20, 30)  # cpu: 24, (12, 18)
    assert (direct.expert_epochs, direct.expert_balanced_epochs) == (40, 20)  # 20 + 10 doubled
    # ImageNet's own schedule is the base there (90 epochs, /10 at 30 and 60), not CIFAR's 100
    imagenet = ddlib.RunConfig.resolve("paper", dataset="imagenet100", method="icarl", epochs=45)
    assert imagenet.milestones == (15, 30) and imagenet.expert_epochs == 40


@pytest.mark.parametrize("bad, name", [
    (dict(profile="fast"), "profile"), (dict(method="foo"), "method"),
    (dict(orders=["a"]), "orders"), (dict(dd="yes"), "dd"), (dict(orders=[]), "orders"),
    (dict(increments=[30]), "increment"), (dict(epochs=0), "epochs"),
    (dict(similar_k=9), "similar_k"), (dict(dataset="mnist"), "dataset"),
    (dict(memory=10), "memory"), (dict(colour="red"), "colour")])
def test_bad_values_name_the_parameter(bad, name):
    kwargs = dict(profile="smoke", method="icarl") | bad
    with pytest.raises(ValueError, match=name):
        ddlib.plan(**kwargs)


def _record(method, dd, order, accs, increment=5):
    return {"config": dict(method=method, dd=dd, similar_k=1, order=order,
                           increment=increment, profile="smoke", dataset="synthetic"),
            "inference": "nme",
            "rounds": [dict(round=i + 1, classes_seen=increment * (i + 1), acc_cnn=0.0,
                            acc_nme=a) for i, a in enumerate(accs)]}


def test_tables_average_over_orders_and_round_to_one_decimal():
    results = [_record("icarl", False, 0, [50.0, 40.0]), _record("icarl", False, 1, [60.0, 30.0]),
               _record("icarl", True, 0, [50.0, 45.04]), _record("icarl", True, 1, [60.0, 35.0])]
    table = ddlib.summary_table(results)
    assert list(table.columns) == ["iCaRL", "iCaRL+DD"] and list(table.index) == [5, 10]
    assert table.loc[10].tolist() == [35.0, 40.0]
    avg = ddlib.average_table(results)
    assert avg.loc["iCaRL"].tolist() == [45.0, 35.0, 2]
    assert ddlib.headline(results) == {"base_avg": 45.0, "dd_avg": 47.5, "dd_gain": 2.5}
    assert math.isnan(ddlib.headline(results[:2])["dd_avg"])


def test_describe_shows_one_row_per_run(tmp_path):
    runs = ddlib.plan("smoke", method="bic", results_dir=str(tmp_path))
    table = ddlib.describe(runs)
    assert list(table.index) == ["BiC", "BiC+DD"]
    assert table.loc["BiC+DD", "expert epochs"] == "2+1"


def test_run_page_tables_live_in_analysis():
    assert ddlib.summary_table is analysis.summary_table
    assert ddlib.average_table is analysis.average_table
    assert ddlib.headline is analysis.headline
    assert not hasattr(plan_module, "summary_table")  # one home: analysis, not plan


def test_describe_gives_result_paths_from_the_project_root():
    (cfg,) = ddlib.plan("smoke", method="icarl", dd=False)
    shown = ddlib.describe([cfg]).loc["iCaRL", "result"]
    assert shown == str(results.result_path(cfg).relative_to(utils.project_root()))
    assert shown.startswith("results/smoke/synthetic/icarl/")


@pytest.mark.slow
def test_run_all_on_two_workers_gives_each_run_its_own_result_in_order(smoke):
    """Two runs on two worker processes: the results come back in the order given, each the
    one the store holds for its config (a third call reads both back without training)."""
    cfgs = [smoke(method="icarl", order=1, threads=1), smoke(method="ucir", order=0, threads=1)]
    parallel = run_all(cfgs, verbose=False, jobs=2)
    assert [r["config"]["method"] for r in parallel] == ["icarl", "ucir"]
    assert [r["identity"] for r in parallel] == [results.current(c)["identity"] for c in cfgs]
    lwf = smoke(method="lwf", order=1, threads=1)  # reads iCaRL's training: started last
    assert [r["config"]["method"] for r in run_all([lwf, cfgs[0]], verbose=False, jobs=2)] == [
        "lwf", "icarl"]
    again = run_all(cfgs, verbose=False)
    assert [(r["identity"], r["avg_inc_acc"], r["train_time_s"]) for r in again] == [
        (r["identity"], r["avg_inc_acc"], r["train_time_s"]) for r in parallel]


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_run_all_rejects_a_bad_number_of_jobs(jobs, smoke):
    with pytest.raises(ValueError, match="jobs="):
        run_all([smoke(method="icarl")], jobs=jobs)
