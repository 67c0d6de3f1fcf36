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
        (m, dd, o) for m in ("lwf", "icarl", "ucir") for dd in (False, True) for o in (0, 1, 2)}
    assert {(c.increment, c.epochs, c.expert_epochs, c.expert_balanced_epochs, c.expert_init)
            for c in cfgs} == {(20, 48, 40, 20, "old")}
    assert {c.epochs for c in script.configs("20", str(tmp_path))} == {24}
    with pytest.raises(SystemExit, match="part '30' is unknown"):
        script.main(["30"], str(tmp_path))
