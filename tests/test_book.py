"""ddlib.book: the build's setting for exhibit pages, and their exhibits."""

from __future__ import annotations

import json

import pytest

import ddlib
from ddlib import book
from test_analysis import COUNTS, two_rounds


def test_setting_prefers_explicit_then_the_build_then_smoke(monkeypatch):
    monkeypatch.delenv(book.PROFILE_VAR, raising=False)
    monkeypatch.delenv(book.DATASETS_VAR, raising=False)
    assert book.setting() == {"profile": "smoke", "dataset": "synthetic"}
    monkeypatch.setenv(book.PROFILE_VAR, "paper")
    monkeypatch.setenv(book.DATASETS_VAR, "cifar100, synthetic")
    assert book.setting() == {"profile": "paper", "dataset": "cifar100"}
    assert book.setting("cpu", "synthetic") == {"profile": "cpu", "dataset": "synthetic"}
    with pytest.raises(ValueError, match="dataset='cifar10' is unknown"):
        book.setting("cpu", "cifar10")
    monkeypatch.setenv(book.PROFILE_VAR, "gpu")
    with pytest.raises(ValueError, match="profile='gpu' is unknown"):
        book.setting()


def _store(tmp_path, *configs):
    """A results store holding smoke-like results for the given config overrides."""
    for i, over in enumerate(configs):
        payload = two_rounds(COUNTS, dd=over.get("dd", False))
        payload["config"].update(epochs=3, expert_epochs=2, expert_balanced_epochs=1, **over)
        payload.update(schema_version=1, ddlib_version="t", env={}, avg_inc_acc={},
                       last_acc={}, wall_time_s=0, train_time_s=0)
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(payload))
    return str(tmp_path)


def test_exhibit_is_ready_only_with_every_required_run(tmp_path, monkeypatch):
    store = _store(tmp_path, {"dd": False}, {"dd": True, "similar_k": 2})
    need = ({"dd": False}, {"dd": True, "similar_k": 1})
    ex = ddlib.book.exhibit("Table 2", "smoke", "synthetic", results_dir=store, require=need,
                            method="ucir")
    assert len(ex.results) == 2 and not ex.ready and ex.missing == [need[1]]
    text = ex._repr_markdown_()
    assert "Table 2: not run in this build" in text and "similar_k=1" in text
    assert "make book PROFILE=smoke DATASETS=synthetic" in text
    assert ex.show(lambda: 1 / 0) is None  # nothing is drawn
    glued = {}
    monkeypatch.setattr(book, "glue", glued.update)
    ex.glue(["a"], dict)
    assert glued == {"a": pytest.approx(float("nan"), nan_ok=True)}

    ready = ddlib.book.exhibit("Table 2", "smoke", "synthetic", results_dir=store,
                               require=({"dd": False},), method="ucir")
    assert ready.ready and ready.show(len, ready.runs(dd=True)) == 1
    assert ready._repr_markdown_().startswith("**Table 2** is built from 2 runs")
    with pytest.raises(ValueError, match="the page uses"):
        ready.glue(["a"], lambda: {"b": 1.0})
    assert not ddlib.book.exhibit("x", "cpu", "synthetic", results_dir=store).ready


def test_dedicated_order_runs_show_only_where_a_page_asks(tmp_path):
    store = _store(tmp_path, {"dd": False}, {"dd": False, "class_order_seed": 18})
    assert len(ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=store)
               .results) == 1  # the usual orders only: no mixing into the means
    fig1 = ddlib.book.exhibit("Figure 1", "smoke", "synthetic", results_dir=store,
                              class_order_seed=18)
    assert [r["config"]["class_order_seed"] for r in fig1.results] == [18]
    assert "the dedicated class order of numpy seed 18" in fig1._repr_markdown_()


def test_imagenet_exhibit_names_the_sweep_with_a_data_folder(tmp_path):
    ex = ddlib.book.exhibit("Figure 4", "paper", "imagenet100", results_dir=str(tmp_path))
    assert "python -m ddlib sweep --profile paper --datasets imagenet100 --data-dir" in ex.command()
    smoke = ddlib.book.exhibit("Figure 4", "smoke", "imagenet100", results_dir=str(tmp_path))
    assert smoke.command() == ex.command()  # ImageNet runs need the paper profile


def test_table1_computes_the_statistics_and_reports_missing_datasets(tmp_path):
    table = ddlib.book.table1("smoke", ["synthetic", "cifar100"], data_dir=str(tmp_path))
    row = table.loc["synthetic"]
    assert (row["classes"], row["superclasses"], row["train images"], row["test images"]) == (
        20, 4, 20 * 24, 20 * 10)
    assert row["image size"] == "16x16" and row["train per class"] == 24
    assert table.loc["cifar100", "note"] == "not on this machine: CIFAR-100 not found"
