"""The seed paper's analyses (PROTOCOL 5) computed from stored results, as DataFrames.

Table 2 (confusion vs forgetting counts), Figure 1 (one class's accuracy over rounds), the
chosen similar-class pairs and how often they share a superclass, confusion matrices ordered
by superclass, the summaries behind Figures 3-5 (accuracy curves) and 7 (ablation), and
the tables of the run pages (`summary_table`, `average_table`, `headline`).
Every function reads result records (`ddlib.results.read`) or the tidy frame of
`ddlib.results.load`; nothing here trains. `ddlib.plots` draws what these return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import pandas as pd

from . import names
from . import results as store
from .metrics import ERROR_TYPES, average_incremental_accuracy, error_split, per_class_accuracy
from .utils import resolve_path

Result = dict[str, Any]
Results = Union[Result, str, Path, Iterable[Any]]  # a record, a JSON file, a folder, or a list



# ----------------------------------------------------------------------------- inputs


def as_results(obj: Results) -> list[Result]:
    """Result records from a record, a result JSON, a folder of them, or a list of these."""
    if isinstance(obj, dict):
        if "rounds" not in obj or "config" not in obj:
            raise ValueError("not a result record: expected keys 'config' and 'rounds' "
                             "(load one with ddlib.results.read)")
        return [obj]
    if isinstance(obj, (str, Path)):
        path = resolve_path(obj)
        if path.is_dir():
            found = [payload for _, payload in store.scan(path)[0]]
            if not found:
                raise ValueError(f"no result files under {path}")
            return found
        return [store.read(path)]
    if isinstance(obj, pd.DataFrame):
        return [store.read(p) for p in dict.fromkeys(obj["path"])]
    out: list[Result] = []
    for item in obj:
        out += as_results(item)
    return out


def one_result(obj: Result | str | Path) -> Result:
    """A single result record, from a record or a result JSON path."""
    found = as_results(obj)
    if len(found) != 1:
        raise ValueError(f"expected one result, got {len(found)}")
    return found[0]


def display_name(result_or_config: dict) -> str:
    """Name shown in figures and tables: 'iCaRL', 'iCaRL+DD', 'iCaRL+DD (k=2)'."""
    cfg = result_or_config.get("config", result_or_config)
    return names.display_name(names.run_name(cfg["method"], cfg["dd"], cfg["similar_k"]))


def to_frame(results: Results) -> pd.DataFrame:
    """The tidy frame of `ddlib.results.load` (one row per run x round) for given records."""
    rows = []
    for i, payload in enumerate(as_results(results)):
        cfg = payload["config"]
        rows += store.frame_rows(payload, f"<record {i}: {display_name(cfg)} order {cfg['order']}>")
    return pd.DataFrame(rows)


def as_frame(data: pd.DataFrame | Results) -> pd.DataFrame:
    """A `results.load` frame as is; a results folder through `results.load`; records
    through `to_frame`."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, (str, Path)) and resolve_path(data).is_dir():
        frame = store.load(data)
    else:
        frame = to_frame(data)
    if frame.empty:
        raise ValueError("no results to show: the frame is empty (run the sweep first)")
    return frame


def with_rule(frame: pd.DataFrame, rule: str | None, *, top5: bool = False) -> pd.DataFrame:
    """`frame` whose `acc` column is the `rule` accuracy (None: each method's own rule),
    top-1 or, with `top5`, top-5."""
    if rule not in (None, "cnn", "nme"):
        raise ValueError(f"rule={rule!r} is unknown; choose 'cnn' or 'nme'")
    metric = "top5" if top5 else "acc"
    column = metric if rule is None else f"{metric}_{rule}"
    if top5 and frame[column].isna().any():
        runs = sorted(frame.loc[frame[column].isna(), "path"].unique())
        raise ValueError(f"{len(runs)} result(s) have no top-5 accuracy (written before ddlib "
                         f"recorded it), e.g. {runs[0]}; run them again with --fresh")
    return frame.assign(acc=frame[column])


def select(frame: pd.DataFrame, **match: Any) -> pd.DataFrame:
    """Rows matching `match` (None = any); ValueError when the rest still mixes datasets or
    profiles, since curves of different settings must not be averaged together."""
    for key, value in match.items():
        if value is not None:
            frame = frame[frame[key] == value]
    if frame.empty:
        raise ValueError(f"no results match {({k: v for k, v in match.items() if v is not None})}")
    for key in ("dataset", "profile"):
        values = sorted(frame[key].unique())
        if len(values) > 1:
            raise ValueError(f"the results mix {key}s {values}; pick one with {key}=...")
    return frame


def _rule(result: Result, rule: str | None) -> str:
    rule = rule or result["inference"]
    if rule not in ("cnn", "nme"):
        raise ValueError(f"rule={rule!r} is unknown; choose 'cnn' or 'nme'")
    return rule


def _coarse(result: Result) -> np.ndarray:
    if result.get("coarse") is None:
        raise ValueError(f"dataset {result['config']['dataset']!r} has no superclass map "
                         "(coarse labels): this analysis needs a class hierarchy")
    return np.asarray(result["coarse"])


def _record(result: Result, round_idx: int | None) -> dict:
    records = result["rounds"]
    if round_idx is None:
        return records[-1]
    for rec in records:
        if rec["round"] == round_idx:
            return rec
    raise ValueError(f"round {round_idx} is not in this result (rounds 1..{len(records)})")


def _label_round(result: Result) -> dict[int, int]:
    """Round (1-based) at which each class label is introduced."""
    return {c: rec["round"] for rec in result["rounds"] for c in rec["new_classes"]}


def class_label(result: Result, class_name: str) -> int:
    """Label (class-order position) of `class_name`; ValueError listing valid names."""
    names = result["class_names"]
    if class_name not in names:
        shown = ", ".join(repr(n) for n in sorted(names)[:8])
        raise ValueError(f"class {class_name!r} is not in dataset "
                         f"{result['config']['dataset']!r}; valid names include {shown}, ...")
    return names.index(class_name)


# ----------------------------------------------------------------------------- Table 2


def confusion_forgetting(result: Result | str | Path, *, rule: str = "cnn") -> pd.DataFrame:
    """Per round: misclassified test images split into confusion / forgetting / other and
    old/new x same/diff superclass (PROTOCOL 5.1), from the round's confusion matrix."""
    result = one_result(result)
    coarse = _coarse(result)
    rule = _rule(result, rule)
    rows = []
    for rec in result["rounds"]:
        counts = np.asarray(rec[f"confusion_{rule}"])
        num_old = rec["classes_seen"] - len(rec["new_classes"])
        split = error_split(counts, coarse, num_old)
        rows.append({"round": rec["round"], "classes_seen": rec["classes_seen"],
                     "errors": int(counts.sum() - np.trace(counts)), **split})
    return pd.DataFrame(rows).set_index("round")


def table2(baseline: Results, dd: Results, *, rule: str = "cnn",
           types: Iterable[str] = ("confusion", "forgetting"),
           rounds: Iterable[int] | None = None) -> pd.DataFrame:
    """Table 2 layout: rows (type, method), columns rounds 2..R, counts of misclassified
    images. Several orders per side -> per-order mean rounded to an integer (stated in
    `frame.attrs['note']`). `types`: any of ERROR_TYPES."""
    types = list(types)
    unknown = [t for t in types if t not in ERROR_TYPES]
    if unknown:
        raise ValueError(f"unknown error type(s) {unknown}; choose from {list(ERROR_TYPES)}")
    sides = {}
    for runs, want_dd in ((baseline, False), (dd, True)):
        runs = as_results(runs)
        bad = [display_name(r) for r in runs if bool(r["config"]["dd"]) != want_dd]
        if bad:
            raise ValueError(f"expected {'+DD' if want_dd else 'baseline'} results on this "
                             f"side, got {bad}")
        names = {display_name(r) for r in runs}
        if len(names) > 1:
            raise ValueError(f"one method per side, got {sorted(names)}")
        sides[names.pop()] = runs
    orders = [sorted(r["config"]["order"] for r in runs) for runs in sides.values()]
    if orders[0] != orders[1]:
        raise ValueError(f"baseline orders {orders[0]} and +DD orders {orders[1]} differ")
    settings = {(r["config"]["dataset"], r["config"]["increment"], r["config"]["init_classes"])
                for runs in sides.values() for r in runs}
    if len(settings) > 1:
        raise ValueError(f"results mix settings (dataset, increment, init_classes): {settings}")
    blocks = []
    for name, runs in sides.items():
        per_order = [confusion_forgetting(r, rule=rule)[types] for r in runs]
        mean = sum(per_order) / len(per_order)
        blocks.append(mean.T.assign(method=name))
    table = pd.concat(blocks).rename_axis("type").reset_index()
    table["type"] = pd.Categorical(table["type"], categories=types, ordered=True)
    table = table.set_index(["type", "method"]).sort_index(level="type", sort_remaining=False)
    keep = list(rounds) if rounds is not None else [r for r in table.columns if r >= 2]
    missing = [r for r in keep if r not in table.columns]
    if missing:
        raise ValueError(f"rounds {missing} are not in the results (1..{max(table.columns)})")
    table = np.floor(table[keep] + 0.5).astype(int)  # half up: 4.5 -> 5, as read by hand
    table.columns.name = "round"
    n = len(orders[0])
    table.attrs["note"] = (f"{rule.upper()} predictions, order {orders[0][0]}" if n == 1 else
                           f"{rule.upper()} predictions, mean over orders {orders[0]}, "
                           "rounded to an integer")
    return table


def table2_change(table: pd.DataFrame) -> dict[str, float]:
    """Per error type of a `table2` table, the +DD count summed over its rounds relative to
    the baseline's, in % (negative: DD makes fewer such errors)."""
    totals = table.sum(axis=1)
    out = {}
    for kind in table.index.get_level_values("type").unique():
        base, dd = (float(totals[(kind, m)]) for m in _sides(totals[kind].index))
        out[f"{kind}_change_pct"] = 100.0 * (dd - base) / base if base else float("nan")
    return out


def _sides(methods: Iterable[str]) -> tuple[str, str]:
    names = list(methods)
    dd = [m for m in names if "+DD" in m]
    return next(m for m in names if m not in dd), dd[0]


# ----------------------------------------------------------------------------- Figure 1


def class_accuracy(results: Results, class_name: str, *, rule: str | None = None) -> pd.DataFrame:
    """Accuracy (%) of one class at every round from the one that learns it on, per run
    (the method's inference rule unless `rule` is given; PROTOCOL 5.2)."""
    rows = []
    for result in as_results(results):
        label = class_label(result, class_name)
        rule_r = _rule(result, rule)
        first = _label_round(result)[label]
        for rec in result["rounds"][first - 1:]:
            counts = np.asarray(rec[f"confusion_{rule_r}"])
            rows.append({"run": display_name(result), "method": result["config"]["method"],
                         "order": result["config"]["order"],
                         "rule": rule_r, "round": rec["round"],
                         "classes_seen": rec["classes_seen"],
                         "accuracy": per_class_accuracy(counts)[label]})
    return pd.DataFrame(rows)


def figure1_class(results: Results, *, rule: str | None = None, by: str = "drop") -> str:
    """The class Figure 1 follows: of the first round's classes with a superclass sibling
    arriving later, the one whose accuracy falls most, summed over those arrival rounds,
    in the first result (a baseline run; ties go to the smaller label). `by="order"`: the
    first such class by label, so that no trained number decides (the `smoke` profile,
    whose page is compared across CPUs)."""
    if by not in ("drop", "order"):
        raise ValueError(f"by={by!r} is unknown; choose 'drop' or 'order'")
    result = as_results(results)[0]
    when = _label_round(result)
    coarse = _coarse(result)
    best, best_drop = None, -np.inf
    for label in sorted(c for c, r in when.items() if r == 1):
        name = result["class_names"][label]
        arrivals = {when[c] for c in np.flatnonzero(coarse == coarse[label]).tolist()
                    if when.get(c, 1) > 1}
        if not arrivals:
            continue
        if by == "order":
            return name
        acc = class_accuracy(result, name, rule=rule).set_index("round")["accuracy"]
        drop = sum(acc[r - 1] - acc[r] for r in arrivals)
        if drop > best_drop:
            best, best_drop = name, drop
    if best is None:
        raise ValueError("no first-round class has a superclass sibling in a later round")
    return best


def superclass_arrivals(result: Result | str | Path, class_name: str) -> pd.DataFrame:
    """The classes of `class_name`'s superclass (itself included) and the round that
    introduces each, in round order."""
    result = one_result(result)
    coarse = _coarse(result)
    label = class_label(result, class_name)
    when = _label_round(result)
    names, sup = result["class_names"], coarse[label]
    sup_name = result["coarse_names"][sup] if result.get("coarse_names") else str(sup)
    rows = [{"class": names[c], "label": c, "round": when.get(c), "superclass": sup_name}
            for c in np.flatnonzero(coarse == sup).tolist()]
    return pd.DataFrame(rows).sort_values(["round", "label"], na_position="last",
                                          ignore_index=True)


# ----------------------------------------------------------------------------- pairs


def similar_pairs(result: Result | str | Path) -> pd.DataFrame:
    """The expert's (new class -> similar old class) choices of every round, with names,
    feature distance and whether the two share a superclass (None without a hierarchy)."""
    result = one_result(result)
    if not result["config"]["dd"]:
        raise ValueError(f"{display_name(result)} is a baseline run: only +DD runs select "
                         "similar classes")
    names = result["class_names"]
    coarse = None if result.get("coarse") is None else np.asarray(result["coarse"])
    rows = []
    for rec in result["rounds"]:
        for new, old, dist in rec.get("similar_pairs", []):
            rows.append({"round": rec["round"], "new": new, "new_name": names[new],
                         "old": old, "old_name": names[old], "distance": dist,
                         "same_superclass": None if coarse is None
                         else bool(coarse[new] == coarse[old])})
    columns = ["round", "new", "new_name", "old", "old_name", "distance", "same_superclass"]
    return pd.DataFrame(rows, columns=columns)


def pair_superclass_share(results: Results) -> pd.DataFrame:
    """Per run and round: share (%) of chosen pairs inside one superclass, and the chance
    share had each new class taken an old class uniformly at random."""
    rows = []
    for result in as_results(results):
        coarse = _coarse(result)
        pairs = similar_pairs(result)
        for rec in result["rounds"]:
            chosen = pairs[pairs["round"] == rec["round"]]
            if chosen.empty:
                continue
            num_old = rec["classes_seen"] - len(rec["new_classes"])
            old_coarse = coarse[:num_old]
            chance = np.mean([np.mean(old_coarse == coarse[c]) for c in chosen["new"]])
            rows.append({"run": display_name(result), "method": result["config"]["method"],
                         "order": result["config"]["order"],
                         "round": rec["round"], "pairs": len(chosen),
                         "same": int(chosen["same_superclass"].sum()),
                         "share": 100.0 * chosen["same_superclass"].mean(),
                         "chance": 100.0 * float(chance)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- confusion


def confusion_by_superclass(result: Result | str | Path, round_idx: int | None = None, *,
                            rule: str | None = None, normalize: bool = True) -> pd.DataFrame:
    """Confusion matrix of one round (last by default), rows = true, columns = predicted
    class names, grouped by superclass (class order within a group); `normalize` gives % of
    each true class. `attrs['superclasses']` lists (name, first, last) position per group."""
    result = one_result(result)
    rec = _record(result, round_idx)
    counts = np.asarray(rec[f"confusion_{_rule(result, rule)}"], dtype=float)
    n = counts.shape[0]
    coarse = (np.zeros(n, dtype=int) if result.get("coarse") is None
              else np.asarray(result["coarse"])[:n])
    order = np.lexsort((np.arange(n), coarse))  # by superclass, then by label
    values = counts[np.ix_(order, order)]
    if normalize:
        values = 100.0 * values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    names = [result["class_names"][i] for i in order]
    frame = pd.DataFrame(values, index=pd.Index(names, name="true"),
                         columns=pd.Index(names, name="predicted"))
    groups = []
    if result.get("coarse") is not None:
        sup_names = result.get("coarse_names")
        sorted_coarse = coarse[order]
        for s in dict.fromkeys(sorted_coarse.tolist()):
            where = np.flatnonzero(sorted_coarse == s)
            groups.append((sup_names[s] if sup_names else str(s), int(where[0]), int(where[-1])))
    frame.attrs.update(superclasses=groups, round=rec["round"], normalized=normalize)
    return frame


# ----------------------------------------------------------------------------- Figures 3-5, 7


def arm(dd: bool, similar_k: int) -> str:
    """Ablation arm of a run: 'B' for the baseline, else the number of similar classes."""
    return str(int(similar_k)) if dd else "B"


def run_summary(data: pd.DataFrame | Results) -> pd.DataFrame:
    """One row per run: final-round and average incremental accuracy (%, round 1 included)."""
    frame = as_frame(data)
    rows = []
    for path, run in frame.sort_values("round").groupby("path", sort=False):
        first = run.iloc[0]
        rows.append({**{k: first[k] for k in ("dataset", "profile", "increment", "method",
                                              "dd", "similar_k", "order")},
                     "arm": arm(first["dd"], first["similar_k"]),
                     "rounds": len(run), "final_acc": float(run["acc"].iloc[-1]),
                     "avg_inc_acc": average_incremental_accuracy(run["acc"].tolist()),
                     "path": path})
    return pd.DataFrame(rows)


def dd_gains(data: pd.DataFrame | Results, *, similar_k: int = 1, rule: str | None = None,
             top5: bool = False) -> pd.DataFrame:
    """Per (increment, method): average incremental and final accuracy (top-1, or top-5
    with `top5`) of the baseline and of +DD (`similar_k`), means over orders, and DD's gain
    in points."""
    runs = run_summary(with_rule(as_frame(data), rule, top5=top5))
    runs = runs[~runs["dd"] | (runs["similar_k"] == similar_k)]
    means = (runs.groupby(["increment", "method", "dd"])[["avg_inc_acc", "final_acc"]].mean()
             .unstack("dd"))
    table = pd.DataFrame({"avg B": means[("avg_inc_acc", False)],
                          "avg +DD": means[("avg_inc_acc", True)],
                          "final B": means[("final_acc", False)],
                          "final +DD": means[("final_acc", True)]}).dropna()
    table["avg gain"] = table["avg +DD"] - table["avg B"]
    table["final gain"] = table["final +DD"] - table["final B"]
    order = {m: i for i, m in enumerate(names.METHOD_NAMES)}
    table = table.reset_index().sort_values(["increment", "method"],
                                            key=lambda c: c.map(order) if c.name == "method" else c)
    table["method"] = table["method"].map(names.METHOD_NAMES)
    return table.set_index(["increment", "method"]).round(2)


def dd_gain_numbers(data: pd.DataFrame | Results) -> dict[str, float]:
    """Figure 3's prose numbers: mean, min and max average-accuracy gain over the panels,
    and how many panels gain."""
    gains = dd_gains(data)["avg gain"]
    return {"mean_gain": float(gains.mean()), "min_gain": float(gains.min()),
            "max_gain": float(gains.max()), "panels": float(len(gains)),
            "panels_gained": float((gains > 0).sum())}


def accuracy_summary(data: pd.DataFrame | Results, *, dataset: str | None = None,
                     profile: str | None = None, similar_k: int = 1,
                     rule: str | None = None) -> pd.DataFrame:
    """Figures 3-5: per (increment, method, baseline/+DD, classes learned) the mean and
    std (over orders, ddof=1; 0 for one order) of the accuracy, plus the curve's mean
    average incremental accuracy. +DD runs with another `similar_k` are left out; `rule`
    None = each method's own inference rule (iCaRL NME, the others CNN)."""
    frame = with_rule(select(as_frame(data), dataset=dataset, profile=profile), rule)
    frame = frame[~frame["dd"] | (frame["similar_k"] == similar_k)]
    keys = ["increment", "method", "dd"]
    points = (frame.groupby(keys + ["classes_seen"])["acc"]
              .agg(mean="mean", std="std", n="count").reset_index())
    points["std"] = points["std"].fillna(0.0)
    runs = run_summary(frame)
    avg = runs.groupby(keys)["avg_inc_acc"].agg(avg_inc_mean="mean", avg_inc_std="std",
                                                orders="count").reset_index()
    avg["avg_inc_std"] = avg["avg_inc_std"].fillna(0.0)
    return points.merge(avg, on=keys)


def ablation_summary(data: pd.DataFrame | Results, *, dataset: str | None = None,
                     profile: str | None = None, increment: int | None = None,
                     rule: str | None = None) -> pd.DataFrame:
    """Figure 7: per method and arm (B, 0..4), mean and std over orders of the final-round
    and the average incremental accuracy."""
    frame = select(as_frame(data), dataset=dataset, profile=profile, increment=increment)
    frame = with_rule(frame, rule)
    increments = sorted(frame["increment"].unique())
    if len(increments) > 1:
        raise ValueError(f"the results mix increments {increments}; pick one with increment=...")
    runs = run_summary(frame)
    summary = (runs.groupby(["method", "arm"])
               .agg(final_mean=("final_acc", "mean"), final_std=("final_acc", "std"),
                    avg_mean=("avg_inc_acc", "mean"), avg_std=("avg_inc_acc", "std"),
                    orders=("order", "count"))
               .reset_index().fillna({"final_std": 0.0, "avg_std": 0.0}))
    arms = ["B", "0", "1", "2", "3", "4"]
    summary["arm"] = pd.Categorical(summary["arm"], categories=arms, ordered=True)
    return summary.sort_values(["method", "arm"], ignore_index=True)


# ----------------------------------------------------------------------------- run pages


def summary_table(results: Results) -> pd.DataFrame:
    """Top-1 accuracy (%, the method's own inference rule) after every round, one column per
    run, mean over class orders, rounded to 1 decimal; indexed by classes seen (and by
    increment when there are several)."""
    frame = _run_frame(results)
    table = frame.pivot_table(index=["increment", "classes seen"], columns="run",
                              values="acc", aggfunc="mean", sort=False)
    table = table[list(dict.fromkeys(frame["run"]))]  # plan order: baseline, then +DD
    if table.index.get_level_values("increment").nunique() == 1:
        table = table.droplevel("increment")
    table.columns.name = None
    return table.round(1)


def average_table(results: Results) -> pd.DataFrame:
    """Per run: average incremental accuracy and last-round accuracy (%, mean over orders,
    rounded to 1 decimal) and the number of orders behind them."""
    runs = run_summary(to_frame(results))
    runs["run"] = [display_name(row) for row in runs.to_dict("records")]
    table = (runs.groupby(["increment", "run"], sort=False)
             .agg(**{"avg. inc. acc.": ("avg_inc_acc", "mean"),
                     "last acc.": ("final_acc", "mean"), "orders": ("order", "count")}))
    if table.index.get_level_values("increment").nunique() == 1:
        table = table.droplevel("increment")
    return table.round(1)


def headline(results: Results) -> dict[str, float]:
    """The numbers a page's prose quotes (to glue): average incremental accuracy of the
    baseline and of +DD, and the gain, for the first increment; NaN when an arm is missing."""
    runs = run_summary(to_frame(results))
    runs = runs[runs["increment"] == runs["increment"].iloc[0]]
    base = runs.loc[~runs["dd"], "avg_inc_acc"].mean()
    with_dd = runs.loc[runs["dd"], "avg_inc_acc"].mean()
    return {"base_avg": round(float(base), 1), "dd_avg": round(float(with_dd), 1),
            "dd_gain": round(float(with_dd - base), 1)}


def _run_frame(results: Results) -> pd.DataFrame:
    frame = to_frame(results)
    frame["run"] = [display_name(row) for row in frame.to_dict("records")]
    return frame.rename(columns={"classes_seen": "classes seen"})
