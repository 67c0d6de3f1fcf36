"""Command line: `python -m ddlib run ...` and `python -m ddlib bench`.

Every `RunConfig` field is a flag of `run` (`similar_k` -> `--similar-k`); booleans take
`--dd` / `--no-dd`; tuples are comma-separated (`--milestones 50,75`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from .config import PROFILES, RunConfig


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


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
            convert = int if kind.startswith("int") else float if kind.startswith("float") else str
            parser.add_argument(flag, type=convert, default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train and evaluate one configuration")
    _add_config_flags(run_parser)
    bench_parser = sub.add_parser("bench", help="images/s of a ResNet-32 training step")
    bench_parser.add_argument("--steps", type=int, default=20)
    bench_parser.add_argument("--threads", type=int, default=0)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    try:
        if command == "run":
            from .run import run

            profile = args.pop("profile")
            run(RunConfig.resolve(profile, **args))
        else:
            from .bench import main as bench

            bench(steps=args["steps"], threads=args["threads"])
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
