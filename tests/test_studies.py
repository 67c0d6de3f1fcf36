"""The study scripts' summaries: a store holds only what one machine trained, so updating a
study's JSON keeps the committed numbers of the runs that store lacks."""

from __future__ import annotations

import importlib.util
import json

import pytest

from ddlib.utils import project_root


def _script(name):
    spec = importlib.util.spec_from_file_location(f"study_{name}", project_root() / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, committed", [
    ("convergence", {"size32": {"icarl": {"avg_inc_acc": {"nme": 71.0}}}}),
    ("orders", {"20": {"icarl order1": {"avg_inc_acc": 77.0}}})])
def test_an_empty_store_keeps_the_committed_numbers(tmp_path, monkeypatch, name, committed):
    script = _script(name)
    monkeypatch.setattr(script, "HERE", tmp_path)
    (tmp_path / f"{name}.json").write_text(json.dumps(committed))
    assert script.write_summary(str(tmp_path / "results")) == committed
    assert json.loads((tmp_path / f"{name}.json").read_text()) == committed


def test_the_longer_part_trains_its_methods_at_its_epochs(tmp_path):
    script = _script("orders")
    cfgs = script.configs(f"20@{script.LONGER_EPOCHS}", str(tmp_path))
    assert {(c.method, c.dd, c.order) for c in cfgs} == {
        (m, dd, o) for m in ("lwf", "icarl", "ucir", "bic") for dd in (False, True)
        for o in (0, 1, 2)}
    assert {(c.increment, c.epochs, c.expert_epochs, c.expert_balanced_epochs, c.expert_init)
            for c in cfgs} == {(20, 48, 40, 20, "old")}
    assert {c.epochs for c in script.configs("20", str(tmp_path))} == {24}
    with pytest.raises(SystemExit, match="part '30' is unknown"):
        script.main(["30"], str(tmp_path))


def _queue(script, monkeypatch):
    """What `script.main` would train, instead of training it."""
    queued = []
    monkeypatch.setattr(script, "run_all", lambda runs, **_: queued.extend(runs))
    monkeypatch.setattr(script, "write_summary", lambda *_: None)
    return queued


def test_the_convergence_study_trains_one_methods_runs_longest_first(tmp_path, monkeypatch):
    script = _script("convergence")
    queued = _queue(script, monkeypatch)
    script.main(["epochs24", "epochs48"], str(tmp_path), methods=["bic"])
    assert [(c.method, c.epochs, c.dd) for c in queued] == [
        ("bic", 48, True), ("bic", 24, True), ("bic", 48, False), ("bic", 24, False)]
    with pytest.raises(SystemExit, match=r"methods \['lwf'\] have no run in the arms \['size32'\]"):
        script.main(["size32"], str(tmp_path), methods=["lwf"])


def test_the_orders_study_trains_one_methods_runs_order_by_order(tmp_path, monkeypatch):
    script = _script("orders")
    queued = _queue(script, monkeypatch)
    script.main([f"20@{script.LONGER_EPOCHS}"], str(tmp_path), methods=["bic"])
    assert [(c.method, c.order) for c in queued] == [("bic", o) for o in (0, 0, 1, 1, 2, 2)]
    assert [c.dd for c in queued[:2]] == [True, False]
    with pytest.raises(SystemExit, match="have no run in the part '20@48'"):
        script.main(["20@48"], str(tmp_path), methods=["icarl+dd"])
