"""When is training converged? The rule the `cpu` profile's epochs follow (issue #11).

A stage (the classifier, expert stage A, expert stage B) is *settled* in a round when its
training loss moves by less than `PLATEAU` (relative) over the last fifth of its epochs (at
least two epochs). A schedule is *converged* when every stage is settled in every round and
doubling its epochs (milestones kept at the same fractions) moves the baselines' average
incremental accuracy by less than `MORE_EPOCHS_GAIN` points. Only baselines and the expert's
own accuracy enter the rule, never DD's effect on the classifier.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd

from .names import METHOD_NAMES, parse_run_name
from .utils import project_root

PLATEAU = 0.05          # relative change of the loss over the last fifth of the epochs
MORE_EPOCHS_GAIN = 0.5  # points of average incremental accuracy bought by doubling epochs
_EXPERT_SCHEDULE = ("epochs", "expert_epochs", "expert_balanced_epochs")  # overrides of an expert arm
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


def study(name: str) -> dict[str, Any] | None:
    """`studies/<name>.json` of the project (the committed numbers of a study script), or
    None where there is no project checkout (Colab)."""
    root = project_root()
    path = root / "studies" / f"{name}.json" if root else None
    return json.loads(path.read_text()) if path and path.is_file() else None


def epochs_table(summary: dict[str, Any], profile_epochs: int) -> pd.DataFrame:
    """The epoch arms of `studies/convergence.json`: a row per (method, classifier epochs)
    with average incremental and last-round accuracy by the method's own rule, and `gain`,
    the average's change over the same method at half the epochs (NaN where not run).
    Baselines only: the rule never reads DD's runs."""
    rows = []
    for arm, runs in _epoch_arms(summary):
        for name, numbers in runs.items():
            if parse_run_name(name)[1]:
                continue
            rule = numbers["rule"]
            rows.append({"method": name, "epochs": numbers["overrides"].get("epochs", profile_epochs),
                         "avg_inc_acc": numbers["avg_inc_acc"][rule],
                         "last_acc": numbers["last_acc"][rule]})
    table = pd.DataFrame(rows, columns=["method", "epochs", "avg_inc_acc", "last_acc"])
    table = table.sort_values(["method", "epochs"], ignore_index=True)
    table["gain"] = _gain_over_half(table, "epochs", "avg_inc_acc")
    return table


def _gain_over_half(table: pd.DataFrame, epochs: str, value: str) -> list[float]:
    """Each row's `value` minus the same method's at half its `epochs` (NaN where not run)."""
    half = table.assign(**{epochs: table[epochs] * 2}).set_index(["method", epochs])[value]
    return [row[value] - half.get((row["method"], row[epochs]), float("nan"))
            for _, row in table.iterrows()]


def _steps_text(steps: list[str]) -> str:
    return f"{'; '.join(steps)} points" if steps else "none measured"


def _passes_doubling(gain: float) -> bool:
    """The rule's doubling test on the gain a doubling bought (NaN, not run: False)."""
    return abs(gain) < MORE_EPOCHS_GAIN


def _doubling_verdict(schedule: str, doubled: pd.Series, settled: bool = True) -> str:
    """The rule's verdict on `schedule`, from the gain its doubling bought (`doubled`: the
    doubled row's gain, empty or NaN where not run) and whether its loss settled."""
    if doubled.empty or doubled.isna().all():
        return f"{schedule} have not been doubled for this method"
    if not settled:
        return f"{schedule} fail the rule: the loss has not settled in every round"
    if _passes_doubling(doubled.iloc[0]):
        return f"{schedule} pass the doubling test"
    return f"{schedule} fail the doubling test"


def _epoch_arms(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(arm, runs) for arm, runs in summary.items() if re.fullmatch(r"epochs\d+", arm)]


def dd_epochs_table(summary: dict[str, Any], profile_epochs: int) -> pd.DataFrame:
    """The epoch arms that ran a method with and without DD: a row per (method, classifier
    epochs) with both runs' average incremental and last-round accuracy (the method's own
    rule), DD's gain in each (points) and the expert's mean lead over the same-round
    baseline classifier on its classes (NaN where not measured)."""
    rows = []
    for _, runs in _epoch_arms(summary):
        for name, dd in runs.items():
            method, with_dd, _ = parse_run_name(name)
            base = runs.get(method)  # a baseline's run name is its method's
            if not with_dd or base is None:
                continue
            rule = dd["rule"]
            rows.append({"method": method,
                         "epochs": dd["overrides"].get("epochs", profile_epochs),
                         "baseline": base["avg_inc_acc"][rule], "dd": dd["avg_inc_acc"][rule],
                         "gain": dd["avg_inc_acc"][rule] - base["avg_inc_acc"][rule],
                         "baseline_last": base["last_acc"][rule], "dd_last": dd["last_acc"][rule],
                         "gain_last": dd["last_acc"][rule] - base["last_acc"][rule],
                         "expert_lead": dd.get("expert_lead", float("nan"))})
    columns = ["method", "epochs", "baseline", "dd", "gain", "baseline_last", "dd_last",
               "gain_last", "expert_lead"]
    return pd.DataFrame(rows, columns=columns).sort_values(["method", "epochs"], ignore_index=True)


def dd_epochs_verdict(table: pd.DataFrame) -> str:
    """One sentence per method from `dd_epochs_table`: DD's gain at each number of epochs."""
    if table.empty:
        return "The study holds no method run with and without DD at the same epochs."
    return "\n".join(
        f"- **{METHOD_NAMES.get(method, method)}**: DD's gain in average incremental accuracy "
        + "; ".join(f"{r.gain:+.2f} points at {int(r.epochs)} epochs (last round {r.gain_last:+.2f}"
                    + (f", expert lead {r.expert_lead:+.2f}" if r.expert_lead == r.expert_lead else "")
                    + ")" for r in rows.itertuples()) + "."
        for method, rows in table.groupby("method", sort=False))


def expert_epochs_table(summary: dict[str, Any], profile: dict[str, Any]) -> pd.DataFrame:
    """The +DD runs that change only the expert's epochs (the classifier's kept at
    `profile`'s): a row per (method, stage A epochs, stage B epochs) with the expert's
    accuracy on its t classes after stage B (mean over rounds 2..R), the largest last-fifth
    loss change of either stage in any round, and `gain`, the accuracy's change over the
    same method at half the expert's epochs (NaN where not run). The expert's own accuracy
    only: never the classifier DD trains."""
    rows = []
    for runs in summary.values():
        for name, numbers in runs.items():
            method, with_dd, _ = parse_run_name(name)
            overrides = numbers["overrides"]
            if (not with_dd or set(overrides) - set(_EXPERT_SCHEDULE)
                    or overrides.get("epochs", profile["epochs"]) != profile["epochs"]):
                continue
            accs = numbers["expert_acc_b"]
            changes = numbers["expert_a_last_fifth_change"] + numbers["expert_b_last_fifth_change"]
            rows.append({"method": method,
                         "expert_epochs": overrides.get("expert_epochs", profile["expert_epochs"]),
                         "expert_balanced_epochs": overrides.get("expert_balanced_epochs",
                                                                 profile["expert_balanced_epochs"]),
                         "expert_acc": sum(accs) / len(accs),
                         "largest_change": max(changes, default=float("nan"))})
    columns = ["method", "expert_epochs", "expert_balanced_epochs", "expert_acc", "largest_change"]
    table = pd.DataFrame(rows, columns=columns).sort_values(["method", "expert_epochs"],
                                                            ignore_index=True)
    table["gain"] = _gain_over_half(table, "expert_epochs", "expert_acc")
    return table


def expert_epochs_verdict(table: pd.DataFrame, profile: dict[str, Any]) -> str:
    """One sentence per method from `expert_epochs_table`: what each doubling of the
    expert's epochs bought its accuracy, and whether the profile's pass the rule (loss
    settled in every round, under `MORE_EPOCHS_GAIN` from doubling)."""
    if table.empty:
        return "The study holds no run that changes the expert's epochs alone."
    own = profile["expert_epochs"]
    lines = []
    for method, rows in table.groupby("method", sort=False):
        steps = [f"{int(r.expert_epochs) // 2} + {int(r.expert_balanced_epochs) // 2} → "
                 f"{int(r.expert_epochs)} + {int(r.expert_balanced_epochs)}: {r.gain:+.1f}"
                 for r in rows.itertuples() if r.gain == r.gain]
        settled = (rows.loc[rows["expert_epochs"] == own, "largest_change"] < PLATEAU).all()
        verdict = _doubling_verdict(f"{own} + {profile['expert_balanced_epochs']} epochs",
                                    rows.loc[rows["expert_epochs"] == 2 * own, "gain"], settled)
        lines.append(f"- **{METHOD_NAMES.get(method, method)}**: the expert's accuracy on its "
                     f"classes per doubling of its epochs (stage A + B), "
                     f"{_steps_text(steps)}: {verdict}.")
    return "\n".join(lines)


# The profile's reductions of the paper's setting that a study arm can undo one at a time.
REDUCTIONS = {"image_size": "image size", "width": "network width",
              "train_per_class": "training images per class"}


def reductions_table(summary: dict[str, Any], profile: dict[str, Any]) -> pd.DataFrame:
    """The arms that undo one of `profile`'s `REDUCTIONS` (all else at the profile's), after
    the profile's own runs (the arm whose only override is the profile's epochs): a row per
    (method, change) with the baseline's and +DD's average incremental accuracy (the
    method's own rule), DD's gain, the expert's mean lead over the same-round baseline
    classifier on its classes, and the baseline's largest last-fifth loss change after
    round 1 (is it still settled?). NaN where an arm lacks the run; a method no arm
    undoes a reduction for is left out."""
    rows = []
    for runs in summary.values():
        overrides = dict(next(iter(runs.values()))["overrides"])
        if overrides.get("epochs") == profile["epochs"]:
            del overrides["epochs"]
        if len(overrides) > 1 or set(overrides) - set(REDUCTIONS):
            continue
        field, value = next(iter(overrides.items()), (None, None))
        change = f"{REDUCTIONS[field]} {profile[field]} → {value}" if field else "none (the profile)"
        for method in dict.fromkeys(parse_run_name(name)[0] for name in runs):
            base, dd = runs.get(method, {}), runs.get(f"{method}+dd", {})
            rule = (base or dd)["rule"]
            avg = {arm: numbers["avg_inc_acc"][rule] if numbers else float("nan")
                   for arm, numbers in (("baseline", base), ("dd", dd))}
            rows.append({"method": method, "change": change, "field": field, **avg,
                         "gain": avg["dd"] - avg["baseline"],
                         "expert_lead": dd.get("expert_lead", float("nan")),
                         "baseline_change": max(base.get("classifier_last_fifth_change", [])[1:],
                                                default=float("nan"))})
    columns = ["method", "change", "field", "baseline", "dd", "gain", "expert_lead",
               "baseline_change"]
    table = pd.DataFrame(rows, columns=columns)
    table = table[table["method"].isin(table.loc[table["field"].notna(), "method"])]
    rank = {field: i for i, field in enumerate(REDUCTIONS, start=1)}
    table["rank"] = [rank.get(field, 0) for field in table["field"]]
    return table.sort_values(["method", "rank"], ignore_index=True).drop(columns="rank")


def reductions_verdict(table: pd.DataFrame) -> str:
    """One sentence per undone reduction from `reductions_table`: what it changes in the
    baseline and in DD's gain against the profile's runs of the same method, and which of
    them move DD's gain by at least `MORE_EPOCHS_GAIN` points."""
    lines, moved = [], []
    for method, rows in table.groupby("method", sort=False):
        own = rows[rows["field"].isna()]
        if own.empty:
            continue
        own = own.iloc[0]
        name = METHOD_NAMES.get(method, method)
        for r in rows[rows["field"].notna()].itertuples():
            if r.baseline != r.baseline:
                continue
            text = f"- **{name}, {r.change}**: the baseline {r.baseline - own.baseline:+.2f} points"
            if r.gain == r.gain and own.gain == own.gain:
                text += (f"; DD's gain {own.gain:+.2f} → {r.gain:+.2f} (expert lead "
                         f"{own.expert_lead:+.2f} → {r.expert_lead:+.2f})")
                if abs(r.gain - own.gain) >= MORE_EPOCHS_GAIN:
                    moved.append(f"{name}: {r.change}")
            lines.append(text + ".")
    if not lines:
        return "The study holds no run that undoes one of the profile's reductions."
    lines.append(f"Undoing a reduction moves DD's gain by {MORE_EPOCHS_GAIN} points or more in: "
                 + ("; ".join(moved) if moved else "none measured") + ".")
    return "\n".join(lines)


def single_task_table(measured: dict[str, Any]) -> pd.DataFrame:
    """`studies/generator.json` as a table: a row per (fine amplitude, share of
    superclass-only images, classes, epochs) with test accuracy, the last epoch's training
    accuracy (augmented images) and the share of test errors inside the true superclass."""
    rows = []
    for key, numbers in measured.items():
        setting = dict(part.split("=") for part in key.split())
        rows.append({"fine_amp": float(setting["fine_amp"]),
                     "coarse_only": float(setting["coarse_only"]), "classes": int(setting["classes"]),
                     "epochs": int(setting["epochs"]), "test_acc": numbers["test_acc"],
                     "train_acc": numbers["train_acc_last_epoch"],
                     "errors_in_superclass": numbers["errors_inside_superclass"]})
    return pd.DataFrame(rows).sort_values(["fine_amp", "coarse_only", "classes", "epochs"],
                                          ignore_index=True)


def epochs_verdict(table: pd.DataFrame, profile_epochs: int) -> str:
    """One sentence per method from `epochs_table`: what each doubling of the epochs bought,
    whether the profile's epochs pass the rule's doubling test, and the fewest measured
    epochs that pass it."""
    lines = []
    for method, rows in table.groupby("method", sort=False):
        steps = [f"{int(r.epochs) // 2} → {int(r.epochs)}: {r.gain:+.1f}"
                 for r in rows.itertuples() if r.gain == r.gain]
        verdict = _doubling_verdict(f"{profile_epochs} epochs",
                                    rows.loc[rows["epochs"] == 2 * profile_epochs, "gain"])
        passing = [int(r.epochs) // 2 for r in rows.itertuples() if _passes_doubling(r.gain)]
        fewest = (f"the fewest epochs that pass it: {passing[0]}" if passing
                  else "no measured doubling passes it")
        lines.append(f"- **{METHOD_NAMES.get(method, method)}**: average incremental accuracy "
                     f"per doubling of the epochs, {_steps_text(steps)}: {verdict}; {fewest}.")
    return "\n".join(lines)


def single_task_verdict(table: pd.DataFrame, fine_amp: float, coarse_only: float) -> str:
    """The single-task study of one generator setting, one sentence per task size: accuracy
    at the fewest and the most epochs measured, and the train-test gap at the most."""
    lines = []
    rows = table[(table["fine_amp"] == fine_amp) & (table["coarse_only"] == coarse_only)]
    for classes, task in rows.groupby("classes"):
        first, last = task.iloc[0], task.iloc[-1]
        longer = f", {last.test_acc:.1f} % after {int(last.epochs)}" if len(task) > 1 else ""
        lines.append(f"- **{classes} classes**: test accuracy {first.test_acc:.1f} % after "
                     f"{int(first.epochs)} epochs{longer}; "
                     f"training accuracy then {last.train_acc:.1f} % (augmented images), a gap "
                     f"of {last.train_acc - last.test_acc:+.1f} points; "
                     f"{last.errors_in_superclass:.0f} % of the errors inside the superclass.")
    return "\n".join(lines)


def forgetting_verdict(epochs: pd.DataFrame, tasks: pd.DataFrame, fine_amp: float,
                       coarse_only: float) -> str:
    """The longest epoch arm's last-round accuracy of each method against the same network
    trained on every class at once (the single-task study's longest 100-class run): how much
    incremental training loses to joint training on this data."""
    joint = tasks[(tasks["fine_amp"] == fine_amp) & (tasks["coarse_only"] == coarse_only)
                  & (tasks["classes"] == tasks["classes"].max())]
    if joint.empty or epochs.empty:
        return "The studies hold no joint-training run of this data to compare with."
    ceiling = joint.iloc[-1]
    longest = epochs[epochs["epochs"] == epochs["epochs"].max()]
    ends = ", ".join(f"{METHOD_NAMES.get(r.method, r.method)} {r.last_acc:.1f} %"
                     for r in longest.itertuples())
    gap = ceiling.test_acc - longest["last_acc"].mean()
    return (f"After the last round at {int(longest['epochs'].iloc[0])} epochs: {ends}, against "
            f"{ceiling.test_acc:.1f} % for the same network trained on all "
            f"{int(ceiling.classes)} classes at once ({int(ceiling.epochs)} epochs), a gap of "
            f"{gap:.1f} points (CIFAR-100 with ResNet-32: about 50 % against 70 %).")
