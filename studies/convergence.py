"""Issue #11's controlled runs: which `cpu`-profile reductions keep training from converging.

Each arm changes one thing against the `cpu` profile (the classifier's epochs, with the
expert's in proportion; the expert's epochs alone; 32x32 images; full width; 400 training
images per class), always on order 0 at `INCREMENT` classes per round. The epoch arms run
the baselines (LwF, iCaRL, UCIR), with +DD as well at `DD_EPOCHS`; the expert arms iCaRL+DD;
the other arms iCaRL and iCaRL+DD, and full width UCIR and UCIR+DD too (the method whose
gain the doubled epochs shrank most). `convergence-v2.json` holds the same study on synthetic data version 2 (before
issue #11's generator change) at 10 classes per round. Results land in the normal store (`--results-dir`);
`summarise` writes the numbers the book's "Training to convergence" page and the closing
note use. Run: `python studies/convergence.py [arm ...] [--jobs N] [--methods M,...]` (N
runs at once, one torch thread each, longest first; only the arms' runs of methods M).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddlib import results
from ddlib.convergence import last_fifth_change
from ddlib.mechanism import expert_vs_classifiers
from ddlib.names import run_name
from ddlib.plan import plan, run_all

HERE = Path(__file__).parent
INCREMENT = 20  # the book's analysis increment: 5 rounds, half the cost of 10 per round
# +DD too at the profile's epochs and their doubling: does DD's gain last when the
# baselines train longer? (The rule itself reads the baselines only.)
DD_EPOCHS = (24, 48)
ARMS: dict[str, tuple[dict, tuple[str, ...], tuple[bool, ...]]] = {
    # name: (overrides of the cpu profile, methods, dd arms)
    # LwF trains as iCaRL does (exemplars kept): its runs read iCaRL's with the network's
    # output, so they cost nothing and give the doubling test on that rule
    **{f"epochs{e}": ({"epochs": e}, ("lwf", "icarl", "ucir", "bic"), (False, True) if e in DD_EPOCHS else (False,))
       for e in (12, 24, 48, 96)},
    # the expert's epochs alone; their middle (the profile's) is epochs24's iCaRL+DD
    "expert12": ({"epochs": 24, "expert_epochs": 10, "expert_balanced_epochs": 5}, ("icarl",), (True,)),
    "expert48": ({"epochs": 24, "expert_epochs": 40, "expert_balanced_epochs": 20}, ("icarl",), (True,)),
    "size32": ({"image_size": 32}, ("icarl",), (False, True)),
    "width1": ({"width": 1.0}, ("icarl", "ucir"), (False, True)),
    "per400": ({"train_per_class": 400}, ("icarl",), (False, True)),
}


def summarise(result: dict) -> dict:
    rounds = result["rounds"]
    out = {"run": run_name(result["config"]["method"], result["config"]["dd"]),
           "rule": result["inference"],
           "avg_inc_acc": result["avg_inc_acc"], "last_acc": result["last_acc"],
           "train_time_s": result["train_time_s"],
           "classifier_last_fifth_change": [last_fifth_change([e["loss"] for e in r["history_classifier"]])
                                            for r in rounds],
           "classifier_final_train_acc": [r["history_classifier"][-1].get("acc") for r in rounds]}
    if result["config"]["dd"]:
        later = rounds[1:]
        out.update(
            expert_acc_a=[r["expert_acc_a"] for r in later],
            expert_acc_b=[r["expert_acc_b"] for r in later],
            classifier_acc_on_expert_classes=[r["classifier_acc_on_expert_classes"] for r in later],
            **{f"expert_{stage}_last_fifth_change": [
                last_fifth_change([e["loss"] for e in r[f"history_expert_{stage}"]])
                for r in later if r[f"history_expert_{stage}"]] for stage in ("a", "b")})
    return out


def configs(arm: str, results_dir: str):
    overrides, methods, dds = ARMS[arm]
    return plan("cpu", method=list(methods), dd=list(dds), orders=[0], increments=[INCREMENT],
                results_dir=results_dir, threads=1, progress=False, **overrides)


def write_summary(results_dir: str = "results") -> dict:
    """studies/convergence.json updated with every finished run of the study in the store
    (a run the store lacks keeps its committed numbers: a store holds what one machine
    trained); a +DD run with its arm's baseline also gets the expert's mean lead over the
    same-round baseline classifier on its t classes (read from the baseline's checkpoints)."""
    path = HERE / "convergence.json"
    committed = json.loads(path.read_text()) if path.is_file() else {}
    summary: dict = {arm: dict(committed[arm]) for arm in ARMS if arm in committed}
    for arm, (overrides, _, _) in ARMS.items():
        done = {cfg: results.current(cfg) for cfg in configs(arm, results_dir)}
        baselines = {cfg.method: r for cfg, r in done.items() if r is not None and not cfg.dd}
        for cfg, result in done.items():
            if result is None:
                continue
            numbers = {**summarise(result), "overrides": overrides}
            if cfg.dd and cfg.method in baselines:
                leads = expert_vs_classifiers(result, baselines[cfg.method])["expert lead"]
                numbers["expert_lead"] = round(float(leads.mean()), 2)
            summary.setdefault(arm, {})[cfg.run_name] = numbers
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(arms: list[str], results_dir: str = "results", jobs: int = 1,
         methods: list[str] | None = None) -> None:
    """Train the `arms`' missing runs (of `methods` only, if given) as one queue, longest
    first so that `jobs` workers finish together, then update the summary."""
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise SystemExit(f"arm {unknown[0]!r} is unknown; choose from {list(ARMS)}")
    runs = dict.fromkeys(cfg for arm in arms for cfg in configs(arm, results_dir)
                         if methods is None or cfg.method in methods)
    if not runs:
        raise SystemExit(f"methods {methods} have no run in the arms {arms}")
    run_all(sorted(runs, key=lambda cfg: -cfg.epochs * (2 if cfg.dd else 1)), verbose=False,
            jobs=jobs)
    write_summary(results_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="*", default=list(ARMS), help=f"any of {list(ARMS)} (default all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--methods", type=lambda text: text.split(","), default=None,
                        help="only these methods' runs, comma-separated (default all)")
    args = parser.parse_args()
    main(args.arms, jobs=args.jobs, methods=args.methods)
