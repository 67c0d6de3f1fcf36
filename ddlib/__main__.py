"""Command line: `python -m ddlib run ...`, `python -m ddlib sweep ...`, `python -m ddlib bench`,
`python -m ddlib book-cache ...` (a step of `make book`).

Every `RunConfig` field is a flag of `run` (`similar_k` -> `--similar-k`); booleans take
`--dd` / `--no-dd`; tuples are comma-separated (`--milestones 50,75`).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import fields

from . import book_cache
from .config import PROFILES, RunConfig
from .sweep import add_arguments as add_sweep_flags


_INT_LIMIT = 2**31 - 1  # every integer knob (epochs, sizes, seeds, k) fits in an int32


def _int(text: str, low: int = -_INT_LIMIT, high: int = _INT_LIMIT) -> int:
    """An integer flag; argparse reports a non-integer or one outside low..high (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is out of range {low}..{high}")
    return value


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
    return tuple(_int(t) for t in text.split(",") if t.strip())


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if f.name == "profile":
            parser.add_argument(flag, choices=sorted(PROFILES), default="smoke")
        elif kind.startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif kind.startswith("tuple"):
            parser.add_argument(flag, type=_tuple_of_ints, default=None, metavar="E1,E2")
        else:
            convert = (_int if kind.startswith("int") else
                       _finite_float if kind.startswith("float") else str)
            parser.add_argument(flag, type=convert, default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train and evaluate one configuration")
    _add_config_flags(run_parser)
    add_sweep_flags(sub.add_parser("sweep", help="run the experiment notebooks through "
                                   "papermill for a grid of parameters (resumable)"))
    bench_parser = sub.add_parser("bench", help="images/s of a ResNet-32 training step")
    bench_parser.add_argument("--steps", type=lambda t: _int(t, 1, 10**6), default=10)
    bench_parser.add_argument("--threads", type=lambda t: _int(t, 0, 1024), default=0)
    book_cache.add_arguments(sub.add_parser("book-cache", help="drop Jupyter Book's execution "
                                            "cache when results, ddlib or the profile changed"))
    args = vars(parser.parse_args(argv))
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

            bench(steps=args["steps"], threads=args["threads"])
    except (ValueError, OSError, FloatingPointError, MemoryError) as err:
        # bad input, missing/unwritable file or full disk (messages name the path), NaN loss
        print(f"error: {f'out of memory ({err})' if isinstance(err, MemoryError) else err}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
