"""ddlib's import graph has no cycle, counting imports inside functions too (they would hide one)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ddlib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ddlib modules it imports, anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                # `from . import x` names submodules
                targets |= ({f"{target}.{a.name}" for a in node.names} if not node.module
                            else {target})
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("ddlib")}
        graph[name] = {t for t in targets if t != name}
    known = set(graph)
    return {m: {t for t in ts if t in known} for m, ts in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ddlib_imports_form_no_cycle():
    graph = import_graph()
    # the package __init__ re-exports; a module importing `ddlib` itself would loop through it
    graph = {m: ts - {"ddlib"} for m, ts in graph.items()}
    assert "ddlib.scenario" in graph["ddlib.config"] and graph["ddlib.expert"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
