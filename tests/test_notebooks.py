"""Committed notebooks follow the skeleton (STYLE.md), and a bad papermill parameter fails
the first working cell with ddlib's message in the executed notebook."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from ddlib import RunConfig
from ddlib.analysis import display_name
from ddlib.config import METHOD_ORDER

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("book/*.ipynb")])
LOOPS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.Lambda,
         ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)


# Pages whose subject is code a reader writes: their cells may hold loops and functions.
OWN_LOOP_PAGES = {"dd_in_your_loop.ipynb"}


def _tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_skeleton(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    colab = nb.cells[0]
    assert colab.cell_type == "code" and "remove-cell" in _tags(colab)
    assert 'find_spec("ddlib") is None' in colab.source and "pip" in colab.source
    assert nb.cells[1].cell_type == "markdown" and nb.cells[1].source.startswith("# ")
    params = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(params) == 1, "exactly one cell tagged `parameters`"
    for statement in ast.parse(params[0].source).body:  # literals only (papermill re-injects)
        assert isinstance(statement, (ast.Assign, ast.AnnAssign))
        ast.literal_eval(statement.value)
    assert not [c for c in nb.cells if "injected-parameters" in _tags(c)]
    assert "papermill" not in nb.metadata and "widgets" not in nb.metadata
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code[1:]:
        if path.name in OWN_LOOP_PAGES:
            continue  # the reader's own training loop is that page's subject
        assert not [n for n in ast.walk(ast.parse(cell.source)) if isinstance(n, LOOPS)], \
            f"no def/class/loops in notebook cells:\n{cell.source}"
        assert "papermill" not in cell.metadata
    assert any(c.outputs for c in code), "commit notebooks with their smoke outputs"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["notebooks/lwf.ipynb", "book/figure3.ipynb"])
def test_bad_parameter_fails_the_first_cell_with_ddlibs_message(tmp_path, page):
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="profile='fast' is unknown"):
        papermill.execute_notebook(str(ROOT / page), str(out),
                                   parameters={"profile": "fast"}, kernel_name="python3",
                                   cwd=str((ROOT / page).parent), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and "remove-cell" not in _tags(c)]
    first = next(i for i, c in enumerate(code) if "injected-parameters" in _tags(c)) + 1
    errors = [o for o in code[first].outputs if o["output_type"] == "error"]
    assert errors and "profile='fast' is unknown" in errors[0]["evalue"]
    assert not any(c.outputs for c in code[first + 1:])  # nothing ran after it


METHOD_NOTEBOOKS = {m: ROOT / "notebooks" / f"{m}.ipynb" for m in METHOD_ORDER}


def _as_template(method: str, text: str) -> str:
    """`text` with the method's id and display name replaced by placeholders."""
    label = display_name({"method": method, "dd": False, "similar_k": 1})
    return text.replace(label, "<Method>").replace(method, "<method>")


def _cells(method: str) -> list[tuple[str, str, str]]:
    nb = nbformat.read(METHOD_NOTEBOOKS[method], as_version=4)
    return [(c.cell_type, _as_template(method, c.source),
             _as_template(method, json.dumps(c.metadata, sort_keys=True))) for c in nb.cells]


@pytest.mark.parametrize("method", METHOD_ORDER)
def test_method_notebooks_differ_only_in_their_own_prose(method):
    """One notebook per baseline (a direct Colab link, its prose readable before running),
    kept in lockstep: every cell but the second (title and what the method does) is the
    same in all four up to the method's names."""
    cells, reference = _cells(method), _cells(METHOD_ORDER[0])
    assert len(cells) == len(reference)
    label = display_name({"method": method, "dd": False, "similar_k": 1})
    assert cells[1][0] == "markdown" and cells[1][1].startswith("# <Method> and <Method>+DD\n")
    for i, (cell, ref) in enumerate(zip(cells, reference)):
        if i != 1:
            assert cell == ref, f"cell {i} of {method}.ipynb differs from {METHOD_ORDER[0]}'s"
    source = METHOD_NOTEBOOKS[method].read_text()
    assert f"notebooks/{method}.ipynb" in source and label in source


def test_threads_parameter_matches_runconfigs_default():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        (params,) = [c for c in nb.cells if "parameters" in _tags(c)]
        values = {(s.target if isinstance(s, ast.AnnAssign) else s.targets[0]).id:
                  ast.literal_eval(s.value) for s in ast.parse(params.source).body}
        if "threads" in values:
            assert values["threads"] == RunConfig.threads, path.name
