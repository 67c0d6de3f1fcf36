"""Issue #11's table: every baseline with and without DD over three class orders, `cpu`
profile, with the expert started both ways for iCaRL and UCIR. The book's grid trains one
order (its 45-minute budget), so these runs are a study: trained once with this script, and
their numbers committed in `studies/orders.json`, which the Figure 3 page reads.

Per run the summary keeps what the tables need and the store alone can give: accuracy per
round (the method's own rule), the Table 2 error split (CNN predictions, summed over rounds
2..R) and, for +DD runs, the expert's accuracy on its t classes next to the same-round
baseline classifier's on the same classes (which needs the baseline's checkpoints).

The part `20@48` trains the methods whose 48-epoch schedule the convergence study's doubling
test measured (`studies/convergence.json`: iCaRL's training, read by LwF's rule and iCaRL's,
UCIR and BiC) at those 48 classifier epochs, the expert's phases in proportion, old start only.

Run: `python studies/orders.py [PART ...] [--jobs N] [--methods M,...]` (a part is `20`,
`10` or `20@48`; default 20; only the part's runs of methods M; N runs at once, one torch
thread each; a run already in the store, or being trained by a sweep, is read back, not
retrained), or `python studies/orders.py --summary` to update the JSON from the store alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddlib import results
from ddlib.analysis import confusion_forgetting
from ddlib.mechanism import expert_vs_classifiers
from ddlib.plan import plan, run_all

HERE = Path(__file__).parent
ORDERS = (0, 1, 2)
INIT_METHODS = ("icarl", "ucir")  # both expert starts, as the issue asks
LONGER_EPOCHS = 48
LONGER_METHODS = ("lwf", "icarl", "ucir", "bic")  # those the doubling test measured at 48 epochs
# part of orders.json -> (classes per round, classifier epochs; None: the profile's)
PARTS = {"20": (20, None), "10": (10, None), f"20@{LONGER_EPOCHS}": (20, LONGER_EPOCHS)}


def configs(part: str, results_dir: str = "results"):
    """The runs of one part, on ORDERS: at the profile's epochs, baselines and +DD (old
    start) of all four methods, then +DD (scratch start) of INIT_METHODS; at longer epochs,
    baselines and +DD (old start) of LONGER_METHODS."""
    increment, epochs = PARTS[part]
    common = dict(orders=list(ORDERS), increments=[increment], results_dir=results_dir,
                  threads=1, progress=False, epochs=epochs)
    if epochs is not None:
        return plan("cpu", method=list(LONGER_METHODS), dd=[False, True], **common)
    return (plan("cpu", method=["lwf", "icarl", "ucir", "bic"], dd=[False, True], **common)
            + plan("cpu", method=list(INIT_METHODS), dd=[True], expert_init="scratch", **common))


def summarise(result: dict, baseline: dict | None) -> dict:
    """One run's numbers; `baseline` (the same method and order without DD) gives the
    expert-vs-classifier rows of a +DD run."""
    cfg, rule = result["config"], result["inference"]
    errors = confusion_forgetting(result, rule="cnn").loc[2:]
    out = {"method": cfg["method"], "dd": cfg["dd"], "order": cfg["order"],
           "expert_init": results.config_value(result, "expert_init") if cfg["dd"] else None,
           "rule": rule, "acc": [r[f"acc_{rule}"] for r in result["rounds"]],
           "avg_inc_acc": result["avg_inc_acc"][rule], "last_acc": result["last_acc"][rule],
           "errors": {kind: int(errors[kind].sum())
                      for kind in ("confusion", "forgetting", "other")}}
    if cfg["dd"] and baseline is not None:
        rows = expert_vs_classifiers(result, baseline).reset_index()
        out["mechanism"] = rows.rename(columns={"baseline classifier": "baseline",
                                                "+DD classifier": "dd"}).to_dict("records")
    return out


def write_summary(results_dir: str = "results", parts: list[str] | None = None) -> dict:
    """studies/orders.json updated with every finished run of the study's `parts` (default
    all) in the store (a run the store lacks keeps its committed numbers: a store holds what
    one machine trained)."""
    path = HERE / "orders.json"
    summary: dict = json.loads(path.read_text()) if path.is_file() else {}
    for part in parts or PARTS:
        stored = {cfg: results.current(cfg) for cfg in configs(part, results_dir)}
        done = {cfg: result for cfg, result in stored.items() if result is not None}
        baselines = {(c.method, c.order): r for c, r in done.items() if not c.dd}
        for cfg, result in done.items():
            key = f"{cfg.run_name}{'-expert-scratch' if cfg.expert_init == 'scratch' else ''}"
            summary.setdefault(part, {})[f"{key} order{cfg.order}"] = summarise(
                result, baselines.get((cfg.method, cfg.order)) if cfg.dd else None)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(parts: list[str], results_dir: str = "results", jobs: int = 1,
         methods: list[str] | None = None) -> None:
    """Train what is missing (of `methods` only, if given; `jobs` runs at once), then
    summarise once: the summary reloads every baseline's round checkpoints, too slow to
    repeat after each run (finished runs stay in the store)."""
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise SystemExit(f"part {unknown[0]!r} is unknown; choose from {list(PARTS)}")
    for part in parts:  # order by order, so that a study cut short leaves whole orders
        runs = [cfg for cfg in configs(part, results_dir) if methods is None or cfg.method in methods]
        if not runs:
            raise SystemExit(f"methods {methods} have no run in the part {part!r}")
        # +DD runs (the longer) first within an order, so that two workers finish together
        run_all(sorted(runs, key=lambda cfg: (cfg.order, not cfg.dd)), verbose=False, jobs=jobs)
    write_summary(results_dir, parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", default=["20"], help=f"any of {list(PARTS)} (default 20)")
    parser.add_argument("--summary", action="store_true", help="only update the JSON from the store")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--methods", type=lambda text: text.split(","), default=None,
                        help="only these methods' runs, comma-separated (default all)")
    args = parser.parse_args()
    if args.summary:
        write_summary()
    else:
        main(args.parts, jobs=args.jobs, methods=args.methods)
