"""Per-round checkpoints: resume, corruption, shared round 1, safe loading."""

from __future__ import annotations

import pytest
import torch

import ddlib
from ddlib import checkpoint, results
from ddlib.methods import Method
from ddlib.run import checkpoint_path, round_one_path


def _accs(payload):
    return [(r["acc_cnn"], r["acc_nme"], r["confusion_cnn"]) for r in payload["rounds"]]


def test_resume_after_losing_the_last_rounds_equals_uninterrupted(smoke):
    cfg = smoke(dd=True)
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).unlink()
    for r in (3, 4):
        checkpoint_path(cfg, r).unlink()
    resumed = ddlib.run(cfg, verbose=False)
    assert _accs(resumed) == _accs(full)
    assert resumed["rounds"][1]["time"] == full["rounds"][1]["time"]  # rounds 1-2 reloaded


def test_truncated_checkpoint_is_reported_and_recomputed(smoke):
    cfg = smoke()
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).unlink()
    path = checkpoint_path(cfg, 4)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match=str(path.name)):
        again = ddlib.run(cfg, verbose=False)
    assert _accs(again) == _accs(full)


def test_corrupt_result_file_is_recomputed(smoke):
    cfg = smoke()
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).write_text('{"schema_version": 1, "rou')
    again = ddlib.run(cfg, verbose=False)
    assert _accs(again) == _accs(full)


def test_dd_run_reuses_the_baselines_round_one(smoke):
    ddlib.run(smoke(), verbose=False)
    assert round_one_path(smoke()) == round_one_path(smoke(dd=True, similar_k=2))
    with_dd = ddlib.run(smoke(dd=True), verbose=False)
    assert with_dd["rounds"][0]["time"] == ddlib.run(smoke(), verbose=False)["rounds"][0]["time"]


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("side effect",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Boom()}, path)
    with pytest.warns(UserWarning, match="evil.pt"):
        assert checkpoint.load(path) is None


def test_checkpoint_of_another_config_is_not_resumed(smoke):
    cfg = smoke()
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).unlink()
    state = torch.load(checkpoint_path(cfg, 4), weights_only=True)
    state["identity"] = "something-else"
    torch.save(state, checkpoint_path(cfg, 4))
    with pytest.warns(UserWarning, match="round04.pt was made by another version"):
        again = ddlib.run(cfg, verbose=False)
    assert _accs(again) == _accs(full)  # recomputed from round 1 (shared), same numbers


def test_a_run_held_by_another_process_waits_then_reads_the_result_back(smoke):
    import fcntl
    import threading

    cfg = smoke()
    first = ddlib.run(cfg, verbose=False)
    store = results.result_path(cfg)
    second: dict = {}
    with open(store.with_suffix(".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a sweep job running the same config would
        worker = threading.Thread(target=lambda: second.update(ddlib.run(cfg, verbose=False)))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), "run() must wait for the lock"
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(timeout=60)
    assert _accs(second) == _accs(first)
    assert second["wall_time_s"] == first["wall_time_s"]  # read back, not trained again


def test_a_result_from_older_code_is_recomputed(smoke, monkeypatch):
    from ddlib import config

    cfg = smoke(method="bic")
    first = ddlib.run(cfg, verbose=False)
    assert first["identity"] == cfg.identity()
    assert ddlib.run(cfg, verbose=False)["wall_time_s"] == first["wall_time_s"]  # read back
    monkeypatch.setitem(config.METHOD_VERSIONS, "bic", config.METHOD_VERSIONS["bic"] + 1)
    trained = []
    fit_round = Method.fit_round
    monkeypatch.setattr(Method, "fit_round", lambda self, i: trained.append(i) or fit_round(self, i))
    with pytest.warns(UserWarning, match="another version"):  # its checkpoints too
        again = ddlib.run(cfg, verbose=False)  # BiC's training changed: stored result is stale
    assert again["identity"] == cfg.identity() != first["identity"]
    assert trained == [1, 2, 3, 4]  # every round trained again, none read back
