"""The evidence DD's argument rests on (seed Sec. 3.2; issue #11): DD can only help when its
expert tells its t classes (the new ones and their most similar old ones) apart better than
the classifier trained without it does. Per round of a +DD run: the expert's test accuracy
on its t classes, the baseline's classifier of the same round on the same t classes, and the
+DD classifier, each scored by argmax over those t outputs only. And how the expert starts
(`expert_init`, which the paper leaves open): the baseline and +DD with the expert started
from the old model's features and from scratch, side by side (`init_summary`, `init_rounds`,
`init_curves`, `init_comparison`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import results
from .analysis import as_results, one_result, run_summary, table2, table2_change, to_frame
from .config import EXPERT_INITS, RunConfig
from .engine import infer
from .gradcam import load_round_model
from .names import METHOD_NAMES


def _trained_run(run: dict | str | Path) -> dict | str | Path:
    """Where `run`'s round models are: its own checkpoints, or those of the run whose
    training it shares (LwF with exemplars reads iCaRL's, `results.trained_by`)."""
    twin = results.trained_by(RunConfig.from_dict(one_result(run)["config"]))
    return run if twin is None else results.result_path(twin)


def accuracy_on(model: torch.nn.Module, data, scenario, classes: list[int]) -> float:
    """Top-1 (%) of `model` on the test images of `classes`, argmax over those classes."""
    idx = torch.as_tensor(scenario.test_indices(classes), device=data.device)
    _, logits = infer(model, data, data.test_x, idx)  # gathered a batch at a time
    labels = data.test_y[idx]
    order = torch.as_tensor(classes, device=data.device)
    target = (labels.unsqueeze(1) == order).float().argmax(1)
    return round(100.0 * float((logits[:, order].argmax(1) == target).float().mean()), 2)


def expert_vs_classifiers(dd_run: dict | str | Path, baseline_run: dict | str | Path
                          ) -> pd.DataFrame:
    """One row per round r >= 2 of `dd_run`: t, the expert's accuracy on its classes, the
    baseline's and the +DD classifier's accuracy on the same classes, and the expert's lead
    over the baseline (points). The baseline's round models come from its checkpoints."""
    dd, base = one_result(dd_run), one_result(baseline_run)
    if (dd["config"]["method"], dd["config"]["order"]) != (base["config"]["method"],
                                                             base["config"]["order"]):
        raise ValueError("dd_run and baseline_run must be one method on one class order")
    rows, scenario, data = [], None, None
    for rec in dd["rounds"][1:]:
        model, data, scenario = load_round_model(_trained_run(baseline_run), rec["round"],
                                                 scenario=scenario, data=data)
        classes = rec["expert_classes"]
        baseline = accuracy_on(model, data, scenario, classes)
        rows.append({"round": rec["round"], "t": len(classes), "expert": rec["expert_acc_b"],
                     "baseline classifier": baseline,
                     "+DD classifier": rec["classifier_acc_on_expert_classes"],
                     "expert lead": round(rec["expert_acc_b"] - baseline, 2)})
    return pd.DataFrame(rows).set_index("round")


def mechanism_table(dd_runs, baseline_runs) -> pd.DataFrame:
    """`expert_vs_classifiers` averaged over class orders (runs paired by order)."""
    by_order = {r["config"]["order"]: r for r in as_results(baseline_runs)}
    frames = [expert_vs_classifiers(r, by_order[r["config"]["order"]])
              for r in as_results(dd_runs) if r["config"]["order"] in by_order]
    if not frames:
        raise ValueError("no +DD run has a baseline run of the same order")
    return pd.concat(frames).groupby(level="round").mean().round(2).assign(
        orders=len(frames)).astype({"t": int})


def lead_summary(table: pd.DataFrame) -> dict[str, float]:
    """Mean expert lead over the rounds, and the share of rounds where the expert leads."""
    lead = table["expert lead"].to_numpy()
    return {"mean_lead": round(float(np.mean(lead)), 2),
            "rounds_led_pct": round(100.0 * float(np.mean(lead > 0)), 1)}


def _arms(runs: list[dict], method: str) -> tuple[list[dict], list[dict]]:
    """`method`'s baseline runs and its +DD runs at the paper's k."""
    mine = [r for r in runs if r["config"]["method"] == method]
    return ([r for r in mine if not r["config"]["dd"]],
            [r for r in mine if r["config"]["dd"] and r["config"]["similar_k"] == 1])


def round_table(runs: list[dict]) -> pd.DataFrame:
    """`mechanism_table` of every method with both arms in `runs`, one row per (method,
    round), for reading."""
    frames = []
    for method, label in METHOD_NAMES.items():
        base, dd = _arms(runs, method)
        if base and dd:
            table = mechanism_table(dd, base).reset_index()
            frames.append(table.assign(Method=label).rename(columns={
                "round": "Round", "expert": "Expert", "baseline classifier": "Baseline",
                "+DD classifier": "+DD", "expert lead": "Expert lead"}))
    if not frames:
        raise ValueError("no method has both a baseline and a +DD (k=1) run here")
    return pd.concat(frames)[["Method", "Round", "t", "Expert", "Baseline", "+DD", "Expert lead"]]


def method_summary(runs: list[dict]) -> pd.DataFrame:
    """One row per method of `runs` (baseline and +DD arms at k = 1, paired by order): the
    expert's mean accuracy on its t classes, the baseline's and the +DD classifier's on the
    same classes, the expert's lead, DD's change of confusion and forgetting errors (Table 2
    split, summed over rounds 2..R) and DD's gain in average incremental accuracy."""
    rows = []
    for method, label in METHOD_NAMES.items():
        base, dd = _arms(runs, method)
        if not base or not dd:
            continue
        table = mechanism_table(dd, base)
        change = table2_change(table2(base, dd, types=("confusion", "forgetting")))
        rule = dd[0]["inference"]
        gain = (np.mean([r["avg_inc_acc"][rule] for r in dd])
                - np.mean([r["avg_inc_acc"][rule] for r in base]))
        rows.append({"Method": label, "Orders": int(table["orders"].iloc[0]),
                     "Expert": table["expert"].mean(),
                     "Baseline": table["baseline classifier"].mean(),
                     "+DD": table["+DD classifier"].mean(),
                     "Lead": table["expert lead"].mean(),
                     "Rounds led": f"{int((table['expert lead'] > 0).sum())} of {len(table)}",
                     "Confusion %": change["confusion_change_pct"],
                     "Forgetting %": change["forgetting_change_pct"],
                     "DD gain": gain})
    if not rows:
        raise ValueError("no method has both a baseline and a +DD (k=1) run here")
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- expert_init
# The paper does not say how the expert starts. The book's runs start it from the old
# model's features ("old"); the alternative is fresh weights ("scratch").

INIT_ARMS = {"baseline": "baseline", "old": "+DD (old)", "scratch": "+DD (scratch)"}


def _init_arm(result: dict) -> str:
    """'baseline', or how the +DD run's expert started."""
    return results.config_value(result, "expert_init") if result["config"]["dd"] else "baseline"


def _init_runs(runs) -> dict[str, dict[str, list[dict]]]:
    """Per method that has all of `INIT_ARMS` (+DD at the paper's k = 1), each arm's runs
    on the class orders all three share, so that every arm is averaged over the same
    orders."""
    records = as_results(runs)
    chosen = {}
    for method in METHOD_NAMES:
        mine = [r for r in records if r["config"]["method"] == method
                and (not r["config"]["dd"] or r["config"]["similar_k"] == 1)]
        arms = {arm: [r for r in mine if _init_arm(r) == arm] for arm in INIT_ARMS}
        shared = set.intersection(*({r["config"]["order"] for r in arm_runs}
                                    for arm_runs in arms.values()))
        if shared:
            chosen[method] = {arm: sorted((r for r in arm_runs if r["config"]["order"] in shared),
                                          key=lambda r: r["config"]["order"])
                              for arm, arm_runs in arms.items()}
    if not chosen:
        raise ValueError("no method has a baseline and +DD runs (k = 1) with the expert "
                         "started both from the old model and from scratch on one class order")
    return chosen


def _std(values: pd.Series) -> float:
    """Standard deviation over class orders (ddof 1); 0 for a single order."""
    return float(values.std()) if len(values) > 1 else 0.0


def init_summary(runs) -> pd.DataFrame:
    """One row per method and arm of `INIT_ARMS`: average incremental and last-round
    accuracy (%, by the method's own rule), mean and std over the shared class orders."""
    rows = []
    for method, arms in _init_runs(runs).items():
        for arm, arm_runs in arms.items():
            per_run = run_summary(to_frame(arm_runs))
            rows.append({"method": method, "arm": arm, "orders": len(arm_runs),
                         "avg_mean": per_run["avg_inc_acc"].mean(),
                         "avg_std": _std(per_run["avg_inc_acc"]),
                         "last_mean": per_run["final_acc"].mean(),
                         "last_std": _std(per_run["final_acc"])})
    return pd.DataFrame(rows)


def init_curves(runs) -> pd.DataFrame:
    """Per method, arm and number of classes learned: the accuracy (%, by the method's own
    rule), mean and std over the shared class orders."""
    frame = pd.concat([to_frame(arm_runs).assign(method=method, arm=arm)
                       for method, arms in _init_runs(runs).items()
                       for arm, arm_runs in arms.items()])
    curves = (frame.groupby(["method", "arm", "classes_seen"], sort=False)["acc"]
              .agg(mean="mean", std="std").reset_index())
    return curves.fillna({"std": 0.0})


def init_rounds(runs) -> pd.DataFrame:
    """Per method and round r >= 2, for each expert start: the expert's accuracy on its
    t classes and the +DD classifier's on the same classes, as the run recorded them
    (argmax over the t outputs), mean over the shared class orders. t depends only on
    the round's class counts, so both starts have the same."""
    rows = []
    for method, arms in _init_runs(runs).items():
        for init in EXPERT_INITS:
            rows += [{"Method": METHOD_NAMES[method], "Round": rec["round"],
                      "t": len(rec["expert_classes"]), "start": init,
                      "Expert": rec["expert_acc_b"],
                      "+DD": rec["classifier_acc_on_expert_classes"]}
                     for run in arms[init] for rec in run["rounds"][1:]]
    wide = pd.DataFrame(rows).pivot_table(index=["Method", "Round", "t"], columns="start",
                                          values=["Expert", "+DD"], aggfunc="mean", sort=False)
    wide.columns = [f"{value} ({start})" for value, start in wide.columns]
    order = [f"{value} ({start})" for start in EXPERT_INITS for value in ("Expert", "+DD")]
    return wide[order].reset_index()


def init_comparison(runs) -> pd.DataFrame:
    """One row per method: the numbers the page's conclusion states. Average incremental
    accuracy of the baseline and of both starts (mean and std over the shared orders),
    the old start's lead over scratch (points), and each expert's accuracy on its t
    classes, mean over rounds and orders."""
    summary = init_summary(runs).set_index(["method", "arm"])
    rounds = init_rounds(runs).groupby("Method", sort=False).mean(numeric_only=True)
    rows = []
    for method in summary.index.get_level_values("method").unique():
        avg = summary.loc[method]
        experts = rounds.loc[METHOD_NAMES[method]]
        rows.append({"method": method, "orders": int(avg.loc["old", "orders"]),
                     "baseline": avg.loc["baseline", "avg_mean"],
                     **{init: avg.loc[init, "avg_mean"] for init in EXPERT_INITS},
                     **{f"{init}_std": avg.loc[init, "avg_std"] for init in EXPERT_INITS},
                     "old_lead": avg.loc["old", "avg_mean"] - avg.loc["scratch", "avg_mean"],
                     **{f"expert_{init}": experts[f"Expert ({init})"]
                        for init in EXPERT_INITS}})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- the class-orders study
# studies/orders.py: every baseline with and without DD on three class orders, as numbers
# (the book's grid trains one order). `study` is one increment's part of studies/orders.json.

STUDY_ARMS = {"baseline": "baseline", "old": "+DD", "scratch": "+DD (scratch)"}


def _study_arm(entry: dict) -> str:
    return entry["expert_init"] if entry["dd"] else "baseline"


def _paired(study: dict[str, dict]) -> dict[str, dict[str, dict[int, dict]]]:
    """method -> arm -> order -> run, for each arm of each method in the study."""
    out: dict = {}
    for entry in study.values():
        out.setdefault(entry["method"], {}).setdefault(_study_arm(entry), {})[entry["order"]] = entry
    return {m: out[m] for m in METHOD_NAMES if m in out}


def study_has_pairs(study: dict[str, dict], *arms: str) -> bool:
    """Whether some method of the study ran, on one class order, the baseline and +DD with
    each of `arms` (how the expert started)."""
    return any(set.intersection(*(set(runs.get(arm, {})) for arm in ("baseline", *arms)))
               for runs in _paired(study).values())


def study_accuracy(study: dict[str, dict]) -> pd.DataFrame:
    """One row per method and arm: accuracy after each round (%, the method's own rule),
    average incremental and last-round accuracy as mean and std over the orders, and the
    gain over the baseline on the orders both have (points)."""
    rows = []
    for method, arms in _paired(study).items():
        base = arms.get("baseline", {})
        for arm, label in STUDY_ARMS.items():
            runs = arms.get(arm)
            if not runs:
                continue
            avg = pd.Series([r["avg_inc_acc"] for r in runs.values()])
            last = pd.Series([r["last_acc"] for r in runs.values()])
            shared = sorted(set(runs) & set(base))
            gain = (np.mean([runs[o]["avg_inc_acc"] - base[o]["avg_inc_acc"] for o in shared])
                    if arm != "baseline" and shared else np.nan)
            curve = np.mean([r["acc"] for r in runs.values()], axis=0)
            rows.append({"Method": METHOD_NAMES[method], "Arm": label,
                         "Orders": ",".join(str(o) for o in sorted(runs)),
                         **{f"R{i + 1}": acc for i, acc in enumerate(curve)},
                         "Avg": avg.mean(), "Avg std": _std(avg),
                         "Last": last.mean(), "Last std": _std(last), "Gain": gain})
    if not rows:
        raise ValueError("the study has no runs")
    return pd.DataFrame(rows)


def study_pairs(study: dict[str, dict], arm: str = "old") -> pd.DataFrame:
    """One row per method and class order with a baseline and a +DD run (`arm`: how the
    expert started): DD's gain in average incremental accuracy, the expert's mean lead over
    the same-round baseline classifier on its t classes, the rounds it leads, and DD's change
    of the Table 2 errors (CNN predictions, rounds 2..R, %)."""
    rows = []
    for method, arms in _paired(study).items():
        for order in sorted(set(arms.get("baseline", {})) & set(arms.get(arm, {}))):
            base, dd = arms["baseline"][order], arms[arm][order]
            lead = [r["expert"] - r["baseline"] for r in dd.get("mechanism", [])]
            rows.append({"Method": METHOD_NAMES[method], "Order": order,
                         "Gain": dd["avg_inc_acc"] - base["avg_inc_acc"],
                         "Expert lead": np.mean(lead) if lead else np.nan,
                         "Rounds led": f"{sum(x > 0 for x in lead)} of {len(lead)}",
                         **{f"{kind.capitalize()} %": 100.0 * (dd["errors"][kind]
                                                               - base["errors"][kind])
                            / base["errors"][kind] if base["errors"][kind] else np.nan
                            for kind in ("confusion", "forgetting", "other")}})
    if not rows:
        raise ValueError(f"the study has no method with a baseline and a +DD ({arm}) run "
                         "on one class order")
    return pd.DataFrame(rows)


def _pairs(n: int) -> str:
    return f"{n} (method, order) pair{'s' if n != 1 else ''}"


def study_verdict(pairs: pd.DataFrame) -> str:
    """What `study_pairs` says, in words: how often DD helps, and whether the expert's lead
    goes with DD's gain."""
    helped, gain = pairs["Gain"] > 0, pairs["Gain"]
    spread = f" (from {gain.min():+.2f} to {gain.max():+.2f})" if len(pairs) > 1 else ""
    text = (f"DD raises the average incremental accuracy in {int(helped.sum())} of "
            f"{_pairs(len(pairs))}, by {gain.mean():+.2f} points on average{spread}.")
    if helped.all() or not helped.any():
        return text + (f" The expert leads the baseline classifier on its classes by "
                       f"{pairs['Expert lead'].mean():+.2f} points on average.")
    return text + (f" Where it helps, the expert leads the baseline classifier on its classes "
                   f"by {pairs.loc[helped, 'Expert lead'].mean():+.2f} points on average; "
                   f"where it does not, by {pairs.loc[~helped, 'Expert lead'].mean():+.2f}.")


def study_init(study: dict[str, dict]) -> pd.DataFrame:
    """One row per method and class order with a baseline and +DD runs with both expert
    starts: each start's DD gain (average incremental accuracy, points) and expert lead
    over the same-round baseline classifier on its t classes."""
    old, scratch = study_pairs(study, "old"), study_pairs(study, "scratch")
    both = old.merge(scratch, on=["Method", "Order"], suffixes=(" (old)", " (scratch)"))
    if both.empty:
        raise ValueError("the study has no method and order with both expert starts")
    return both[["Method", "Order", "Gain (old)", "Gain (scratch)", "Expert lead (old)",
                 "Expert lead (scratch)"]]


# Margin by which a scratch-started expert must beat the old start in DD's gain, mean over
# the study's (method, order) pairs, and in every pair, before it replaces the default.
SCRATCH_MARGIN = 0.5


def study_init_verdict(table: pd.DataFrame) -> str:
    """Which start the study supports, by the rule: `scratch` replaces `old` only when its
    gain is larger in every (method, order) pair and by over SCRATCH_MARGIN points on
    average."""
    diff = table["Gain (scratch)"] - table["Gain (old)"]
    spread = f" (from {diff.min():+.2f} to {diff.max():+.2f})" if len(table) > 1 else ""
    text = (f"Over {_pairs(len(table))}, the scratch-started expert's DD gain is "
            f"{diff.mean():+.2f} points against the old start's on average{spread}; its lead "
            f"over the baseline classifier "
            f"on its classes is {table['Expert lead (scratch)'].mean():+.2f} points against "
            f"{table['Expert lead (old)'].mean():+.2f}.")
    if (diff > 0).all() and diff.mean() > SCRATCH_MARGIN:
        return text + " By the rule (larger in every pair and by over " \
            f"{SCRATCH_MARGIN} points on average), scratch is the better start."
    return text + f" By the rule (scratch must be larger in every pair and by over " \
        f"{SCRATCH_MARGIN} points on average), the default stays `old`."
