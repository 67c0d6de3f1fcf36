"""Crashes and resuming: a run killed mid-round (SIGKILL) or missing its last rounds resumes
to the result of an uninterrupted run; corrupt or foreign checkpoints are recomputed, never
trusted; round 1 is shared by the arms of one method and order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import ddlib
from ddlib.gradcam import load_round_model
from ddlib import RunConfig, checkpoint, results
from ddlib.methods import Method
from ddlib.run import checkpoint_path, round_one_path

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _accs(payload):
    return [(r["acc_cnn"], r["acc_nme"], r["confusion_cnn"]) for r in payload["rounds"]]


@pytest.mark.slow
def test_resume_after_losing_the_last_rounds_equals_uninterrupted(smoke):
    cfg = smoke(dd=True)
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).unlink()
    for r in (3, 4):
        checkpoint_path(cfg, r).unlink()
    resumed = ddlib.run(cfg, verbose=False)
    assert _accs(resumed) == _accs(full)
    assert resumed["rounds"][1]["time"] == full["rounds"][1]["time"]  # rounds 1-2 reloaded


@pytest.mark.slow
def test_truncated_checkpoint_is_reported_and_recomputed(smoke):
    cfg = smoke()
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).unlink()
    path = checkpoint_path(cfg, 4)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match=str(path.name)):
        again = ddlib.run(cfg, verbose=False)
    assert _accs(again) == _accs(full)


@pytest.mark.slow
def test_corrupt_result_file_is_recomputed(smoke):
    cfg = smoke()
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).write_text('{"schema_version": 1, "rou')
    again = ddlib.run(cfg, verbose=False)
    assert _accs(again) == _accs(full)


@pytest.mark.slow
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


@pytest.mark.slow
def test_checkpoint_of_another_config_is_not_resumed(smoke):
    cfg = smoke()
    full = ddlib.run(cfg, verbose=False)
    results.result_path(cfg).unlink()
    for round_idx in range(1, 5):  # as after a change of the synthetic images' version
        state = torch.load(checkpoint_path(cfg, round_idx), weights_only=True)
        state["identity"] = "something-else"
        torch.save(state, checkpoint_path(cfg, round_idx))
    with pytest.warns(UserWarning, match="round04.pt was made by another version"):
        again = ddlib.run(cfg, verbose=False)
    assert _accs(again) == _accs(full)  # recomputed from round 1 (shared), same numbers
    # round 1 came from the shared copy, so nothing rewrote the stale one: it was removed
    assert not checkpoint_path(cfg, 1).exists()
    model, _, _ = load_round_model(results.result_path(cfg), 1)  # from the shared copy
    assert model.num_classes == cfg.increment


@pytest.mark.slow
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


@pytest.mark.slow
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


def _same(payload: dict) -> dict:
    """What must not change when a run is interrupted: every per-round record (accuracies,
    confusion matrices, losses, memory) except its timings, and the summaries."""
    rounds = [{k: v for k, v in rec.items() if k != "time"} for rec in payload["rounds"]]
    return {"rounds": rounds, "class_order": payload["class_order"],
            "avg_inc_acc": payload["avg_inc_acc"], "last_acc": payload["last_acc"]}


def _cli(results_dir: Path) -> list[str]:
    return [sys.executable, "-m", "ddlib", "run", "--profile", "smoke", "--threads", "1",
            "--no-progress", "--results-dir", str(results_dir)]


# ----------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
def test_sigkill_in_round_two_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    killed_dir = tmp_path / "killed"
    cfg = RunConfig.resolve("smoke", threads=1, progress=False, results_dir=str(killed_dir))
    first = checkpoint_path(cfg, 1)
    proc = subprocess.Popen(_cli(killed_dir), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not first.is_file():  # round 1 done: its checkpoint was renamed into place
            if proc.poll() is not None:
                pytest.fail(f"the run ended before round 1's checkpoint appeared:\n"
                            f"{proc.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("round 1's checkpoint did not appear within 120 s")
            time.sleep(0.005)
        time.sleep(0.2)  # into round 2 (about a second on one thread)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = [r for r in range(1, 5) if checkpoint_path(cfg, r).is_file()]
    assert done and done == list(range(1, len(done) + 1))
    # Leftovers of an interrupted write, wherever one can be: temp files named ".<target>.*".
    ckpt_dir, store = first.parent, results.result_path(cfg)
    (ckpt_dir / f".round{len(done) + 1:02d}.pt.half").write_bytes(b"PK\x03\x04 cut here")
    store.parent.mkdir(parents=True, exist_ok=True)
    (store.parent / f".{store.name}.half").write_text('{"schema_version": 1, "rou')

    rerun = subprocess.run(_cli(killed_dir), cwd=tmp_path, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Traceback" not in rerun.stderr
    if len(done) < 4:  # the kill came before the last round: the rerun resumed
        assert f"resumed after round {len(done)}" in rerun.stdout

    reference = ddlib.run(RunConfig.resolve("smoke", threads=1, progress=False,
                                            results_dir=str(tmp_path / "uninterrupted")),
                          verbose=False)
    resumed = results.read(store)
    assert _same(resumed) == _same(reference)
    # Nothing left behind breaks the store: one result, nothing skipped, every checkpoint
    # loads, and the temp files are never mistaken for results or checkpoints.
    found, skipped = results.scan(killed_dir)
    assert [p for p, _ in found] == [store] and skipped == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(checkpoint.load(checkpoint_path(cfg, r)) for r in range(1, 5))
        assert len(results.load(killed_dir)) == 4
