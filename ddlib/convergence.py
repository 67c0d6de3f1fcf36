"""When is training converged? The rule the `cpu` profile's epochs follow (issue #11).

A stage (the classifier, expert stage A, expert stage B) is *settled* in a round when its
training loss moves by less than `PLATEAU` (relative) over the last fifth of its epochs (at
least two epochs). A schedule is *converged* when every stage is settled in every round and
doubling its epochs (milestones kept at the same fractions) moves the baselines' average
incremental accuracy by less than `MORE_EPOCHS_GAIN` points. Only baselines and the expert's
own accuracy enter the rule, never DD's effect on the classifier.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

PLATEAU = 0.05          # relative change of the loss over the last fifth of the epochs
MORE_EPOCHS_GAIN = 0.5  # points of average incremental accuracy bought by doubling epochs
STAGES = {"classifier": "history_classifier", "expert A": "history_expert_a",
          "expert B": "history_expert_b"}


def last_fifth_change(losses: list[float]) -> float:
    """|L_end - L_start| / L_start over the last fifth of the epochs (at least two)."""
    if len(losses) < 2:
        return float("nan")
    k = max(2, len(losses) // 5)
    start, end = losses[-k], losses[-1]
    return abs(end - start) / max(abs(start), 1e-12)


def curves(result: dict[str, Any]) -> pd.DataFrame:
    """Per-epoch training loss and accuracy of every stage of every round of one run:
    columns round, stage, epoch (1-based), loss, acc."""
    rows = []
    for rec in result["rounds"]:
        for stage, key in STAGES.items():
            for epoch, values in enumerate(rec.get(key) or [], start=1):
                rows.append({"round": rec["round"], "stage": stage, "epoch": epoch,
                             "loss": values["loss"], "acc": values.get("acc")})
    return pd.DataFrame(rows, columns=["round", "stage", "epoch", "loss", "acc"])


def plateau_table(result: dict[str, Any]) -> pd.DataFrame:
    """Last-fifth relative loss change per round (a row each: round, one column per stage)
    and whether every stage is settled."""
    frame = curves(result)
    if frame.empty:
        raise ValueError("this result holds no per-epoch history (made before it was recorded)")
    table = (frame.groupby(["round", "stage"])["loss"]
             .agg(lambda s: last_fifth_change(list(s))).unstack("stage"))
    table["settled"] = (table.fillna(0) < PLATEAU).all(axis=1)
    table.columns.name = None
    return table.reset_index()
