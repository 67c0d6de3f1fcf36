"""What counts as a notebook regression: the rule by which a re-executed notebook's outputs
are compared with its committed ones.

Text, structure, settings, counts, class orders, errors and warnings must match exactly. A
number that comes out of training may move by float summation order (another CPU's kernels
sum in another order, and a smoke run is small enough for that to flip predictions), so the
numbers of the quantities in `TOLERANCES` may differ by at most their tolerance. Everything
else is exact. The tolerances were measured (README, "Testing"): the smoke sweep and every
notebook executed under AVX-512, AVX2 and the portable kernels, the largest difference per
quantity recorded, and a margin added.

Used three ways: as a pytest plugin it replaces nbval's output comparison (`make nbval`, or
`pytest --nbval -p notebook_check ...`); `python tests/notebook_check.py OLD NEW` reports
what moved between two copies of a notebook (`make notebooks`); and the tests call
`compare_notebooks` on deliberately changed results.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# A number standing alone: not part of a name such as `s02_c4`, `inc5` or `order0.json`.
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w]|\.\d)")
HOLE = "#"

# Quantities that come out of training: (pattern on the quantity's name, tolerance, kind);
# the first pattern that matches gives the kind. Each tolerance is 1.5 times the largest
# difference measured across kernel paths (README, "Testing"), rounded up, at most the
# quantity's range: a smoke run is small enough for float order to flip many predictions.
TOLERANCES: list[tuple[str, float, str]] = [
    (r"gain|lead", 24, "accuracy difference (points)"),
    (r"confusion %|forgetting %|change_pct", 76, "relative change of errors (%)"),
    (r"^round \d+$", 150, "error count"),
    (r"rounds led|panels", 2, "count of rounds or panels"),
    (r"^classifier$|^expert [ab]$|loss", 0.13, "training loss"),
    (r"\((nme|cnn)\)$", 100, "accuracy of one class (%)"),
    (r"acc|expert|baseline|\+dd|icarl|ucir|lwf|bic|avg|mean|final|std", 24, "accuracy (%)"),
]
PROSE_UNITS = {"%": "accuracy", "points": "gain"}  # a sentence's trained numbers carry these


@dataclass(frozen=True)
class Number:
    text: str
    quantity: str    # a table's column, a glued name, or the words around it in prose
    row: str = ""    # a table row's words: which run, method or round
    unit: str | None = None  # in a sentence: the word after it (only PROSE_UNITS train)

    @property
    def value(self) -> float:
        return float(self.text)

    @property
    def name(self) -> str:
        return f"{self.quantity!r} of {self.row!r}" if self.row else repr(self.quantity)


@dataclass(frozen=True)
class Difference:
    """One way a re-executed output differs from the committed one."""

    where: str      # "book/table2.ipynb cell 6"
    what: str       # the quantity, or "text"/"outputs"
    committed: str
    now: str
    allowed: str = "exact"

    def __str__(self) -> str:
        return (f"{self.where}: {self.what}: committed {self.committed!r}, now {self.now!r} "
                f"({self.allowed})")


def tolerance(number: Number) -> tuple[float, str] | None:
    """(tolerance, kind) of a trained number, or None: it must match exactly. A table's or
    a glued value's kind comes from its quantity's name; a number in prose is trained only
    when its unit says so (`23.9 %`, `3.4 points`): a sentence's counts and settings are
    exact."""
    if number.unit is not None:
        name = PROSE_UNITS.get(number.unit)
        if name is None:
            return None
    else:
        name = number.quantity
    for pattern, tol, kind in TOLERANCES:
        if re.search(pattern, name, re.IGNORECASE):
            return tol, kind
    return None


# ---- reading numbers and their names out of an output -----------------------------------

def _skeleton(text: str) -> str:
    """The text with every number a hole and runs of white space one space: what must match
    exactly (columns re-align when a number changes width)."""
    return " ".join(NUMBER.sub(HOLE, text).split())


def _row_label(cells: list[str], header: list[str] | None = None) -> str:
    """A table row's name: its words (cells with letters and no number), after its first
    column's value when that is a bare number (`Classes / round 5`)."""
    words = [c.strip() for c in cells if re.search(r"[^\W\d_]", c) and not NUMBER.search(c)]
    if cells and NUMBER.fullmatch(cells[0].strip()) and header:
        words.insert(0, f"{header[0].strip()} {cells[0].strip()}".strip())
    return " ".join(words)


def _table_numbers(rows: list[list[str]], header_rows: int) -> list[Number]:
    """Numbers of a table's body cells, each named `column [row]`. Header cells are settings
    (exact): named by the header itself."""
    out: list[Number] = []
    headers = rows[:header_rows]
    for r, row in enumerate(rows):
        for j, cell in enumerate(row):
            for m in NUMBER.finditer(cell):
                if r < header_rows:
                    out.append(Number(m.group(), "table header"))
                    continue
                column = " ".join(h[j].strip() for h in headers if j < len(h) and h[j].strip())
                out.append(Number(m.group(), column, _row_label(row, headers[-1] if headers
                                                                 else None)))
    return out


def _markdown_numbers(text: str) -> list[Number]:
    """Pipe tables by their cells; other lines by the words before each number."""
    out: list[Number] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            body = [row for row in table if not re.fullmatch(r"[\s|:-]+", "|".join(row))]
            out.extend(_table_numbers(body, 1))
            table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line.strip().strip("|").split("|"))
            continue
        flush()
        out.extend(_prose_numbers(line))
    flush()
    return out


def _prose_numbers(line: str) -> list[Number]:
    """Numbers in a sentence, each named by the words around it (`... λ2 = _, Tn ...`)."""
    out = []
    for m in NUMBER.finditer(line):
        after = re.match(r"\s*(%|[^\W\d_]+)", line[m.end():])
        before = " ".join(line[:m.start()].split()[-3:])
        following = re.match(r"\S*(\s+\S+){0,2}", line[m.end():]).group()
        context = (before + (" _" if line[:m.start()].endswith(" ") else "_")
                   + following).strip()
        out.append(Number(m.group(), context, unit=after.group(1) if after else ""))
    return out


def _fixed_width_numbers(text: str) -> list[Number]:
    """A right-aligned text table (a printed frame): a number's quantity is the header text
    above it, between the end of the value before it and its own end. A block whose first
    line holds mostly numbers reads as prose."""
    out: list[Number] = []
    header: str | None = None
    for line in text.splitlines():
        if not line.strip():
            header = None
            continue
        numbers = list(NUMBER.finditer(line))
        if header is None:
            if len(numbers) * 2 < len(line.split()) or not numbers:
                header = line
                out.extend(Number(m.group(), "table header") for m in numbers)
            else:
                out.extend(_prose_numbers(line))
            continue
        words = " ".join(w for w in line.split() if not NUMBER.fullmatch(w))
        previous_end = 0
        for m in numbers:
            label_end = max([previous_end] + [w.end() for w in re.finditer(r"\S+", line[:m.start()])
                                               if not NUMBER.fullmatch(w.group())])
            start = max(previous_end, label_end)
            out.append(Number(m.group(), header[start:m.end()].strip(), words))
            previous_end = m.end()
    return out


class _Cells(html.parser.HTMLParser):
    """The rows of an HTML table (pandas' `_repr_html_`), thead rows counted."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.header_rows = 0
        self._in_head = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self.rows.append([])
            self.header_rows += self._in_head
        elif tag in ("td", "th") and self.rows:
            self.rows[-1].append("")
            self._in_cell = True

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data


def _html_parts(text: str) -> tuple[str, list[Number]]:
    cells = _Cells()
    cells.feed(text)
    if not cells.rows:
        return _skeleton(text), [Number(m.group(), "html") for m in NUMBER.finditer(text)]
    flat = " | ".join(" ; ".join(row) for row in cells.rows)
    return _skeleton(flat), _table_numbers(cells.rows, cells.header_rows)


def parts(mime: str, text: str, glue_name: str | None = None) -> tuple[str, list[Number]]:
    """(skeleton, named numbers) of one output's value under `mime`."""
    if glue_name is not None:
        return _skeleton(text), [Number(m.group(), glue_name) for m in NUMBER.finditer(text)]
    if mime == "text/html":
        return _html_parts(text)
    if mime == "text/markdown":
        return _skeleton(text), _markdown_numbers(text)
    if mime.startswith("stream:") or text.startswith("<Figure"):  # sentences, not tables
        return _skeleton(text), [n for line in text.splitlines() for n in _prose_numbers(line)]
    return _skeleton(text), _fixed_width_numbers(text)


# ---- comparing -----------------------------------------------------------------------

def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def _values(output: dict, skip: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """mime (or `stream:<name>`, `error`) -> (text, glue name) of one output."""
    kind = output.get("output_type")
    if kind == "stream":
        return {f"stream:{output.get('name', 'stdout')}": (_text(output.get("text", "")), None)}
    if kind == "error":
        return {"error": (f"{output.get('ename')}: {output.get('evalue')}", None)}
    glue = (output.get("metadata") or {}).get("scrapbook", {}).get("name")
    data = output.get("data") or {}
    if "text/markdown" in data or "text/html" in data:  # the table the book shows; its
        skip = (*skip, "text/plain")                     # plain-text copy says the same
    return {mime: (_text(value) if not isinstance(value, (dict, list)) or
                   isinstance(value, list) and all(isinstance(v, str) for v in value)
                   else json.dumps(value, sort_keys=True), glue)
            for mime, value in data.items() if mime not in skip}


def compare_outputs(committed: list[dict], now: list[dict], where: str,
                    skip: tuple[str, ...] = (), sanitize=lambda s: s,
                    noise: list[Difference] | None = None) -> list[Difference]:
    """Every difference between a cell's committed and re-executed outputs that the rule
    does not allow; trained numbers that moved within their tolerance go to `noise`.
    Streams are merged per name first (their chunking is not output)."""
    noise = [] if noise is None else noise
    committed, now = _merge_streams(committed), _merge_streams(now)
    kinds = [o.get("output_type") for o in committed], [o.get("output_type") for o in now]
    if kinds[0] != kinds[1]:
        return [Difference(where, "outputs", " ".join(map(str, kinds[0])),
                           " ".join(map(str, kinds[1])))]
    found: list[Difference] = []
    for ref, new in zip(committed, now):
        ref_values, new_values = _values(ref, skip), _values(new, skip)
        if sorted(ref_values) != sorted(new_values):
            found.append(Difference(where, "output fields", ", ".join(sorted(ref_values)),
                                    ", ".join(sorted(new_values))))
            continue
        for mime, (ref_text, glue) in ref_values.items():
            found.extend(_compare_text(sanitize(ref_text), sanitize(new_values[mime][0]),
                                       mime, glue, where, noise))
    return found


def _merge_streams(outputs: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for out in outputs:
        out = dict(out)
        if (out.get("output_type") == "stream" and merged
                and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = _text(merged[-1]["text"]) + _text(out.get("text", ""))
            continue
        merged.append(out)
    return merged


def _compare_text(ref: str, new: str, mime: str, glue: str | None, where: str,
                  noise: list[Difference]) -> list[Difference]:
    if ref == new:
        return []
    where = f"{where} ({mime})"
    ref_skeleton, ref_numbers = parts(mime, ref, glue)
    new_skeleton, new_numbers = parts(mime, new, glue)
    if ref_skeleton != new_skeleton or len(ref_numbers) != len(new_numbers):
        what = "figure content" if ref.startswith("<Figure") else "text"
        return _cell_changes(mime, ref, new, where) or [
            Difference(where, what, _first_change(ref, new), _first_change(new, ref))]
    found = []
    for a, b in zip(ref_numbers, new_numbers):
        if a.text == b.text:
            continue
        allowed = tolerance(a)
        within = allowed is not None and abs(a.value - b.value) <= allowed[0] + 1e-9
        (noise if within else found).append(Difference(
            where, a.name, a.text, b.text,
            "exact" if allowed is None else f"allowed ±{allowed[0]:g} as {allowed[1]}"))
    return found


def _rows(mime: str, text: str) -> list[list[str]] | None:
    if mime == "text/html":
        cells = _Cells()
        cells.feed(text)
        return cells.rows or None
    if mime == "text/markdown":
        rows = [line.strip().strip("|").split("|") for line in text.splitlines()
                if line.lstrip().startswith("|")]
        return rows or None
    return None


def _cell_changes(mime: str, ref: str, new: str, where: str) -> list[Difference]:
    """A table whose shape holds but whose text changed: the changed cells, each named by
    its column and row."""
    a, b = _rows(mime, ref), _rows(mime, new)
    if a is None or b is None or [len(r) for r in a] != [len(r) for r in b]:
        return []
    header = a[0]
    return [Difference(where, f"{header[j].strip()!r} of {_row_label(row, header)!r}", x.strip(),
                       y.strip())
            for row, new_row in zip(a[1:], b[1:])
            for j, (x, y) in enumerate(zip(row, new_row)) if _skeleton(x) != _skeleton(y)]


def _first_change(a: str, b: str, context: int = 60) -> str:
    """The part of `a` around where it first differs from `b`."""
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return a[max(0, i - context // 2): i + context]


def compare_notebooks(committed: Path, now: Path, skip: tuple[str, ...] = ("image/png",),
                      sanitize=lambda s: s, name: str | None = None,
                      noise: list[Difference] | None = None) -> list[Difference]:
    """Differences the rule does not allow, cell by cell, between two copies of a notebook
    (same code cells); cells that nbval skips or ignores are not compared."""
    a, b = (json.loads(Path(p).read_text()) for p in (committed, now))
    label = name or str(committed)
    code = [[c for c in nb["cells"] if c["cell_type"] == "code"] for nb in (a, b)]
    if [_text(c["source"]) for c in code[0]] != [_text(c["source"]) for c in code[1]]:
        return [Difference(label, "cells", "committed code cells", "other code cells")]
    found = []
    for i, (ref, new) in enumerate(zip(*code)):
        if "nbval-ignore-output" in ref.get("metadata", {}).get("tags", []) \
                or "nbval-skip" in ref.get("metadata", {}).get("tags", []):
            continue
        found.extend(compare_outputs(ref.get("outputs", []), new.get("outputs", []),
                                     f"{label} Cell {i}", skip, sanitize, noise))
    return found


# ---- nbval plugin ---------------------------------------------------------------------

def pytest_configure(config) -> None:
    """Under --nbval, compare cells by this module's rule instead of nbval's exact one."""
    if not getattr(config.option, "nbval", False):
        return
    from nbval.plugin import IPyNbCell

    def compare(cell, test, ref, skip_compare=None):
        skip = tuple(skip_compare or cell.parent.skip_compare)
        where = f"{Path(str(cell.fspath)).relative_to(cell.config.rootpath)} Cell {cell.cell_num}"
        found = compare_outputs([dict(o) for o in ref], [dict(o) for o in test], where,
                                skip, cell.sanitize)
        cell.comparison_traceback = [str(d) for d in found]
        return not found

    IPyNbCell.compare_outputs = compare


def sanitizer(path: Path = Path(__file__).with_name("nbval_sanitize.cfg")):
    """The regex/replace pairs of nbval's sanitize file, as one function (what nbval masks:
    times, rates, paths)."""
    import configparser

    config = configparser.ConfigParser()
    config.read(path)
    pairs = [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]

    def sanitize(text: str) -> str:
        for regex, replace in pairs:
            text = regex.sub(replace, text)
        return text

    return sanitize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="What moved between two copies of each "
                                     "notebook, by the rule of tests/notebook_check.py")
    parser.add_argument("committed", type=Path, help="folder (or notebook) before")
    parser.add_argument("now", type=Path, help="folder (or notebook) after")
    parser.add_argument("--all", action="store_true",
                        help="also list the trained numbers that moved within tolerance")
    args = parser.parse_args(argv)
    pairs = ([(args.committed, args.now)] if args.committed.is_file() else
             [(p, args.now / p.relative_to(args.committed))
              for p in sorted(args.committed.rglob("*.ipynb"))])
    sanitize = sanitizer()
    for before, after in pairs:
        noise: list[Difference] = []
        found = compare_notebooks(before, after, sanitize=sanitize, name=str(after),
                                  noise=noise)
        moved = f"{len(noise)} trained number(s) moved within tolerance"
        print(f"{after}: " + (f"{len(found)} output(s) changed beyond the rule; {moved}"
                              if found else f"no change beyond the rule; {moved}"))
        for d in found + (noise if args.all else []):
            print(f"  {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
