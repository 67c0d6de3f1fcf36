"""The evidence DD's argument rests on (seed Sec. 3.2; issue #11): DD can only help when its
expert tells its t classes (the new ones and their most similar old ones) apart better than
the classifier trained without it does. Per round of a +DD run: the expert's test accuracy
on its t classes, the baseline's classifier of the same round on the same t classes, and the
+DD classifier, each scored by argmax over those t outputs only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import results
from .analysis import as_results, one_result, table2, table2_change
from .config import RunConfig
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
    idx = torch.as_tensor(scenario.test_indices(classes))
    _, logits = infer(model, data, data.test_x[idx])
    labels = data.test_y[idx]
    order = torch.as_tensor(classes)
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
