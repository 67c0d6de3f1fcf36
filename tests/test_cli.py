"""The command line and what the library prints: `python -m ddlib book-cache` (a step of
`make book`), paths relative to the project, a run's per-round table."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

import ddlib
from ddlib import PROFILES, RunConfig, book_cache, report, results, sweep, utils
from ddlib.__main__ import CHOICES, build_parser, field_docs, main
from ddlib.methods import METHODS


def test_cache_is_dropped_only_when_results_or_profile_change(tmp_path):
    build, store = tmp_path / "_build", tmp_path / "results"
    cache, doctrees = build / ".jupyter_cache", build / ".doctrees"
    key = dict(profile="smoke", datasets="synthetic", results_dir=store)
    assert book_cache.refresh_cache(build, **key)            # first build
    cache.mkdir()
    doctrees.mkdir()
    assert not book_cache.refresh_cache(build, **key) and cache.is_dir() and doctrees.is_dir()
    (store / "smoke").mkdir(parents=True)
    (store / "smoke" / "run.json").write_text("{}")   # the sweep wrote a result
    # Sphinx's doctrees go too, else it would not re-read (re-execute) unchanged pages
    assert book_cache.refresh_cache(build, **key) and not cache.exists()
    assert not doctrees.exists()
    cache.mkdir()
    assert book_cache.refresh_cache(build, **{**key, "profile": "cpu"}) and not cache.exists()


def test_book_cache_subcommand(tmp_path, capsys):
    argv = ["book-cache", "--profile", "smoke", "--results-dir", str(tmp_path / "results"),
            "--build-dir", str(tmp_path / "_build")]
    assert main(argv) == 0 and "cleared" in capsys.readouterr().out
    (tmp_path / "_build" / ".jupyter_cache").mkdir()
    assert main(argv) == 0 and "kept" in capsys.readouterr().out
    assert (tmp_path / "_build" / ".jupyter_cache").is_dir()


def test_display_path_is_relative_inside_the_project_only(tmp_path, monkeypatch):
    root = utils.project_root()
    assert root is not None  # the tests run inside the project
    assert utils.display_path(root / "results" / "a.json") == "results/a.json"
    assert utils.display_path(tmp_path / "a.json") == str(tmp_path / "a.json")
    monkeypatch.chdir(tmp_path)  # no project above: paths print as given
    assert utils.display_path(root / "results" / "a.json") == str(root / "results" / "a.json")


@pytest.mark.slow
def test_a_run_prints_relative_paths_and_its_table_when_read_back(smoke, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr(utils, "project_root", lambda start=None: tmp_path)
    cfg = smoke(epochs=1, milestones=())
    trained = ddlib.run(cfg)
    first = capsys.readouterr().out
    ddlib.run(cfg)
    again = capsys.readouterr().out
    where = str(results.result_path(cfg).relative_to(tmp_path))
    assert where.startswith("results/smoke/synthetic/icarl/inc5/order0")
    assert f"-> {where}" in first and str(tmp_path) not in first + again
    assert again.startswith(f"icarl: result exists, nothing to do -> {where}\n")
    table = report.round_table(trained["rounds"])
    assert table in first and table in again  # the same per-round table, trained or read back
    assert len(table.splitlines()) == 1 + 4 and table.splitlines()[0] == report.ROUND_HEADER


def test_field_docs_read_sections_comments_and_continuations():
    source = (
        "class RunConfig:\n"
        '    """Doc."""\n\n'
        "    # what to run\n"
        "    method: str = 'icarl'   # lwf | icarl\n"
        "    data_dir: str = 'data'  # a folder, or\n"
        "                            # the .npz file\n"
        "    # schedule (PROTOCOL 1.7)\n"
        "    epochs: int | None = None\n"
        "    lr: float = 0.1         # learning rate\n")
    assert field_docs(source) == {
        "method": ("what to run", "lwf | icarl"),
        "data_dir": ("what to run", "a folder, or the .npz file"),
        "epochs": ("schedule (PROTOCOL 1.7)", ""),
        "lr": ("schedule (PROTOCOL 1.7)", "learning rate")}


@pytest.mark.slow
def test_run_help_documents_every_field_with_its_default_and_choices(capsys):
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    run_parser = subparsers.choices["run"]
    docs = field_docs()
    for f in fields(RunConfig):
        section, comment = docs[f.name]
        flag = "--" + f.name.replace("_", "-")
        group = next(g for g in run_parser._action_groups
                     for a in g._group_actions if flag in a.option_strings)
        action = next(a for a in group._group_actions if flag in a.option_strings)
        assert section and group.title == section, f.name
        assert action.help.startswith(comment.replace("%", "%%")), f.name
        assert "default: " in action.help, f.name  # the field's, or each profile's
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name, values in CHOICES.items():
        assert f"--{name} {{{','.join(values)}}}" in text, name
    assert set(CHOICES["method"]) == set(METHODS)  # every registered method, no other
    epochs = ", ".join(f"{name} {values['epochs']}" for name, values in PROFILES.items())
    assert f"phases with it (profile default: {epochs})" in text
    assert f"(default: {RunConfig.threads})" in text


def test_one_thread_default_for_runs_sweeps_and_notebooks():
    assert sweep.CPU_THREADS == RunConfig.threads == RunConfig.resolve("smoke").threads
