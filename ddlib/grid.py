"""The book's experiment grid: what `python -m ddlib sweep` (and so `make book`) runs for
each profile, and what the exhibit pages expect to find in the results store.

- `GRID[profile]`: classes per round, class orders, the increment of the analyses, the
  Figure 7 ablation's methods and k values, and the methods whose expert is also started
  from scratch;
- `figure1(profile, dataset)`: Figure 1's runs (a dedicated class order on CIFAR-100);
- `ablation_runs(profile)`: the runs Figure 7 needs;
- `expert_init_runs(profile)`: the runs of the page comparing how the expert starts.

Here rather than in `ddlib.book` so that the sweep does not depend on the book's pages.
"""

from __future__ import annotations

from typing import Any

from .config import EXPERT_INITS, METHOD_ORDER, check_choice
from .data import CIFAR100_COARSE, CIFAR100_FIGURE1
from .scenario import dedicated_order_seed

# The book's run grid per profile. `paper` is the paper's full matrix (PROTOCOL 5.6) on
# CIFAR-100-like datasets; ImageNet datasets take their own increment (10 or 100) from the
# profile. `cpu` trims it, never the epochs, to fit 45 minutes on 2 cores: one class order,
# 20 classes per round (5 rounds; 10 and 5 per round cost 2 and 4 times more), Figure 7's
# k = 0 (dual distillation) against k = 1 for iCaRL only, and no scratch-started expert
# (one more +DD run, 14 minutes: the sweep's 41.6 minutes would become 55).
# `analysis_increment`: Table 2, Figures 6 and 7 and the expert_init page (the paper's 20
# per round). `expert_init_methods`: +DD also with the expert started from fresh weights.
GRID: dict[str, dict[str, Any]] = {
    "smoke": dict(increments=(5, 10), orders=(0,), analysis_increment=5,
                  ablation_methods=("icarl", "ucir"), similar_ks=(0, 1, 2, 3, 4),
                  expert_init_methods=("icarl",)),
    "cpu": dict(increments=(20,), orders=(0,), analysis_increment=20,
                ablation_methods=("icarl",), similar_ks=(0, 1),
                expert_init_methods=()),
    "paper": dict(increments=(5, 10, 20), orders=(0, 1, 2), analysis_increment=20,
                  ablation_methods=METHOD_ORDER, similar_ks=(0, 1, 2, 3, 4),
                  expert_init_methods=("icarl", "ucir")),
}


def grid(profile: str) -> dict[str, Any]:
    """`GRID[profile]`; ValueError naming `profile` when it has none."""
    check_choice("profile", profile, GRID)
    return GRID[profile]


def figure1(profile: str, dataset: str) -> dict[str, Any]:
    """Figure 1's runs and class. On CIFAR-100, PROTOCOL 5.2's dedicated class order: 20 per
    round, the first seed bringing 'baby' in round 1 and 'boy', 'girl', 'man', 'woman' one
    per later round (seed 18). Elsewhere the grid's first increment and order 0, and the
    class is picked from the results (`analysis.figure1_class`, by `pick`): `followed` is
    None. The `smoke` profile picks by class order alone: its page is compared across CPUs,
    whose float sums move a smoke run's accuracies."""
    book_grid = grid(profile)
    if dataset != "cifar100":
        return {"increment": book_grid["increments"][0], "class_order_seed": None,
                "followed": None, "pick": "order" if profile == "smoke" else "drop"}
    increment = book_grid["analysis_increment"]
    (followed, label), *others = CIFAR100_FIGURE1.items()
    seed = dedicated_order_seed(len(CIFAR100_COARSE), increment, label,
                                tuple(index for _, index in others))
    return {"increment": increment, "followed": followed, "class_order_seed": seed,
            "pick": None}


def ablation_runs(profile: str) -> tuple[dict[str, Any], ...]:
    """Figure 7's required runs: every ablated method's baseline and +DD arms."""
    book_grid = grid(profile)
    arms = [{"dd": False}] + [{"dd": True, "similar_k": k} for k in book_grid["similar_ks"]]
    return tuple({"method": m, **arm} for m in book_grid["ablation_methods"] for arm in arms)


def expert_init_runs(profile: str) -> tuple[dict[str, Any], ...]:
    """The expert_init page's required runs, at the analysis increment: every compared
    method's baseline and its +DD runs (the paper's k = 1) with the expert started from the
    old model (`old`) and from fresh weights (`scratch`)."""
    book_grid = grid(profile)
    at = {"increment": book_grid["analysis_increment"]}
    arms = [{"dd": False}] + [{"dd": True, "similar_k": 1, "expert_init": init}
                              for init in EXPERT_INITS]
    return tuple({"method": m, **arm, **at} for m in book_grid["expert_init_methods"]
                 for arm in arms)
