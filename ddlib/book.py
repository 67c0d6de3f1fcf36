"""What the book's pages need besides the experiments: glue, the book's setting, exhibits.

- `glue(values)`: MyST-NB glue of a page's key numbers (a no-op where myst_nb is missing,
  e.g. Colab), so prose can quote them with {glue:text}`key:.1f`.
- `setting(profile, dataset)`: which profile and dataset an exhibit page shows. `make book`
  exports DDBOOK_PROFILE and DDBOOK_DATASETS for the whole build; explicit values win; the
  fallback is the committed default (`smoke`, `synthetic`), which is what nbval compares.
- `exhibit(...)`: the results of one exhibit page from the store, shown as the line that says
  what produced them, or, when this build did not run them, the command that does (and,
  with `make_missing=True`, as in Colab, trains them right there).
- `Table` and the `*_table` helpers: the analyses' frames as tables for reading (display
  names, no index column, rounded numbers, no spread over a single class order).
- `scope(profile, ...)`: the sentence saying what this build's grid leaves out of the paper's.
- `expert_init_conclusion(results)`: the expert_init page's conclusion, worded from its
  numbers.
- `orders_study(part)`: the committed class-orders study (`studies/orders.py`), one part
  of it per increment, for the Figure 3 and expert_init pages.

The run grid the exhibits expect is `ddlib.grid`; the execution-cache step of `make book`
is `python -m ddlib book-cache` (`ddlib.book_cache`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import analysis, convergence, mechanism
from . import results as store
from .names import DATASET_LABELS, METHOD_NAMES
from .config import (
    DATASETS,
    IMAGENET_DATASETS,
    METHOD_ORDER,
    PROFILES,
    RunConfig,
    check_choice,
)
from .grid import grid
from .plan import plan, run_all

PROFILE_VAR, DATASETS_VAR = "DDBOOK_PROFILE", "DDBOOK_DATASETS"
# Datasets as the pages and figures name them (the paper's names).
def glue(values: dict[str, Any]) -> None:
    """Glue every `key: value` for this page's prose (hidden outputs)."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab or plain Jupyter: the prose shows the roles, nothing breaks
        return
    for key, value in values.items():
        myst_glue(key, value, display=False)


def setting(profile: str | None = None, dataset: str | None = None) -> dict[str, str]:
    """The profile and dataset a page shows: the given ones, else the book build's
    (DDBOOK_PROFILE, first of DDBOOK_DATASETS), else `smoke` on `synthetic`."""
    datasets = [d for d in os.environ.get(DATASETS_VAR, "").split(",") if d.strip()]
    chosen = {"profile": profile or os.environ.get(PROFILE_VAR) or "smoke",
              "dataset": dataset or (datasets[0].strip() if datasets else "synthetic")}
    check_choice("profile", chosen["profile"], PROFILES)
    check_choice("dataset", chosen["dataset"], DATASETS)
    return chosen


class Exhibit:
    """The results one exhibit page shows: the runs of `profile` on `dataset` in the store
    that match `match` and at least one dict of `require` (the arms the page plots, so
    that "built from N runs" counts what is drawn); it is `ready` when, for each dict in
    `require`, some run matches it.

    Shown in a notebook, it is a line that states what produced the page (profile, dataset,
    orders, epochs, runs and their measured time), or, when this build lacks the runs, what
    is missing and the command that produces them. `show(func, ...)` calls `func(...)` only
    when ready, so a page without its runs shows that message and no empty axes.
    """

    def __init__(self, title: str, *, profile: str, dataset: str, results_dir: str = "results",
                 require: tuple[dict[str, Any], ...] = ({},), **match: Any) -> None:
        import pandas as pd

        self.title, self.profile, self.dataset = title, profile, dataset
        self.results_dir, self.match, self.require = results_dir, match, require
        # Current runs at the profile's values only, unless the page names the field:
        # Figure 1's dedicated order, the scratch-started expert, a study's longer schedule
        # or older images in the same store must not enter another page's means.
        asked = set(match).union(*require)
        found = [(path, payload) for path, payload in store.scan(results_dir)[0]
                 if store.matches(payload, profile=profile, dataset=dataset, **match)
                 and any(store.matches(payload, **need) for need in require)
                 and not store.overridden(payload) - asked and not store.is_stale(payload)]
        self.results: list[dict[str, Any]] = [payload for _, payload in found]
        self.frame = pd.DataFrame([row for path, payload in found
                                   for row in store.frame_rows(payload, str(path))])
        self.missing = [need for need in require if not self.runs(**need)]

    @property
    def ready(self) -> bool:
        return bool(self.results) and not self.missing

    @property
    def grid(self) -> dict[str, Any]:
        return grid(self.profile)

    def runs(self, **match: Any) -> list[dict[str, Any]]:
        """The results whose config matches `match` (e.g. method="ucir", dd=True)."""
        return [r for r in self.results if store.matches(r, **match)]

    def show(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """`func(*args, **kwargs)` when ready, else None (nothing is drawn)."""
        return func(*args, **kwargs) if self.ready else None

    def glue(self, keys: list[str], func: Any, *args: Any, **kwargs: Any) -> None:
        """Glue `func(*args, **kwargs)` (a dict with exactly `keys`) for the prose; NaN for
        every key when not ready, so the page still builds and says 'nan'. Returns nothing,
        so the cell shows nothing but the glue."""
        values = func(*args, **kwargs) if self.ready else dict.fromkeys(keys, float("nan"))
        if sorted(values) != sorted(keys):
            raise ValueError(f"{func.__name__} gave {sorted(values)}, the page uses {keys}")
        glue(values)

    def make(self, *, device: str = "auto") -> Exhibit:
        """Train the runs this page plots that the store lacks (finished ones are read
        back), for the grid of the exhibit's profile, and return the refreshed exhibit.
        For a notebook without `make book` behind it, e.g. in Colab."""
        book_grid = grid(self.profile)
        configs = []
        for need in self.require:
            want = {**self.match, **need}
            configs += plan(self.profile, method=want.get("method", list(METHOD_ORDER)),
                            dataset=self.dataset, dd=want.get("dd", [False, True]),
                            increments=want.get("increment", list(book_grid["increments"])),
                            orders=want.get("order", list(book_grid["orders"])),
                            similar_k=want.get("similar_k"), device=device,
                            results_dir=self.results_dir,
                            class_order_seed=want.get("class_order_seed"),
                            expert_init=want.get("expert_init"))
        run_all(configs)
        return Exhibit(self.title, profile=self.profile, dataset=self.dataset,
                       results_dir=self.results_dir, require=self.require, **self.match)

    def command(self) -> str:
        """The command that produces this exhibit's runs."""
        if self.dataset in IMAGENET_DATASETS:  # only the paper profile has ImageNet settings
            return (f"python -m ddlib sweep --profile paper --datasets {self.dataset} "
                    "--data-dir /path/to/imagenet   # holds train/ and val/; a GPU\n"
                    f"make book PROFILE=paper DATASETS=cifar100,{self.dataset}")
        return f"make book PROFILE={self.profile} DATASETS={self.dataset}"

    def provenance(self) -> str:
        configs = [r["config"] for r in self.results]

        def values(key: str, dd_only: bool = False) -> str:
            return _listing(sorted({c[key] for c in configs if c["dd"] or not dd_only}))

        def weights(key: str, dd_only: bool = False) -> str:
            return _listing([f"{w:g}" for w in sorted({c[key] for c in configs
                                                       if c["dd"] or not dd_only})])

        dd = any(c["dd"] for c in configs)
        expert = (f" (expert {values('expert_epochs', True)} + "
                  f"{values('expert_balanced_epochs', True)})" if dd else "")
        losses = (f"λ1 = {weights('lambda_old')}, To = {weights('temperature_old')}"
                  + (f", λ2 = {weights('lambda_dd', True)}, Tn = "
                     f"{weights('temperature_new', True)}" if dd else ""))
        seeds = sorted({c.get("class_order_seed") for c in configs} - {None})
        orders = (f"the dedicated class order of numpy seed {_listing(seeds)}" if seeds else
                  ("class order " if len({c["order"] for c in configs}) == 1
                   else "class orders ") + values("order"))
        took = duration(sum(r.get("wall_time_s", 0.0) for r in self.results))
        runs = f"{len(configs)} run" + ("s" if len(configs) > 1 else "")
        return (f"**{self.title}** is built from {runs} in `{self.results_dir}/`, "
                f"{took} of training (measured): the `{self.profile}` profile on "
                f"{DATASET_LABELS.get(self.dataset, self.dataset)} data; {orders}; "
                f"{values('increment')} classes per round; {values('epochs')} epochs per "
                f"round{expert}; memory {values('memory')} images; {losses}.")

    def _repr_markdown_(self) -> str:
        if self.ready:
            return self.provenance()
        # Which run is missing, when some of the page's runs exist; else the whole page is.
        wanted = ", ".join(f"{k}={v}" for k, v in {**self.match, **self.missing[0]}.items()
                           if v is not None) if self.results and self.missing else ""
        return (f"**{self.title}: not run in this build.** The results store "
                f"`{self.results_dir}/` has no `{self.profile}`-profile run on "
                f"{DATASET_LABELS.get(self.dataset, self.dataset)}"
                + (f" with {wanted}" if wanted else "")
                + f". This produces them:\n\n```bash\n{self.command()}\n```\n\n"
                "In a notebook of its own (Colab, Jupyter), setting the parameter "
                "`make_missing = True` trains them here instead.")

    def __repr__(self) -> str:
        return self._repr_markdown_()


def exhibit(title: str, profile: str | None = None, dataset: str | None = None, *,
            results_dir: str = "results", require: tuple[dict[str, Any], ...] = ({},),
            make_missing: bool = False, **match: Any) -> Exhibit:
    """The `Exhibit` of a page: `setting(profile, dataset)` decides what it shows. With
    `make_missing` (off in the book build, whose sweep made the runs) a page that lacks
    runs trains them first (`Exhibit.make`)."""
    chosen = setting(profile, dataset)
    ex = Exhibit(title, profile=chosen["profile"], dataset=chosen["dataset"],
                 results_dir=results_dir, require=require, **match)
    return ex.make() if make_missing and not ex.ready else ex


def duration(seconds: float) -> str:
    """'42 s', '12 min', '1.5 h': a measured time as the prose states it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _listing(values: Any, last: str = "and") -> str:
    """'5', '5 and 10', '0, 1 and 2'."""
    items = [str(v) for v in values]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def scope(profile: str, *parts: str) -> Any:
    """The sentence a page shows about this build's grid against the paper's, for the
    `parts` it depends on: "orders", "increments", "ablation", "expert_init". Generated
    from `ddlib.grid`, so it follows whatever profile built the book."""
    from IPython.display import Markdown

    ours, paper = grid(profile), grid("paper")
    say = {
        "orders": lambda g: ("class order " if len(g["orders"]) == 1 else "class orders ")
        + _listing(g["orders"]),
        "increments": lambda g: _listing(g["increments"]) + " classes per round",
        "ablation": lambda g: "the ablation of "
        + _listing([METHOD_NAMES[m] for m in g["ablation_methods"]]),
        "expert_init": lambda g: ("both expert starts for "
                                  + _listing([METHOD_NAMES[m] for m in g["expert_init_methods"]])
                                  if g["expert_init_methods"] else "no scratch-started expert"),
    }
    unknown = sorted(set(parts) - set(say))
    if unknown:
        raise ValueError(f"scope parts {unknown} are unknown; choose from {sorted(say)}")
    differ = [p for p in parts if say[p](ours) != say[p](paper)]
    if not differ:
        return Markdown(f"This `{profile}` build runs the paper's whole grid for this page: "
                        + "; ".join(say[p](paper) for p in parts) + ".")
    return Markdown(f"This `{profile}` build runs " + "; ".join(say[p](ours) for p in differ)
                    + ". The paper's grid has " + "; ".join(say[p](paper) for p in differ)
                    + ": `make book PROFILE=paper DATASETS=cifar100` runs it, on a GPU.")


class Table:
    """A table for reading: shown as a Markdown table (which the book renders in its own
    style; columns of numbers right-aligned), as plain text elsewhere. `frame`'s columns
    are the headers, its index is not shown; floats get `digits` decimals, and the columns
    in `signed` a sign (gains)."""

    def __init__(self, frame: Any, *, digits: int = 1, signed: tuple[str, ...] = ()) -> None:
        self.frame, self.digits, self.signed = frame.reset_index(drop=True), digits, signed

    def _cell(self, column: str, value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            if np.isnan(value):
                return ""
            return f"{value:+.{self.digits}f}" if column in self.signed else \
                f"{value:.{self.digits}f}"
        return str(value).replace("|", "\\|")

    def _repr_markdown_(self) -> str:
        frame = self.frame
        numeric = [all(v == "" or isinstance(v, (int, float, np.integer, np.floating)) and
                       not isinstance(v, bool) for v in frame[c]) for c in frame.columns]
        lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
                 "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
        lines += ["| " + " | ".join(self._cell(c, v) for c, v in row.items()) + " |"
                  for _, row in frame.iterrows()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        shown = self.frame.copy()
        for column in shown.columns:
            shown[column] = [self._cell(column, v) for v in shown[column]]
        return shown.to_string(index=False)


def _spread(mean: Any, std: Any, several: bool) -> Any:
    """'34.1 ± 1.2' over several orders; the mean alone (a number) over one."""
    if not several:
        return mean
    return [f"{m:.1f} ± {s:.1f}" for m, s in zip(mean, std)]


def gains_table(data: Any, *, top5: bool = False) -> Table:
    """Figures 3-5's table (`analysis.dd_gains` of the runs' frame `data`): per classes per
    round and method, the average incremental and final accuracy of the baseline and +DD
    (top-1, or top-5 with `top5`), and DD's gain, in points."""
    frame = analysis.dd_gains(data, top5=top5).reset_index()
    orders = data["order"].nunique()
    over = "" if orders == 1 else f" (mean of {orders} orders)"
    return Table(frame.rename(columns={
        "increment": "Classes / round", "method": "Method",
        "avg B": "Avg. inc. acc., baseline" + over, "avg +DD": "+DD", "avg gain": "Gain",
        "final B": "Final acc., baseline" + over, "final +DD": "+DD ", "final gain": "Gain "})
        [["Classes / round", "Method", "Avg. inc. acc., baseline" + over, "+DD", "Gain",
          "Final acc., baseline" + over, "+DD ", "Gain "]], signed=("Gain", "Gain "))


def ablation_table(data: Any) -> Table:
    """Figure 7's table (`analysis.ablation_summary` of the runs' frame `data`): per method
    and arm the final and average incremental accuracy, "mean ± std" only when there are
    several orders."""
    summary = analysis.ablation_summary(data)
    several = bool((summary["orders"] > 1).any())
    arm = {"B": "baseline (no expert)", "0": "k = 0 (new classes only)"}
    return Table(summary.assign(
        Method=[METHOD_NAMES[m] for m in summary["method"]],
        Arm=[arm.get(str(a), f"k = {a}") for a in summary["arm"]],
        **{"Final acc. (%)": _spread(summary["final_mean"], summary["final_std"], several),
           "Avg. inc. acc. (%)": _spread(summary["avg_mean"], summary["avg_std"], several)})
        [["Method", "Arm", "Final acc. (%)", "Avg. inc. acc. (%)"]])


def expert_init_table(results: Any) -> Table:
    """The expert_init page's table (`mechanism.init_summary`): per method, the baseline and
    +DD with the expert started from the old model and from scratch, average incremental
    and last-round accuracy by the method's own rule, "mean ± std" only over several
    orders."""
    summary = mechanism.init_summary(results)
    several = bool((summary["orders"] > 1).any())
    return Table(summary.assign(
        Method=[METHOD_NAMES[m] for m in summary["method"]],
        Arm=[mechanism.INIT_ARMS[a] for a in summary["arm"]],
        **{"Avg. inc. acc. (%)": _spread(summary["avg_mean"], summary["avg_std"], several),
           "Last-round acc. (%)": _spread(summary["last_mean"], summary["last_std"], several)})
        [["Method", "Arm", "Avg. inc. acc. (%)", "Last-round acc. (%)"]])


_STARTS = {"old": "old-model", "scratch": "scratch"}


def expert_init_conclusion(results: Any) -> Any:
    """The expert_init page's conclusion, one point per method, worded from
    `mechanism.init_comparison`: which start gives the higher average incremental accuracy
    and by how much, how the two experts score on their classes, and how many class orders
    stand behind the difference."""
    from IPython.display import Markdown

    points = []
    for row in mechanism.init_comparison(results).to_dict("records"):
        lead = row["old_lead"]
        if round(abs(lead), 1) == 0:
            verdict = "the two starts are level"
        else:
            ahead = "old" if lead > 0 else "scratch"
            verdict = f"the {_STARTS[ahead]} start is ahead by {abs(lead):.1f} points"
        if row["orders"] == 1:
            spread = ("This is a single class order: nothing here says how much of the "
                      "difference another order would keep.")
        else:
            stds = (row["old_std"], row["scratch_std"])
            spread = (f"Mean of {row['orders']} class orders; the difference is "
                      + ("larger than" if abs(lead) > max(stds) else "within")
                      + f" their standard deviations ({stds[0]:.1f} and {stds[1]:.1f}).")
        points.append(
            f"- **{METHOD_NAMES[row['method']]}**: average incremental accuracy "
            f"{row['old']:.1f} % with the expert started from the old model, "
            f"{row['scratch']:.1f} % from scratch (baseline {row['baseline']:.1f} %): "
            f"{verdict}. On its t classes the old-model expert scores "
            f"{row['expert_old']:.1f} %, the scratch one {row['expert_scratch']:.1f} % (mean "
            f"over the rounds with an expert). {spread}")
    return Markdown("\n".join(points))


_STUDY_SIGNED = ("Gain", "Expert lead", "Confusion %", "Forgetting %", "Other %",
                 "Gain (old)", "Gain (scratch)", "Expert lead (old)", "Expert lead (scratch)")


# part of the study -> (its table, its verdict, the expert starts it compares with the baseline)
_STUDY_PARTS = {"accuracy": (mechanism.study_accuracy, None, ()),
                "pairs": (mechanism.study_pairs, mechanism.study_verdict, ("old",)),
                "starts": (mechanism.study_init, mechanism.study_init_verdict, ("old", "scratch"))}


def orders_study(part: str) -> Any:
    """One part of `studies/orders.json` as Markdown, per block of runs (classes per round,
    and classifier epochs where not the profile's, as in "20@48"): "accuracy"
    (`mechanism.study_accuracy`), "pairs" (`study_pairs` and its verdict) or "starts"
    (`study_init` and its verdict). Blocks without the runs a part compares (a baseline
    and +DD on one order; both expert starts) are left out. Without a project checkout
    (Colab) a sentence saying where the numbers are."""
    from IPython.display import Markdown

    check_choice("part", part, _STUDY_PARTS)
    study = convergence.study("orders")
    if study is None:
        return Markdown("No numbers of the study here: they are committed in the project's "
                        "repository (`studies/orders.json`), which this installation does "
                        "not hold.")
    tabulate, verdict, arms = _STUDY_PARTS[part]
    blocks = []
    for block, runs in study.items():
        if not mechanism.study_has_pairs(runs, *arms):
            continue
        frame = tabulate(runs)
        table = Table(frame, digits=2, signed=_STUDY_SIGNED)._repr_markdown_()
        increment, _, epochs = block.partition("@")
        title = f"{increment} classes per round" + (f", {epochs} classifier epochs" if epochs else "")
        blocks.append(f"**{title}**\n\n{table}"
                      + (f"\n\n{verdict(frame)}" if verdict else ""))
    return Markdown("\n\n".join(blocks))


def class_table(results: Any, class_name: str) -> Table:
    """Figure 1's numbers (`analysis.class_accuracy`): one row per round, one column per
    run (mean over orders), the accuracy on `class_name`."""
    track = analysis.class_accuracy(results, class_name)
    rule = {run: f"{run} ({r.upper()})" for run, r in zip(track["run"], track["rule"])}
    wide = track.pivot_table(index=["round", "classes_seen"], columns="run", values="accuracy",
                             aggfunc="mean", sort=False).reset_index()
    return Table(wide.rename(columns={"round": "Round", "classes_seen": "Classes learned",
                                      **rule}), digits=0)


def arrivals_table(result: Any, class_name: str) -> Table:
    """The classes of `class_name`'s superclass and the round that brings each
    (`analysis.superclass_arrivals`)."""
    arrivals = analysis.superclass_arrivals(result, class_name)
    return Table(arrivals.rename(columns={"class": "Class", "superclass": "Superclass",
                                          "round": "Arrives in round"})
                 [["Class", "Superclass", "Arrives in round"]])


def errors_table(table: Any) -> Table:
    """Table 2 from `analysis.table2`: misclassified test images per kind of error, run and
    round."""
    frame = table.reset_index()
    frame.columns = ["Errors", "Run", *(f"Round {c}" for c in frame.columns[2:])]
    frame["Errors"] = frame["Errors"].str.capitalize()
    return Table(frame, digits=0)


def table1(profile: str, datasets: list[str] | None = None, *,
           data_dir: str = "data") -> Table:
    """Table 1 from the dataset objects: classes, superclasses, images and image size of
    each dataset of the build (loaded as its runs load it); a dataset that is not on this
    machine gets a row saying so. A `Table`; its `frame` has one row per dataset."""
    import pandas as pd

    from .run import load_scenario

    rows = []
    columns = ("Classes", "Superclasses", "Train images", "Test images", "Train per class",
               "Image size")
    for name in datasets or [setting(profile)["dataset"]]:
        cfg = RunConfig.resolve(profile, dataset=name, data_dir=data_dir)
        try:
            arrays = load_scenario(cfg).data
        except (OSError, ValueError):  # the reason is for the command line, not the page
            rows.append({"Dataset": DATASET_LABELS.get(name, name),
                         **dict.fromkeys(columns, ""), "Note": "not on this machine"})
            continue
        per_train = np.bincount(arrays.train_y)
        rows.append({"Dataset": DATASET_LABELS.get(name, name), "Classes": arrays.num_classes,
                     "Superclasses": len(arrays.coarse_names or []) or "",
                     "Train images": len(arrays.train_y), "Test images": len(arrays.test_y),
                     "Train per class": f"{per_train.min()}-{per_train.max()}"
                     if per_train.min() != per_train.max() else int(per_train[0]),
                     "Image size": "x".join(str(d) for d in arrays.train_x.shape[1:3]),
                     "Note": f"{profile} profile"})
    return Table(pd.DataFrame(rows))
