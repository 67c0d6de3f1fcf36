"""Command line: `python -m ddlib run ...`, `python -m ddlib sweep ...`, `python -m ddlib bench`,
`python -m ddlib book-cache ...` (a step of `make book`).

Every `RunConfig` field is a flag of `run` (`similar_k` -> `--similar-k`); booleans take
`--dd` / `--no-dd`; tuples are comma-separated (`--milestones 50,75`).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import math
import sys
import tokenize
from dataclasses import Field, fields

from . import book_cache, config
from .config import DATASETS, DEVICES, METHOD_ORDER, PROFILES, RunConfig
from .bench import add_arguments as add_bench_flags
from .sweep import add_arguments as add_sweep_flags
from .utils import int_flag


def _finite_float(text: str) -> float:
    """A float flag; NaN and infinities are refused at parse time (no knob means them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    return tuple(int_flag(t) for t in text.split(",") if t.strip())


def field_docs(source: str | None = None) -> dict[str, tuple[str, str]]:
    """Per `RunConfig` field, (section, comment) read from config.py's source (or `source`):
    the `# ...` line above its group of fields and its own trailing comment with any
    continuation lines. config.py documents the fields there; this keeps one copy."""
    source = inspect.getsource(config) if source is None else source
    comments: dict[int, tuple[int, str, bool]] = {}  # line -> (column, text, comment only)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            alone = not tok.line[:col].strip()
            comments[row] = (col, tok.string.lstrip("#").strip(), alone)
    cls = next(node for node in ast.parse(source).body
               if isinstance(node, ast.ClassDef) and node.name == "RunConfig")
    docs, section = {}, ""
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign):
            continue
        above = [comments[r] for r in range(cls.lineno, node.lineno) if r in comments
                 and comments[r][2] and comments[r][0] == node.col_offset]
        section = above[-1][1] if above else section
        text, row = [], node.end_lineno
        if row in comments and not comments[row][2]:
            text.append(comments[row][1])
            while row + 1 in comments and comments[row + 1][2] \
                    and comments[row + 1][0] > node.col_offset:  # an indented continuation
                row += 1
                text.append(comments[row][1])
        docs[node.target.id] = (section, " ".join(text))
    return docs


# Fields with a closed set of values: shown in --help (config.py validates them, so a bad
# value is reported with ddlib's message, like any other bad value).
CHOICES = {"method": METHOD_ORDER, "dataset": DATASETS, "device": DEVICES,
           "profile": tuple(PROFILES)}


def _default_text(f: Field) -> str:
    """What the run uses when the flag is not given: the field's default, or the profile's
    value of each profile."""
    by_profile = {name: values[f.name] for name, values in PROFILES.items() if f.name in values}
    if by_profile:
        return "profile default: " + ", ".join(f"{name} {_shown(value)}"
                                                for name, value in by_profile.items())
    return f"default: {_shown(f.default)}"


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    docs, groups = field_docs(), {}
    for f in fields(RunConfig):
        section, comment = docs[f.name]
        group = groups.setdefault(section, parser.add_argument_group(section))
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        # A field without a comment of its own has its group's title above it.
        text = " ".join(filter(None, [comment, f"({_default_text(f)})"])).replace("%", "%%")
        if f.name == "profile":
            group.add_argument(flag, choices=CHOICES["profile"], default="smoke", help=text)
        elif kind.startswith("bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        elif kind.startswith("tuple"):
            group.add_argument(flag, type=_tuple_of_ints, default=None, metavar="E1,E2",
                               help=text)
        else:
            convert = (int_flag if kind.startswith("int") else
                       _finite_float if kind.startswith("float") else str)
            metavar = "{" + ",".join(CHOICES[f.name]) + "}" if f.name in CHOICES else None
            group.add_argument(flag, type=convert, default=None, metavar=metavar, help=text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m ddlib` and its subcommands."""
    parser = argparse.ArgumentParser(prog="python -m ddlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser(
        "run", help="train and evaluate one configuration",
        description="Train and evaluate one configuration (a RunConfig); options left out "
                    "take the profile's value. Profile defaults are those of the profile's "
                    "own dataset; the paper profile on ImageNet takes ImageNet's schedule.")
    _add_config_flags(run_parser)
    add_sweep_flags(sub.add_parser("sweep", help="run the experiment notebooks through "
                                   "papermill for a grid of parameters (resumable)"))
    add_bench_flags(sub.add_parser("bench", help="training speed: step rates, a run end to "
                                   "end against a toolbox loop, the GPU check"))
    book_cache.add_arguments(sub.add_parser("book-cache", help="drop Jupyter Book's execution "
                                            "cache when results, ddlib or the profile changed"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        if command == "run":
            from .run import run

            profile = args.pop("profile")
            run(RunConfig.resolve(profile, **args))
        elif command == "sweep":
            from .sweep import main as sweep

            return sweep(args)
        elif command == "book-cache":
            return book_cache.main(args)
        else:
            from .bench import main as bench

            return bench(args)
    except (ValueError, OSError, FloatingPointError, MemoryError) as err:
        # bad input, missing/unwritable file or full disk (messages name the path), NaN loss
        print(f"error: {f'out of memory ({err})' if isinstance(err, MemoryError) else err}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
