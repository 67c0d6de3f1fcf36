"""The notebooks' comparison rule (`notebook_check`): trained numbers within their measured
tolerance, everything else exact; and a page re-executed on smoke results with one real
change fails, naming the notebook, the cell and the quantity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import notebook_check as check

ROOT = Path(__file__).resolve().parents[1]


def markdown(text: str) -> dict:
    return {"output_type": "execute_result", "data": {"text/markdown": text,
                                                      "text/plain": "<Markdown>"},
            "metadata": {}}


def glued(name: str, value: str) -> dict:
    return {"output_type": "display_data", "data": {"application/papermill.record/text/plain":
                                                    value},
            "metadata": {"scrapbook": {"name": name}}}


def stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


TABLE = "| Method | Avg. inc. acc. | Rounds led |\n|:---|---:|---:|\n| iCaRL | {} | {} of 3 |"


def differences(committed: dict, now: dict) -> list[check.Difference]:
    return check.compare_outputs([committed], [now], "page.ipynb Cell 4")


def test_a_trained_number_may_move_within_its_tolerance_and_no_further():
    assert differences(markdown(TABLE.format("33.2", 1)), markdown(TABLE.format("41.0", 2))) == []
    [found] = differences(markdown(TABLE.format("33.2", 1)), markdown(TABLE.format("80.0", 1)))
    assert found.what == "'Avg. inc. acc.' of 'iCaRL'"
    assert str(found) == ("page.ipynb Cell 4 (text/markdown): 'Avg. inc. acc.' of 'iCaRL': "
                          "committed '33.2', now '80.0' (allowed ±24 as accuracy (%))")
    [found] = differences(markdown(TABLE.format("33.2", 1)), markdown(TABLE.format("33.2", 4)))
    assert found.what == "'Rounds led' of 'iCaRL'" and "count of rounds" in found.allowed


def test_settings_counts_and_text_are_exact():
    page = "built from {} runs; memory {} images; λ1 = 1, λ2 = {}, Tn = 2."
    [runs] = differences(markdown(page.format(16, 80, 1)), markdown(page.format(15, 80, 1)))
    [memory] = differences(markdown(page.format(16, 80, 1)), markdown(page.format(16, 40, 1)))
    [weight] = differences(markdown(page.format(16, 80, 1)), markdown(page.format(16, 80, 0)))
    assert (runs.allowed, memory.allowed, weight.allowed) == ("exact",) * 3
    assert "_ runs" in runs.what and "memory _ images" in memory.what and "λ2 = _" in weight.what
    [text] = differences(stream("iCaRL done\n"), stream("LwF done\n"))
    assert text.what == "text" and text.committed.startswith("iCaRL")


def test_a_number_in_a_sentence_is_trained_only_by_its_unit():
    line = "accuracy {} % on {} classes, ahead by {} points\n"
    assert differences(stream(line.format("23.9", 10, "3.4")),
                       stream(line.format("30.1", 10, "-5.0"))) == []
    [classes] = differences(stream(line.format("23.9", 10, "3.4")),
                            stream(line.format("23.9", 20, "3.4")))
    assert classes.allowed == "exact" and "_ classes" in classes.what


def test_glued_values_are_named_by_their_key():
    assert differences(glued("dd_gain", "-9.3"), glued("dd_gain", "-12.8")) == []
    [found] = differences(glued("num_runs", "16"), glued("num_runs", "15"))
    assert found.what == "'num_runs'" and found.allowed == "exact"


def test_a_changed_table_cell_is_named_by_column_and_row():
    arrivals = "| Class | Arrives in round |\n|:---|---:|\n| {} | 1 |\n| s02_c1 | 2 |"
    [found] = differences(markdown(arrivals.format("s02_c4")), markdown(arrivals.format("s01_c0")))
    assert (found.what, found.committed, found.now) == ("'Class' of 's02_c4'", "s02_c4", "s01_c0")


def test_html_and_fixed_width_tables_name_their_columns():
    html = ("<table><thead><tr><th></th><th>last acc.</th></tr></thead><tbody><tr><th>UCIR</th>"
            "<td>{}</td></tr></tbody></table>")
    frame = {"output_type": "execute_result", "metadata": {},
             "data": {"text/html": html.format("21.0"), "text/plain": "UCIR 21.0"}}
    moved = json.loads(json.dumps(frame))
    moved["data"]["text/html"] = html.format("99.0")
    moved["data"]["text/plain"] = "UCIR 99.0"
    [found] = differences(frame, moved)  # the html table is checked, its text copy is not
    assert found.what == "'last acc.' of 'UCIR'"
    losses = "round classifier expert A\n    1      {}     0.032"
    plain = {"output_type": "execute_result", "metadata": {}, "data": {"text/plain": ""}}
    a, b = (json.loads(json.dumps(plain)) for _ in range(2))
    a["data"]["text/plain"], b["data"]["text/plain"] = losses.format("0.140"), losses.format("0.5")
    [found] = differences(a, b)
    assert found.what == "'classifier'" and "training loss" in found.allowed


def test_a_figure_that_loses_a_curve_fails():
    figure = "<Figure, 1 panel(s): [accuracy] iCaRL (4 values){}>"
    plain = {"output_type": "execute_result", "metadata": {},
             "data": {"image/png": "PNG", "text/plain": figure.format(", iCaRL+DD (4 values)")}}
    fewer = json.loads(json.dumps(plain))
    fewer["data"]["text/plain"] = figure.format("")
    [found] = check.compare_outputs([plain], [fewer], "f.ipynb Cell 1", skip=("image/png",))
    assert found.what == "figure content" and "iCaRL+DD" in found.committed


def test_missing_outputs_and_errors_are_named():
    [found] = differences(stream("done\n"), {"output_type": "error", "ename": "ValueError",
                                             "evalue": "memory=-1", "traceback": []})
    assert found.what == "outputs" and found.now == "error"


def _notebook(path: Path, source: str, committed_text: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3",
                              "language": "python"}
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=committed_text)]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def test_the_cli_says_per_notebook_what_moved(tmp_path, capsys):
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    _notebook(tmp_path / "before" / "a.ipynb", "print(1)", "accuracy 33.2 % of 16 runs\n")
    _notebook(tmp_path / "after" / "a.ipynb", "print(1)", "accuracy 30.0 % of 15 runs\n")
    assert check.main([str(tmp_path / "before"), str(tmp_path / "after"), "--all"]) == 0
    out = capsys.readouterr().out
    assert "1 output(s) changed beyond the rule; 1 trained number(s) moved within tolerance" \
        in out and "committed '16', now '15'" in out and "committed '33.2', now '30.0'" in out


@pytest.mark.slow
def test_nbval_compares_by_the_rule(tmp_path):
    """Under `-p notebook_check`, nbval passes a trained number within tolerance and fails
    one beyond it, naming the notebook, the cell and the quantity."""
    code = 'print("accuracy 33.2 % on 10 classes")'
    _notebook(tmp_path / "near.ipynb", code, "accuracy 40.0 % on 10 classes\n")
    _notebook(tmp_path / "far.ipynb", code, "accuracy 90.0 % on 10 classes\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env",
                          "-p", "notebook_check", "-p", "no:cacheprovider", "near.ipynb",
                          "far.ipynb", "-q", "--rootdir", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    assert ("far.ipynb Cell 0 (stream:stdout): 'accuracy _ % on': committed '90.0', now "
            "'33.2' (allowed ±24 as accuracy (%))") in run.stdout, run.stdout


# ---- a page on smoke results with one real change -----------------------------------

PAGE = ROOT / "book" / "figure1.ipynb"


def _train(project: Path, monkeypatch=None, **overrides) -> None:
    import ddlib

    runs = ddlib.plan("smoke", method="icarl", dataset="synthetic", increments=5,
                      results_dir=str(project / "results"), **overrides)
    monkeypatch.chdir(project)  # results paths are taken from the project root
    ddlib.run_all(runs, verbose=False)


def _project(path: Path) -> Path:
    """A folder that ddlib takes for a project root: its `results/` is the store (its
    `ddlib` is this one: a kernel started there imports it)."""
    path.mkdir(parents=True)
    (path / "_config.yml").write_text("")
    (path / "ddlib").symlink_to(ROOT / "ddlib")
    return path


def _check_page(project: Path, setup: str | None = None) -> list[check.Difference]:
    """Figure 1's page executed on `project`'s store (after `setup`, a hidden first cell),
    compared with its committed outputs."""
    import papermill

    nb = nbformat.read(PAGE, as_version=4)
    if setup is not None:
        nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
    source, executed = project / "page.ipynb", project / "executed.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(executed), cwd=str(project), progress_bar=False,
                               kernel_name="python3")
    if setup is not None:
        done = nbformat.read(executed, as_version=4)
        done.cells.pop(0)
        nbformat.write(done, executed)
    return check.compare_notebooks(PAGE, executed, sanitize=check.sanitizer(),
                                   name="book/figure1.ipynb")


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    project = _project(tmp_path_factory.mktemp("figure1") / "unchanged")
    _train(project, monkeypatch, dd=[False, True])
    monkeypatch.undo()
    return project


@pytest.fixture
def page_env(monkeypatch):
    monkeypatch.setenv("DDBOOK_PROFILE", "smoke")
    monkeypatch.setenv("DDBOOK_DATASETS", "synthetic")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return monkeypatch


def _copy(store: Path, to: Path, *, without: str | None = None) -> Path:
    shutil.copytree(store, to, symlinks=True)
    if without is not None:
        shutil.rmtree(to / "results" / "smoke" / "synthetic" / without)
    return to


def _named(found: list[check.Difference], quantity: str) -> check.Difference:
    hits = [d for d in found if quantity in d.what]
    assert hits, "no difference names " + quantity + ":\n" + "\n".join(map(str, found))
    return hits[0]


@pytest.mark.slow
def test_the_page_on_unchanged_results_passes(smoke_store, page_env):
    assert _check_page(smoke_store) == []


def _profile_change(monkeypatch, **values) -> str:
    """Change the smoke profile's `values` here, and return the code that changes them in
    the page's kernel: a regression in the code, seen by training and page alike."""
    from ddlib import config

    monkeypatch.setitem(config.PROFILES, "smoke", {**config.PROFILES["smoke"], **values})
    return ("from ddlib import config\n"
            f'config.PROFILES["smoke"] = {{**config.PROFILES["smoke"], **{values!r}}}')


@pytest.mark.slow
def test_dd_weight_zero_fails_naming_lambda2(smoke_store, page_env, tmp_path):
    project = _copy(smoke_store, tmp_path / "p", without="icarl+dd")
    change = _profile_change(page_env, lambda_dd=0.0)
    _train(project, page_env, dd=True)
    found = _named(_check_page(project, setup=change), "λ2 = _")
    assert str(found).startswith("book/figure1.ipynb Cell 2 (text/markdown)")
    assert (found.committed, found.now) == ("1", "0")


@pytest.mark.slow
def test_halved_memory_fails_naming_the_memory(page_env, tmp_path):
    project = _project(tmp_path / "p")
    change = _profile_change(page_env, memory=40)
    _train(project, page_env, dd=[False, True])
    found = _named(_check_page(project, setup=change), "memory _ images")
    assert str(found).startswith("book/figure1.ipynb Cell 2") and found.now == "40"


@pytest.mark.slow
def test_a_changed_class_order_fails_naming_the_arrivals(page_env, tmp_path):
    from ddlib import scenario

    order = scenario.class_order
    page_env.setattr(scenario, "class_order", lambda *a, **k: order(*a, **k)[::-1].copy())
    project = _project(tmp_path / "p")
    _train(project, page_env, dd=[False, True])
    found = _named(_check_page(project), "'Class' of")
    assert str(found).startswith("book/figure1.ipynb Cell 5 (text/markdown)")


@pytest.mark.slow
def test_a_dropped_curve_fails_naming_the_figure(smoke_store, page_env):
    drop_dd_curve = (
        "from ddlib import plots\n"
        "draw = plots.class_accuracy\n"
        "def without_dd(*args, **kwargs):\n"
        "    fig = draw(*args, **kwargs)\n"
        "    next(l for l in fig.axes[0].lines if '+DD' in l.get_label()).remove()\n"
        "    return fig\n"
        "plots.class_accuracy = without_dd")
    found = _named(_check_page(smoke_store, setup=drop_dd_curve), "figure content")
    assert str(found).startswith("book/figure1.ipynb Cell 3 (text/plain)")
    assert "iCaRL+DD (NME)" in found.committed and "iCaRL+DD" not in found.now
