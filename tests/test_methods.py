"""End-to-end smoke runs of every method, with and without DD."""

from __future__ import annotations

import json

import pytest

import ddlib
from ddlib import results
from ddlib.methods import METHODS


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("dd", [False, True])
def test_method_runs_end_to_end(smoke, method, dd):
    cfg = smoke(method=method, dd=dd)
    out = ddlib.run(cfg, verbose=False)
    rounds = out["rounds"]
    assert [r["classes_seen"] for r in rounds] == [5, 10, 15, 20]
    for rec in rounds:
        n = rec["classes_seen"]
        assert len(rec["confusion_cnn"]) == n and len(rec["per_class_acc_nme"]) == n
        assert sum(map(sum, rec["confusion_cnn"])) == n * 10  # 10 test images per class
        assert rec["memory_per_class"] == cfg.memory // n
        for rule in ("cnn", "nme"):
            assert rec[f"acc_{rule}"] <= rec[f"top5_{rule}"] <= 100.0
    assert rounds[0]["top5_cnn"] == 100.0  # top-5 of the first round's 5 classes
    assert rounds[0]["acc_cnn"] > 100 / 5  # above chance after round 1
    assert ("similar_pairs" in rounds[1]) == dd and "similar_pairs" not in rounds[0]
    assert ("Ln" in rounds[1]["losses"]) == dd
    saved = json.loads(results.result_path(cfg).read_text())
    assert saved["rounds"][-1]["acc_nme"] == rounds[-1]["acc_nme"]
    assert saved["config"]["dd"] == dd and saved["schema_version"] == results.SCHEMA_VERSION


@pytest.mark.slow
def test_dd_pairs_each_new_class_with_one_distinct_old_class(smoke):
    out = ddlib.run(smoke(dd=True), verbose=False)
    for rec in out["rounds"][1:]:
        pairs = rec["similar_pairs"]
        assert sorted(c for c, _, _ in pairs) == rec["new_classes"]
        olds = [o for _, o, _ in pairs]
        assert len(set(olds)) == len(olds) and all(o < min(rec["new_classes"]) for o in olds)
        assert rec["expert_classes"] == rec["new_classes"] + sorted(olds)


@pytest.mark.slow
@pytest.mark.parametrize("dd", [False, True])
def test_same_config_twice_gives_identical_results(smoke, dd):
    first = ddlib.run(smoke(dd=dd), verbose=False)
    second = ddlib.run(smoke(dd=dd, fresh=True), verbose=False)  # recompute, not reload
    for a, b in zip(first["rounds"], second["rounds"]):
        assert (a["acc_cnn"], a["acc_nme"]) == (b["acc_cnn"], b["acc_nme"])
        assert a["confusion_nme"] == b["confusion_nme"]


@pytest.mark.slow
def test_round_one_is_identical_for_baseline_and_dd(smoke):
    base = ddlib.run(smoke(dd=False, fresh=True), verbose=False)["rounds"][0]
    with_dd = ddlib.run(smoke(dd=True, fresh=True), verbose=False)["rounds"][0]
    assert base["confusion_cnn"] == with_dd["confusion_cnn"]


def test_store_paths_differ_by_identity(smoke):
    paths = {results.result_path(smoke(**kw)) for kw in
             [{}, {"dd": True}, {"order": 1}, {"dd": True, "similar_k": 2}, {"epochs": 2}]}
    assert len(paths) == 5


def test_expert_settings_do_not_split_baseline_runs(smoke):
    assert results.result_path(smoke(expert_epochs=5)) == results.result_path(smoke())
    assert (results.result_path(smoke(dd=True, expert_epochs=5))
            != results.result_path(smoke(dd=True)))


# ---- Eq. (4): Method.loss = the baseline's objective + lambda_2 * Ln ------------------------

class _FixedLn:
    """Stands in for the expert: Ln = 0.75 whatever the batch."""

    def __call__(self, x, logits):
        return logits.sum() * 0 + 0.75


def _loss(smoke, method, lambda_dd, *, old=True):
    import torch

    from ddlib.methods import METHODS

    cfg = smoke(method=method, dd=True, lambda_dd=lambda_dd)
    m = METHODS[method].__new__(METHODS[method])
    m.cfg = cfg
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]], requires_grad=True)
    out = (torch.ones(1, 4), logits)
    before = (torch.ones(1, 4), torch.tensor([[0.5, 1.5]])) if old else None
    loss, parts = m.loss(None, torch.tensor([3]), out, before, _FixedLn())
    baseline = m.objective(None, torch.tensor([3]), out, before)[0]
    return float(loss.detach()), parts, float(baseline.detach())


@pytest.mark.parametrize("method", ["lwf", "icarl", "bic"])
def test_lambda_dd_scales_ln_and_zero_gives_the_baseline(smoke, method):
    loss0, parts0, objective = _loss(smoke, method, 0.0)
    loss1, parts1, _ = _loss(smoke, method, 1.0)
    loss2, _, _ = _loss(smoke, method, 2.0)
    assert loss0 == pytest.approx(objective, abs=1e-7)
    assert loss1 - loss0 == pytest.approx(0.75, rel=1e-6)
    assert loss2 - loss0 == pytest.approx(1.5, rel=1e-6)
    assert float(parts1["Ln"]) == pytest.approx(0.75)


def test_no_ln_in_round_one(smoke):
    loss, parts, objective = _loss(smoke, "icarl", 1.0, old=False)
    assert "Ln" not in parts and loss == pytest.approx(objective)
