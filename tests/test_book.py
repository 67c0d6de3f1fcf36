"""ddlib.book: the build's setting for exhibit pages, their tables and prose; the exhibit
notebooks' Colab parameter; the Sphinx extension; tests/check_book.py's page checks."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import check_book
import nbformat
import pandas as pd
import pytest
from test_analysis import COUNTS, two_rounds
from test_mechanism import init_run, init_runs

import ddlib
from ddlib import book, plots

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import ddbook_sphinx


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
        payload["config"].update({"epochs": 3, "expert_epochs": 2, "expert_balanced_epochs": 1,
                                  "memory": 80, "lambda_old": 1.0, "temperature_old": 2.0,
                                  "lambda_dd": 1.0, "temperature_new": 2.0, **over})
        payload.update(schema_version=1, ddlib_version="t", env={}, avg_inc_acc={},
                       last_acc={}, wall_time_s=60, train_time_s=60)
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(payload))
    return str(tmp_path)


def test_exhibit_is_ready_only_with_every_required_run(tmp_path, monkeypatch):
    store = _store(tmp_path, {"dd": False}, {"dd": True, "similar_k": 2})
    need = ({"dd": False}, {"dd": True, "similar_k": 1})
    ex = ddlib.book.exhibit("Table 2", "smoke", "synthetic", results_dir=store, require=need,
                            method="ucir")
    # the k=2 run is not one this page plots: it is neither shown nor counted
    assert len(ex.results) == 1 and not ex.ready and ex.missing == [need[1]]
    text = ex._repr_markdown_()
    assert "Table 2: not run in this build" in text and "similar_k=1" in text
    assert "make book PROFILE=smoke DATASETS=synthetic" in text
    assert ex.show(lambda: 1 / 0) is None  # nothing is drawn
    glued = {}
    monkeypatch.setattr(book, "glue", glued.update)
    ex.glue(["a"], dict)
    assert glued == {"a": pytest.approx(float("nan"), nan_ok=True)}

    ready = ddlib.book.exhibit("Table 2", "smoke", "synthetic", results_dir=store,
                               require=({"dd": False}, {"dd": True}), method="ucir")
    assert ready.ready and ready.show(len, ready.runs(dd=True)) == 1
    assert ready._repr_markdown_().startswith("**Table 2** is built from 2 runs")
    assert "2 min of training (measured)" in ready._repr_markdown_()
    assert "class order 0;" in ready._repr_markdown_()  # one order: singular, no list
    assert ready._repr_markdown_().endswith(
        "memory 80 images; λ1 = 1, To = 2, λ2 = 1, Tn = 2.")
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


def test_runs_with_a_changed_schedule_stay_out_of_the_pages(tmp_path):
    # a convergence study's longer run beside the profile's own, in the same store
    store = _store(tmp_path, {"dd": False}, {"dd": False, "epochs": 6})
    shown = ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=store).results
    assert [r["config"].get("epochs", 3) for r in shown] == [3]
    asked = ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=store, epochs=6)
    assert [r["config"]["epochs"] for r in asked.results] == [6]


@pytest.mark.slow
def test_results_of_older_images_stay_out_of_the_pages(smoke, tmp_path, monkeypatch):
    from ddlib import config

    cfg = dataclasses.replace(smoke(), results_dir=str(tmp_path))
    ddlib.run(cfg, verbose=False)
    assert len(ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=str(tmp_path),
                                  method="icarl").results) == 1
    monkeypatch.setattr(config, "SYNTHETIC_VERSION", config.SYNTHETIC_VERSION + 1)
    assert not ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=str(tmp_path),
                                  method="icarl").results


def test_scratch_expert_runs_show_only_where_a_page_asks(tmp_path, monkeypatch):
    at = {"method": "icarl", "increment": 5}
    # the first two have no expert_init, as results written before the option: "old"
    store = _store(tmp_path, {"dd": False, **at}, {"dd": True, **at},
                   {"dd": True, "expert_init": "scratch", **at})
    figure3 = ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=store)
    assert len(figure3.results) == 2  # no scratch-started expert in another page's means
    need = ddlib.grid.expert_init_runs("smoke")
    page = ddlib.book.exhibit("How the expert starts", "smoke", "synthetic",
                              results_dir=store, require=need)
    assert page.ready and len(page.results) == 3
    planned = []
    monkeypatch.setattr(book, "run_all", planned.extend)
    ddlib.book.exhibit("How the expert starts", "smoke", "synthetic",
                       results_dir=str(tmp_path / "empty"), require=need, make_missing=True)
    assert {(c.method, c.dd, c.expert_init, c.increment) for c in planned} == {
        ("icarl", False, "old", 5), ("icarl", True, "old", 5), ("icarl", True, "scratch", 5)}


def test_expert_init_table_and_conclusion_follow_the_numbers():
    table = book.expert_init_table(init_runs())._repr_markdown_()
    assert "| iCaRL | +DD (old) | 65.0 | 50.0 |" in table and "±" not in table
    text = book.expert_init_conclusion(init_runs()).data
    assert "the old-model start is ahead by 2.0 points" in text
    assert "single class order" in text and "70.0 %" in text
    ahead = book.expert_init_conclusion(init_runs()[:2] + [init_run("scratch", (80.0, 56.0))])
    assert "the scratch start is ahead by 3.0 points" in ahead.data
    level = book.expert_init_conclusion(init_runs()[:2] + [init_run("scratch", (80.0, 50.0))])
    assert "the two starts are level" in level.data
    two = init_runs() + init_runs(order=1, shift=2.0)
    assert " ± 1.4 |" in book.expert_init_table(two)._repr_markdown_()
    spread = book.expert_init_conclusion(two).data
    assert "Mean of 2 class orders" in spread and "larger than their standard" in spread
    assert "single class order" not in spread
    fig = plots.expert_init(two + [init_run(arm, (70.0, 30.0), method="ucir")
                                   for arm in ("baseline", "old", "scratch")])
    assert [ax.get_title() for ax in fig.axes] == ["iCaRL", "UCIR"]
    assert fig.get_size_inches()[0] <= plots.PAGE_WIDTH
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["baseline: 61.0", "+DD (old): 66.0", "+DD (scratch): 64.0"]


def test_imagenet_exhibit_names_the_sweep_with_a_data_folder(tmp_path):
    ex = ddlib.book.exhibit("Figure 4", "paper", "imagenet100", results_dir=str(tmp_path))
    assert "python -m ddlib sweep --profile paper --datasets imagenet100 --data-dir" in ex.command()
    smoke = ddlib.book.exhibit("Figure 4", "smoke", "imagenet100", results_dir=str(tmp_path))
    assert smoke.command() == ex.command()  # ImageNet runs need the paper profile


def test_table1_computes_the_statistics_and_reports_missing_datasets(tmp_path):
    table = ddlib.book.table1("smoke", ["synthetic", "cifar100"], data_dir=str(tmp_path))
    rows = table.frame.set_index("Dataset")
    row = rows.loc["synthetic"]
    assert (row["Classes"], row["Superclasses"], row["Train images"], row["Test images"]) == (
        20, 4, 20 * 24, 20 * 10)
    assert row["Image size"] == "16x16" and row["Train per class"] == 24
    assert rows.loc["CIFAR-100", "Note"] == "not on this machine"
    assert rows.loc["synthetic", "Note"] == "smoke profile"
    text = table._repr_markdown_()
    assert "`" not in text and text.startswith("| Dataset | Classes |")


def test_make_plans_every_run_the_page_plots_for_the_profiles_grid(tmp_path, monkeypatch):
    planned = []
    monkeypatch.setattr(book, "run_all", planned.extend)
    ex = ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=str(tmp_path),
                            require=({"dd": False}, {"dd": True, "similar_k": 1}),
                            make_missing=True)
    grid = ddlib.grid.grid("smoke")
    runs = {(c.method, c.dd, c.similar_k, c.increment, c.order) for c in planned}
    assert runs == {(m, dd, 1, inc, o) for m in ddlib.config.METHOD_ORDER
                    for dd in (False, True) for inc in grid["increments"]
                    for o in grid["orders"]}
    assert all(c.results_dir == str(tmp_path) for c in planned) and not ex.ready
    planned.clear()
    ddlib.book.exhibit("Figure 1", "smoke", "synthetic", results_dir=str(tmp_path),
                       method="icarl", increment=5, order=0, class_order_seed=18,
                       require=({"dd": False}, {"dd": True, "similar_k": 1}), make_missing=True)
    assert {(c.method, c.dd, c.class_order_seed) for c in planned} == {
        ("icarl", False, 18), ("icarl", True, 18)}
    planned.clear()
    ddlib.book.exhibit("Figure 3", "smoke", "synthetic", results_dir=str(tmp_path))
    assert planned == []  # off by default, as in the book build


def test_tables_read_as_tables(tmp_path):
    store = _store(tmp_path, {"dd": False, "method": "icarl"},
                   {"dd": True, "similar_k": 1, "method": "icarl"},
                   {"dd": True, "similar_k": 2, "method": "icarl"})
    frame = ddlib.results.load(store)
    gains = book.gains_table(frame)._repr_markdown_()
    head, align, first = gains.splitlines()[:3]
    assert head.startswith("| Classes / round | Method |") and "avg B" not in head
    assert align.startswith("|---:|:---|---:")  # numbers right-aligned, names left
    assert "| iCaRL |" in first and "mean of" not in head  # one order: no mean over orders
    ablation = book.ablation_table(frame)._repr_markdown_()
    assert "±" not in ablation and "final_std" not in ablation
    assert "| iCaRL | baseline (no expert) |" in ablation and "| iCaRL | k = 2 |" in ablation
    two = pd.concat([frame, frame.assign(order=1, path=frame["path"] + "b",
                                         acc=frame["acc"] + 2)])
    assert " ± 1.4 |" in book.ablation_table(two)._repr_markdown_()
    assert "(mean of 2 orders)" in book.gains_table(two)._repr_markdown_()
    assert repr(book.Table(frame[["method"]].head(1))).split() == ["method", "icarl"]


def test_scope_follows_the_builds_grid():
    smoke = book.scope("smoke", "orders", "increments").data
    assert smoke.startswith("This `smoke` build runs class order 0; 5 and 10 classes per round")
    assert "class orders 0, 1 and 2; 5, 10 and 20 classes per round" in smoke
    assert "iCaRL and UCIR" in book.scope("smoke", "ablation").data
    assert "whole grid" in book.scope("paper", "orders", "ablation").data
    assert "both expert starts for iCaRL." in book.scope("smoke", "expert_init").data
    with pytest.raises(ValueError, match="scope parts"):
        book.scope("smoke", "epochs")
    assert [book.duration(s) for s in (42, 600, 5400)] == ["42 s", "10 min", "1.5 h"]


def test_plot_titles_say_one_order_plainly(tmp_path):
    frame = ddlib.results.load(_store(tmp_path, {"dd": False}, {"dd": True, "similar_k": 1}))
    title = plots.accuracy_curves(frame)._suptitle.get_text()
    assert "class order 0" in title and "±" not in title and "[" not in title
    two = pd.concat([frame, frame.assign(order=1, path=frame["path"] + "b")])
    assert "mean ± std over class orders 0, 1" in plots.accuracy_curves(two)._suptitle.get_text()
    assert plots.accuracy_curves(two).get_size_inches()[0] <= plots.PAGE_WIDTH


EXHIBITS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("path", EXHIBITS, ids=lambda p: p.name)
def test_exhibit_notebooks_work_alone(path):
    """Colab: the install is importable at once, and a page with runs can make them; every
    figure has a caption, and no page cites a document readers do not have."""
    nb = nbformat.read(path, as_version=4)
    assert "importlib.invalidate_caches()" in nb.cells[0].source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    if "ddlib.book.exhibit(" in code:
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert "make_missing: bool = False" in params.source
        assert "make_missing=make_missing" in code
    for cell in nb.cells:
        if "plots." in cell.source and cell.cell_type == "code":
            assert cell.metadata["mystnb"]["figure"]["caption"], cell.source
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "PROTOCOL" not in prose


def test_sphinx_extension_marks_smoke_builds(monkeypatch):
    assert (ddbook_sphinx.PROFILE_VAR, ddbook_sphinx.DATASETS_VAR) == (book.PROFILE_VAR,
                                                                        book.DATASETS_VAR)

    def configured(**env):
        for name in (book.PROFILE_VAR, book.DATASETS_VAR):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = SimpleNamespace(myst_substitutions={"x": 1}, html_theme_options={"a": 1})
        ddbook_sphinx._config_inited(None, config)
        context = {"metatags": ""}
        ddbook_sphinx._page_context(None, "p", "page.html", context, None)
        return config, context["metatags"]

    config, meta = configured()  # no variables: the pages show smoke, so does the banner
    assert "smoke" in config.html_theme_options["announcement"].lower()
    assert config.myst_substitutions["build_profile"] == "smoke" and 'content="smoke"' in meta
    config, meta = configured(DDBOOK_PROFILE="cpu", DDBOOK_DATASETS="cifar100, synthetic")
    assert "announcement" not in config.html_theme_options
    assert config.myst_substitutions["build_datasets"] == "cifar100, synthetic"
    assert config.myst_substitutions["x"] == 1 and 'content="cpu"' in meta


def _page(**over):
    """A page check as check_book's PAGE_CHECK returns it, for a clean smoke page."""
    check = {"images": [], "traceback": False, "error_text": [], "failed": [],
             "raw_math": False, "chars": 500,
             "figures": [{"src": "a.png", "caption": "Accuracy after every round"}],
             "text": "Figure 3 is built from 16 runs in results/", "attrs": ["../x.html"],
             "links": [], "banner": "Smoke build: they mean nothing.", "profile": "smoke"}
    return {**check, **over}


def test_check_book_flags_what_a_reader_should_not_see(tmp_path):
    def problems(profile="smoke", **over):
        return check_book.page_problems(_page(**over), profile=profile, html=tmp_path,
                                        roots=("/srv/b",))

    assert problems() == []
    assert "without the smoke banner" in problems(banner=None)[0]
    assert problems(banner=None, profile="cpu") != []  # unlike the root page, no banner
    assert check_book.page_problems(_page(banner=None, profile="cpu"), profile="cpu",
                                    html=tmp_path) == []
    assert "without a caption" in problems(figures=[{"src": "a.png", "caption": None}])[0]
    assert "Sphinx figure number" in problems(
        figures=[{"src": "a.png", "caption": "Fig. 3 iCaRL and iCaRL+DD"}])[0]
    found = problems(text="result exists -> /work/main/results/x.json and /srv/b/y")
    assert "/work/main/results/x.json" in found[0] and "/srv/b" in found[0]
    assert "path" in problems(attrs=["file:///home/me/book/a.png"])[0]
    assert problems(text="see https://example.org/home/page and results/tmp/x") == []
    assert "profile" in problems(profile=None)[0]


def test_check_book_finds_broken_internal_links(tmp_path):
    (tmp_path / "book").mkdir()
    page = tmp_path / "book" / "a.html"
    page.write_text('<h2 id="class-orders">x</h2>')
    good = [page.as_uri(), page.as_uri() + "#class-orders", "https://example.org/x#nowhere"]
    assert check_book.broken_links(good, tmp_path) == []
    bad = [page.as_uri() + "#missing", (tmp_path / "book" / "b.html").as_uri()]
    assert check_book.broken_links(bad, tmp_path) == sorted(bad)


def test_orders_study_renders_each_part_per_increment(monkeypatch):
    from test_mechanism import _orders_study

    default_only = {k: v for k, v in _orders_study().items() if v["expert_init"] != "scratch"}
    baselines = {k: v for k, v in _orders_study().items() if not v["dd"]}
    monkeypatch.setattr(ddlib.convergence, "study", lambda name: {
        "20": _orders_study(), "10": default_only, "5": baselines, "20@48": default_only})
    accuracy = ddlib.book.orders_study("accuracy").data
    assert "**20 classes per round**" in accuracy and "**10 classes per round**" in accuracy
    assert "**20 classes per round, 48 classifier epochs**" in accuracy
    assert "| iCaRL | +DD | 0,1 | 81.00 | 64.00 |" in accuracy
    pairs = ddlib.book.orders_study("pairs").data
    assert pairs.count("DD raises the average incremental accuracy in 2 of 3") == 3
    assert "**5 classes per round**" in accuracy and "**5 classes per round**" not in pairs
    starts = ddlib.book.orders_study("starts").data  # 10 per round ran one start: left out
    assert "**10 classes per round**" not in starts and "stays `old`" in starts
    with pytest.raises(ValueError, match="part"):
        ddlib.book.orders_study("curves")
    monkeypatch.setattr(ddlib.convergence, "study", lambda name: None)
    assert "No numbers of the study here" in ddlib.book.orders_study("pairs").data
