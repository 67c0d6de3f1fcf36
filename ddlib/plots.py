"""The paper's figures from stored results, one function per exhibit (PROTOCOL 5).

Every function builds its figure with `plt.subplots`, closes the pyplot handle and returns
the `Figure`, so a notebook cell ending with the call shows it exactly once. Style follows
the seed's figures: baseline blue, +DD orange (Figures 1 and 3), accuracies in %.
Figures are at most `PAGE_WIDTH` inches wide with 11-point text, so that shown at the
book's page width (about 700 pixels for 100 dpi) every label stays readable; error bars
and "mean ± std" appear only when there is more than one class order to average.
Inputs are what `ddlib.results.load` (a tidy frame) or `ddlib.results.read` (records)
give, or a results folder / JSON path; the numbers come from `ddlib.analysis`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from . import analysis, mechanism
from .analysis import Results
from .config import METHOD_ORDER
from .convergence import STAGES, curves
from .names import DATASET_LABELS, METHOD_NAMES, display_name, run_name

BASELINE, DD = "#1f77b4", "#ff7f0e"  # matplotlib's first two colours, as in the seed
METHOD_COLORS = {"lwf": "#2ca02c", "icarl": "#1f77b4", "ucir": "#9467bd", "bic": "#d62728"}
ARMS = ("B", "0", "1", "2", "3", "4")
PAGE_WIDTH = 6.9  # inches: the book's text column at 100 dpi, so figures are not shrunk
_STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
          "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 12,
          "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
          "axes.spines.right": False}


def _exhibit(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw `func`'s figure under the shared style, then close its pyplot handle."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with plt.rc_context(_STYLE):
            fig = func(*args, **kwargs)
        plt.close(fig)
        return fig

    return wrapper


def describe(fig: Figure) -> str:
    """What a figure draws, as text: per panel with data, its title and its labelled lines
    with their number of values, other lines, bars and images (no trained value), so that
    a test comparing outputs sees a curve or a panel go missing."""
    panels = []
    for ax in fig.axes:
        if not ax.has_data():
            continue
        labelled = [f"{line.get_label()} ({len(line.get_xdata())} values)" for line in ax.lines
                    if not line.get_label().startswith("_")]
        parts = [", ".join(labelled)] if labelled else []
        counts = {"other lines": len(ax.lines) - len(labelled), "bars": len(ax.patches),
                  "collections": len(ax.collections)}
        parts += [f"{n} {what}" for what, n in counts.items() if n]
        parts += [f"image {'x'.join(map(str, image.get_array().shape[:2]))}"
                  for image in ax.images]
        title = ax.get_title() or ax.get_ylabel() or "untitled"
        panels.append(f"[{title}] " + "; ".join(parts))
    return f"<Figure, {len(panels)} panel(s): " + " | ".join(panels) + ">"


class DescribedFigure(Figure):
    """A figure whose plain-text copy in a notebook is `describe(self)` (the picture is the
    same): what nbval compares, since it skips images."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(describe(self))


def _figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float]) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained",
                             FigureClass=DescribedFigure)
    return fig, axes


def _methods(present: Iterable[str], methods: Iterable[str] | None) -> list[str]:
    present = set(present)
    if methods is not None:
        unknown = sorted(set(methods) - present)
        if unknown:
            raise ValueError(f"no results for method(s) {unknown}; present: {sorted(present)}")
        return list(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _orders(values: Iterable[Any], mean: str = "mean ± std") -> str:
    """'class order 0', or 'mean ± std over class orders 0, 1, 2'."""
    orders = sorted({int(o) for o in values})
    if len(orders) == 1:
        return f"class order {orders[0]}"
    return f"{mean} over class orders " + ", ".join(map(str, orders))


def _setting(frame: pd.DataFrame) -> str:
    dataset = frame["dataset"].iloc[0]
    return (f"{DATASET_LABELS.get(dataset, dataset)}, {frame['profile'].iloc[0]} profile, "
            f"{_orders(frame['order'])}")


# ----------------------------------------------------------------------------- Figures 3-5


@_exhibit
def accuracy_curves(data: pd.DataFrame | Results, *, dataset: str | None = None,
                    profile: str | None = None, methods: Iterable[str] | None = None,
                    increments: Iterable[int] | None = None, similar_k: int = 1,
                    rule: str | None = None) -> Figure:
    """Figures 3-5: top-1 accuracy vs classes learned, baseline (blue) and +DD (orange),
    mean over orders (with +-1 std error bars when there are several); one panel per
    (increment, method), two panels a row, so that the figure reads at page width; the
    legend gives each curve's average incremental accuracy."""
    frame = analysis.select(analysis.as_frame(data), dataset=dataset, profile=profile)
    summary = analysis.accuracy_summary(frame, similar_k=similar_k, rule=rule)
    cols = _methods(summary["method"], methods)
    rows = list(increments) if increments is not None else sorted(summary["increment"].unique())
    panels = [(inc, method) for inc in rows for method in cols]
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = _figure(nrows, ncols, size=(PAGE_WIDTH, 2.9 * nrows + 0.5))
    several = frame["order"].nunique() > 1
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (inc, method) in zip(axes.flat, panels):
        part = summary[(summary["increment"] == inc) & (summary["method"] == method)]
        if part.empty:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        for dd, color, marker in ((False, BASELINE, "o"), (True, DD, "s")):
            curve = part[part["dd"] == dd].sort_values("classes_seen")
            if curve.empty:
                continue
            name = display_name(run_name(method, dd))
            ax.errorbar(curve["classes_seen"], curve["mean"],
                        yerr=curve["std"] if several else None, color=color, marker=marker,
                        markersize=5, linewidth=1.8, capsize=3,
                        label=f"{name}: {curve['avg_inc_mean'].iloc[0]:.1f}")
        if not part.empty:
            ax.legend(loc="best", frameon=False, title="avg. inc. acc. (%)")
            ticks = sorted(part["classes_seen"].unique())
            ax.set_xticks(ticks if len(ticks) <= 8 else ticks[::-(-len(ticks) // 8)])
        label = METHOD_NAMES[method]
        ax.set_title(f"{label}, {inc} classes / round" if len(rows) > 1 else label)
        ax.set_xlabel("Number of classes")
        ax.set_ylabel("Accuracy (%)")
    fig.suptitle(f"Top-1 accuracy over rounds\n{_setting(frame)}")
    return fig


# ----------------------------------------------------------------------------- Figure 7


@_exhibit
def ablation(data: pd.DataFrame | Results, *, dataset: str | None = None,
             profile: str | None = None, increment: int | None = None,
             methods: Iterable[str] | None = None, rule: str | None = None) -> Figure:
    """Figure 7: accuracy vs number of similar old classes per new class (B = baseline, 0 =
    expert on new classes only); left final round, right average over rounds; one line per
    method, mean over orders (with +-1 std error bars when there are several)."""
    frame = analysis.select(analysis.as_frame(data), dataset=dataset, profile=profile,
                            increment=increment)
    summary = analysis.ablation_summary(frame, rule=rule)
    several = frame["order"].nunique() > 1
    fig, axes = _figure(1, 2, size=(PAGE_WIDTH, 3.8))
    for ax, key, title in ((axes[0, 0], "final", "Final round"),
                           (axes[0, 1], "avg", "Average over all rounds")):
        for method in _methods(summary["method"], methods):
            line = summary[summary["method"] == method].dropna(subset=["arm"])
            x = [ARMS.index(a) for a in line["arm"]]
            ax.errorbar(x, line[f"{key}_mean"], yerr=line[f"{key}_std"] if several else None,
                        marker="o", markersize=5, capsize=3, color=METHOD_COLORS.get(method),
                        label=METHOD_NAMES[method])
        ax.set_xticks(range(len(ARMS)), ARMS)
        ax.set_xlim(-0.4, len(ARMS) - 0.6)
        ax.set_xlabel("Similar old classes per new class")
        ax.set_ylabel("Accuracy (%)")
        ax.set_title(title)
    axes[0, 1].legend(frameon=False)
    inc = frame["increment"].iloc[0]
    fig.suptitle(f"Ablation over similar classes (B: the baseline, no expert)\n"
                 f"{_setting(frame)}, {inc} classes / round")
    return fig


# ----------------------------------------------------------------------------- expert_init

# The baseline and +DD in Figure 3's colours; the scratch-started expert's arm in green.
INIT_STYLES = {"baseline": (BASELINE, "o"), "old": (DD, "s"), "scratch": ("#2ca02c", "^")}


@_exhibit
def expert_init(results: Results) -> Figure:
    """The expert_init page: accuracy (%, the method's own rule) vs classes learned of the
    baseline and of +DD with the expert started from the old model and from scratch, one
    panel per method, mean over orders (with +-1 std error bars when there are several);
    the legend gives each curve's average incremental accuracy."""
    records = analysis.as_results(results)
    curves, summary = mechanism.init_curves(records), mechanism.init_summary(records)
    averages = summary.set_index(["method", "arm"])["avg_mean"]
    methods = _methods(curves["method"], None)
    several = summary["orders"].max() > 1
    fig, axes = _figure(1, len(methods), size=(PAGE_WIDTH, 3.9))
    for ax, method in zip(axes.flat, methods):
        for arm, (color, marker) in INIT_STYLES.items():
            line = curves[(curves["method"] == method) & (curves["arm"] == arm)]
            ax.errorbar(line["classes_seen"], line["mean"], yerr=line["std"] if several else None,
                        color=color, marker=marker, markersize=5, linewidth=1.8, capsize=3,
                        label=f"{mechanism.INIT_ARMS[arm]}: {averages[(method, arm)]:.1f}")
        ax.legend(loc="best", frameon=False, title="avg. inc. acc. (%)")
        ax.set_xticks(sorted(curves.loc[curves["method"] == method, "classes_seen"].unique()))
        ax.set_title(METHOD_NAMES[method])
        ax.set_xlabel("Number of classes")
        ax.set_ylabel("Accuracy (%)")
    frame = analysis.to_frame(records)
    fig.suptitle(f"How the expert starts: old model or scratch\n{_setting(frame)}, "
                 f"{frame['increment'].iloc[0]} classes / round")
    return fig


# ----------------------------------------------------------------------------- Figure 1


@_exhibit
def class_accuracy(results: Results, class_name: str, *, rule: str | None = None) -> Figure:
    """Figure 1: accuracy of one class over the rounds after it is learned, baseline (blue)
    vs +DD (orange); dotted lines mark the rounds where its superclass siblings arrive."""
    records = analysis.as_results(results)
    track = analysis.class_accuracy(records, class_name, rule=rule)
    fig, axes = _figure(1, 1, size=(PAGE_WIDTH, 4.0))
    ax = axes[0, 0]
    multi = track["order"].nunique() > 1
    for (run, order), line in track.groupby(["run", "order"], sort=False):
        color = DD if "+DD" in run else BASELINE
        label = f"{run} ({line['rule'].iloc[0].upper()})" + (f", order {order}" if multi else "")
        ax.plot(line["round"], line["accuracy"], marker="o", color=color, label=label,
                linestyle="-" if order == track["order"].iloc[0] else "--")
    if records[0].get("coarse") is not None:
        siblings = analysis.superclass_arrivals(records[0], class_name)
        learned = siblings.loc[siblings["class"] == class_name, "round"].iloc[0]
        siblings = siblings[siblings["round"] > learned]  # arrivals after the class's own
        for rnd, group in siblings.groupby("round"):
            ax.axvline(rnd, color="grey", linestyle=":", linewidth=1)
            ax.annotate("+ " + ", ".join(group["class"]), (rnd, 1.0),
                        xycoords=("data", "axes fraction"), rotation=90, ha="right",
                        va="top", fontsize=10, color="dimgrey")
    rounds = sorted(track["round"].unique())
    ax.set_xticks(rounds)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("Round")
    ax.set_ylabel(f"Accuracy on '{class_name}' (%)")
    ax.legend(frameon=False, loc="best")
    cfg = records[0]["config"]
    dataset = DATASET_LABELS.get(cfg["dataset"], cfg["dataset"])
    ax.set_title(f"'{class_name}' over the rounds ({dataset}, {_orders(track['order'])}, "
                 f"{cfg['increment']} classes / round)")
    return fig


# ----------------------------------------------------------------------------- Figure 6


@_exhibit
def gradcam_grid(series: Any, dd: Results | None = None, *, num_images: int = 1,
                 test_indices: list[int] | None = None, device: str = "cpu",
                 layer: str = "block_out", alpha: float = 0.5) -> Figure:
    """Figure 6: Grad-CAM of round-1 test images through every round (columns), baseline and
    +DD (rows per image), overlaid on the image; under each cell a tick (correct) or a cross
    (wrong, with the predicted class). `series` is a `gradcam.GradCamSeries`, or the baseline
    result with `dd` its +DD result (the series is then computed from their checkpoints)."""
    from .gradcam import GradCamSeries, gradcam_over_rounds

    if not isinstance(series, GradCamSeries):
        if dd is None:
            raise ValueError("pass a GradCamSeries, or the baseline and +DD results")
        series = gradcam_over_rounds(series, dd, num_images=num_images,
                                     test_indices=test_indices, device=device, layer=layer)
    n_img, n_runs, n_rounds = len(series.labels), len(series.runs), len(series.rounds)
    fig, axes = _figure(n_img * n_runs, n_rounds,
                        size=(min(PAGE_WIDTH, 1.3 * n_rounds + 1.4), 1.6 * n_img * n_runs + 0.6))
    correct = series.correct
    for i in range(n_img):
        for r in range(n_runs):
            row = i * n_runs + r
            for k in range(n_rounds):
                ax = axes[row, k]
                ax.imshow(series.images[i], interpolation="bilinear")
                ax.imshow(series.maps[r, k, i], cmap="jet", alpha=alpha, vmin=0, vmax=1,
                          interpolation="bilinear")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                ax.spines[:].set_visible(False)
                ok = bool(correct[r, k, i])
                mark = "✓" if ok else "✗ " + series.predicted_names[r][k][i]
                ax.set_xlabel(mark, color="tab:green" if ok else "tab:red",
                              fontsize=11 if ok else 9, labelpad=2)
                if row == 0:
                    ax.set_title(f"round {series.rounds[k]}", fontsize=10)
            axes[row, 0].set_ylabel(f"{series.runs[r]}\n'{series.class_names[i]}'",
                                    fontsize=10)
    fig.suptitle("Grad-CAM of the true class over rounds")
    return fig


# ----------------------------------------------------------------------------- confusion


@_exhibit
def confusion_heatmap(result: Results, round_idx: int | None = None, *,
                      rule: str | None = None, normalize: bool = True) -> Figure:
    """Confusion matrix of one round (last by default) with classes grouped by superclass;
    the boxes on the diagonal are the superclasses, so errors inside them are confusions."""
    record = analysis.as_results(result)
    if len(record) != 1:
        raise ValueError(f"confusion_heatmap shows one run, got {len(record)}")
    record = record[0]
    rule = rule or record["inference"]
    matrix = analysis.confusion_by_superclass(record, round_idx, rule=rule, normalize=normalize)
    n = len(matrix)
    fig, axes = _figure(1, 1, size=(PAGE_WIDTH, 6.2))
    ax = axes[0, 0]
    ax.grid(False)
    image = ax.imshow(matrix.to_numpy(), cmap="viridis", interpolation="nearest",
                      vmin=0, vmax=100 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.85,
                 label="% of the true class's images" if normalize else "images")
    for _, first, last in matrix.attrs["superclasses"]:
        ax.add_patch(plt.Rectangle((first - 0.5, first - 0.5), last - first + 1,
                                   last - first + 1, fill=False, edgecolor="white",
                                   linewidth=1.0))
    groups = matrix.attrs["superclasses"]
    if n <= 40:
        ax.set_xticks(range(n), matrix.columns, rotation=90, fontsize=8)
        ax.set_yticks(range(n), matrix.index, fontsize=8)
    elif groups:
        centres = [(a + b) / 2 for _, a, b in groups]
        ax.set_xticks(centres, [g for g, _, _ in groups], rotation=90, fontsize=8)
        ax.set_yticks(centres, [g for g, _, _ in groups], fontsize=8)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(f"{analysis.display_name(record)}, round {matrix.attrs['round']} "
                 f"({n} classes, {rule.upper()})")
    return fig


# ----------------------------------------------------------------------------- pairs


@_exhibit
def pair_superclass_share(results: Results) -> Figure:
    """Share of the expert's (new, old) pairs that lie in one superclass, per round and run
    (mean over orders), against the share a random old class would give (grey dashed)."""
    share = analysis.pair_superclass_share(results)
    if share.empty:
        raise ValueError("no similar-class pairs in these results (+DD runs with similar_k >= 1)")
    fig, axes = _figure(1, 1, size=(PAGE_WIDTH, 3.8))
    ax = axes[0, 0]
    mean = (share.groupby(["run", "method", "round"], sort=False)[["share", "chance"]]
            .mean().reset_index())
    for (run, method), line in mean.groupby(["run", "method"], sort=False):
        ax.plot(line["round"], line["share"], marker="o", color=METHOD_COLORS[method], label=run)
    chance = mean.groupby("round")["chance"].mean()
    ax.plot(chance.index, chance.to_numpy(), color="grey", linestyle="--",
            label="random old class")
    ax.set_xticks(sorted(mean["round"].unique()))
    ax.set_ylim(-3, 103)
    ax.set_xlabel("Round")
    ax.set_ylabel("Pairs within one superclass (%)")
    ax.set_title(f"Similar-class pairs in one superclass ({_orders(share['order'], 'mean')})")
    ax.legend(frameon=False)
    return fig


# ----------------------------------------------------------------------------- convergence


@_exhibit
def training_curves(result: Any) -> Figure:
    """Training loss (top) and accuracy (bottom) per epoch of every stage of one run: the
    classifier, the expert's stage A and stage B; one line per round, later rounds darker."""
    record = analysis.one_result(result)
    frame = curves(record)
    stages = [s for s in STAGES if s in set(frame["stage"])]
    fig, axes = _figure(2, len(stages), size=(PAGE_WIDTH, 5.2))
    rounds = sorted(frame["round"].unique())
    shade = plt.get_cmap("viridis")
    for col, stage in enumerate(stages):
        part = frame[frame["stage"] == stage]
        for k, (rnd, line) in enumerate(part.groupby("round")):
            color = shade(k / max(len(rounds) - 1, 1))
            axes[0, col].plot(line["epoch"], line["loss"], color=color, label=f"round {rnd}")
            axes[1, col].plot(line["epoch"], line["acc"], color=color)
        axes[0, col].set_title(stage)
        axes[1, col].set_xlabel("Epoch")
        axes[1, col].set_ylim(0, 101)
    axes[0, 0].set_ylabel("Training loss")
    axes[1, 0].set_ylabel("Training accuracy (%)")
    first, last = rounds[0], rounds[-1]
    axes[0, -1].legend(handles=axes[0, 0].get_lines()[:: max(1, len(rounds) - 1)],
                       labels=[f"round {first}", f"round {last}"], frameon=False, fontsize=9)
    cfg = record["config"]
    fig.suptitle(f"{analysis.display_name(record)}, order {cfg['order']}: "
                 f"{cfg['epochs']} classifier epochs, expert {cfg['expert_epochs']} + "
                 f"{cfg['expert_balanced_epochs']}")
    return fig
