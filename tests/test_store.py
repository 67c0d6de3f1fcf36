"""The result store's safety: it skips what it cannot read, writes atomically, and disk and
permission errors name the file and reach the CLI as "error: ..." (exit 2), never as a
traceback. Crashes and resuming are in test_resume.py."""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path

import pytest

from ddlib import RunConfig, checkpoint, results, utils
from ddlib.__main__ import main
from ddlib.run import checkpoint_path

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- result store


def _payload(method: str = "icarl", **config) -> dict:
    cfg = {"method": method, "dd": False, "similar_k": 1, "order": 0, "increment": 5,
           "profile": "smoke", "dataset": "synthetic", **config}
    rounds = [{"round": r, "classes_seen": 5 * r, "acc_cnn": 50.0, "acc_nme": 60.0}
              for r in (1, 2)]
    return {"schema_version": results.SCHEMA_VERSION, "config": cfg, "inference": "nme",
            "rounds": rounds}


def test_load_skips_and_lists_what_is_not_a_current_result(tmp_path: Path) -> None:
    root = tmp_path / "results"
    good = root / "smoke/synthetic/icarl/inc5/order0.json"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps(_payload()))
    other = root / "smoke/synthetic/lwf/inc5/order0.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps(_payload("lwf")))
    bad = {
        "old.json": json.dumps({**_payload(), "schema_version": 0}),
        "unversioned.json": json.dumps({k: v for k, v in _payload().items()
                                        if k != "schema_version"}),
        "truncated.json": json.dumps(_payload())[:40],
        "empty.json": "",
        "list.json": "[1, 2, 3]",
        "no_rounds.json": json.dumps({k: v for k, v in _payload().items() if k != "rounds"}),
        "bad_round.json": json.dumps({**_payload(), "rounds": [{"round": 1}]}),
        "rounds_not_dicts.json": json.dumps({**_payload(), "rounds": [1, 2]}),
        "nested.json": "[" * 100_000 + "]" * 100_000,
    }
    for name, text in bad.items():
        (root / name).write_text(text)
    (root / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    # Things that are not result files at all: never looked at, never listed.
    (root / "folder.json").mkdir()
    (root / "order0.ckpt").mkdir()
    (root / "order0.ckpt/round01.pt").write_bytes(b"not a checkpoint")
    (root / ".order0.json.tmp123").write_text("{half")
    (root / "notes.txt").write_text("hello")

    with pytest.warns(UserWarning, match=r"skipped 10 file\(s\)"):
        frame = results.load(root)
    assert sorted(set(frame["path"])) == sorted([str(good), str(other)])
    assert len(frame) == 4 and set(frame["method"]) == {"icarl", "lwf"}
    skipped = dict(frame.attrs["skipped"])
    assert sorted(p.name for p in skipped) == sorted([*bad, "binary.json"])
    for path, reason in skipped.items():
        assert str(path) in reason  # every reason names its file
    assert "schema_version 0" in skipped[root / "old.json"]
    assert "schema_version None" in skipped[root / "unversioned.json"]
    assert "['rounds']" in skipped[root / "no_rounds.json"]

    with pytest.warns(UserWarning):
        only = results.load(root, method="lwf")  # the old signature still filters
    assert set(only["method"]) == {"lwf"}
    found, listed = results.scan(root)
    assert [p for p, _ in found] == sorted([good, other, root / "bad_round.json",
                                            root / "rounds_not_dicts.json"])
    assert len(listed) == 8  # rows are checked by load; scan checks the file's frame


def test_current_reads_only_a_result_of_the_configs_identity(tmp_path: Path) -> None:
    cfg = RunConfig.resolve("smoke", method="icarl", results_dir=str(tmp_path))
    assert results.current(cfg) is None  # nothing stored
    payload = {**_payload(), "identity": cfg.identity()}
    results.save(cfg, payload)
    assert results.current(cfg)["identity"] == cfg.identity()
    # an older schedule's run at the same path is not this config's result
    results.save(cfg, {**payload, "identity": "0123456789"})
    assert results.current(cfg) is None


def test_load_of_a_clean_store_is_silent_and_lists_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r/order0.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_payload()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = results.load(tmp_path / "r")
        empty = results.load(tmp_path / "nothing-here")
    assert len(frame) == 2 and frame.attrs["skipped"] == []
    assert empty.empty and empty.attrs["skipped"] == []


@pytest.mark.parametrize("text", ["[]", '"a string"', "{}", '{"schema_version": 1}',
                                  '{"schema_version": 1, "config": [], "rounds": [], '
                                  '"inference": "nme"}'])
def test_read_refuses_json_that_is_not_a_result(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="x.json"):
        results.read(path)


# ----------------------------------------------------------------------------- write errors


def _no_temp_files(folder: Path) -> bool:
    return not folder.exists() or not any(p.name.startswith(".") for p in folder.rglob("*"))


def test_save_into_a_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("I am a file, not a folder")
    cfg = RunConfig.resolve("smoke", results_dir=str(blocker))
    with pytest.raises(OSError, match=str(results.result_path(cfg))) as err:
        results.save(cfg, _payload())
    assert err.value.errno == errno.ENOTDIR
    with pytest.raises(OSError, match="checkpoint .*round01.pt") as err:
        checkpoint.save(checkpoint_path(cfg, 1), {"records": []})
    assert err.value.errno == errno.ENOTDIR


@pytest.mark.parametrize("where", ["mkstemp", "fsync", "replace"])
def test_full_disk_names_the_path_and_leaves_no_temp_file(tmp_path: Path, monkeypatch,
                                                          where: str) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = {"mkstemp": utils.tempfile, "fsync": os, "replace": os}[where]
    monkeypatch.setattr(target, where, full)
    path = tmp_path / "store" / "order0.json"
    with pytest.raises(OSError, match=f"could not write {path}: No space left") as err:
        utils.write_json_atomic(path, {"a": 1})
    assert err.value.errno == errno.ENOSPC
    ckpt = tmp_path / "store" / "order0.ckpt" / "round01.pt"
    with pytest.raises(OSError, match=f"could not write checkpoint {ckpt}: No space left"):
        checkpoint.save(ckpt, {"records": []})
    monkeypatch.undo()
    assert not path.exists() and not ckpt.exists() and _no_temp_files(tmp_path / "store")


def test_a_payload_that_is_not_json_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "store" / "x.json"
    with pytest.raises(TypeError):
        utils.write_json_atomic(path, {"a": object()})
    assert not path.exists() and _no_temp_files(tmp_path / "store")


def test_rewriting_the_same_json_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "store" / "x.json"
    utils.write_json_atomic(path, {"a": 1})
    os.utime(path, ns=(0, 0))
    utils.write_json_atomic(path, {"a": 1})  # same content: mtime (book cache key) unchanged
    assert path.stat().st_mtime_ns == 0
    utils.write_json_atomic(path, {"a": 2})
    assert path.stat().st_mtime_ns > 0 and json.loads(path.read_text()) == {"a": 2}


def test_write_error_keeps_errno_and_kind() -> None:
    err = utils.write_error(Path("/x/y.json"), PermissionError(errno.EACCES, "Permission denied"))
    assert isinstance(err, PermissionError) and "/x/y.json" in str(err)
    plain = utils.write_error(Path("/x/y.json"), OSError("odd"))
    assert plain.errno is None and str(plain) == "could not write /x/y.json: odd"


FAST = ["--epochs", "1", "--milestones", "1", "--threads", "1", "--no-progress"]


@pytest.mark.slow
def test_cli_reports_an_unwritable_results_dir(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file")
    assert main(["run", *FAST, "--results-dir", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(blocker) in err and "Not a directory" in err


@pytest.mark.slow
def test_cli_reports_a_full_disk(tmp_path: Path, capsys, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    assert main(["run", *FAST, "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 28] could not write checkpoint ")
    assert str(tmp_path / "r") in err and "No space left on device" in err
