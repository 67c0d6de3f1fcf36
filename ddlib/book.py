"""What the book's pages need besides the experiments: glue, the book's setting, exhibits.

- `glue(values)`: MyST-NB glue of a page's key numbers (a no-op where myst_nb is missing,
  e.g. Colab), so prose can quote them with {glue:text}`key:.1f`.
- `setting(profile, dataset)`: which profile and dataset an exhibit page shows. `make book`
  exports DDBOOK_PROFILE and DDBOOK_DATASETS for the whole build; explicit values win; the
  fallback is the committed default (`smoke`, `synthetic`), which is what nbval compares.
- `exhibit(...)`: the results of one exhibit page from the store, shown as the line that says
  what produced them, or, when this build did not run them, the command that does.

The run grid the exhibits expect is `ddlib.grid`; the execution-cache step of `make book`
is `python -m ddlib book-cache` (`ddlib.book_cache`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import results as store
from .config import DATASETS, IMAGENET_DATASETS, PROFILES, RunConfig, check_choice
from .grid import grid
from .utils import resolve_path

PROFILE_VAR, DATASETS_VAR = "DDBOOK_PROFILE", "DDBOOK_DATASETS"


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
    that match `match`; it is `ready` when, for each dict in `require`, some run matches it.

    Shown in a notebook, it is a line that states what produced the page (profile, dataset,
    orders, epochs, runs), or, when this build lacks the runs, what is missing and the
    command that produces them. `show(func, ...)` calls `func(...)` only when ready, so a
    page without its runs shows that message and no empty axes.
    """

    def __init__(self, title: str, *, profile: str, dataset: str, results_dir: str = "results",
                 require: tuple[dict[str, Any], ...] = ({},), **match: Any) -> None:
        import pandas as pd

        self.title, self.profile, self.dataset = title, profile, dataset
        self.results_dir, self.match, self.require = results_dir, match, require
        # Runs of a dedicated class order (Figure 1) only where a page asks for them.
        found = [(path, payload) for path, payload in store.scan(results_dir)[0]
                 if store.matches(payload, profile=profile, dataset=dataset,
                                  **{"class_order_seed": None, **match})]
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
            return ", ".join(str(v) for v in sorted({c[key] for c in configs
                                                      if c["dd"] or not dd_only}))

        expert = (f" (expert {values('expert_epochs', True)} + "
                  f"{values('expert_balanced_epochs', True)})"
                  if any(c["dd"] for c in configs) else "")
        seeds = sorted({c.get("class_order_seed") for c in configs} - {None})
        orders = (f"the dedicated class order of numpy seed {', '.join(map(str, seeds))}"
                  if seeds else f"class orders {values('order')}")
        return (f"**{self.title}** is built from {len(configs)} runs in `{self.results_dir}/`: "
                f"profile `{self.profile}`; dataset `{self.dataset}`; {orders}; "
                f"classes per round {values('increment')}; epochs "
                f"{values('epochs')}{expert}.")

    def _repr_markdown_(self) -> str:
        if self.ready:
            return self.provenance()
        wanted = ", ".join(f"{k}={v}" for k, v in {**self.match, **(self.missing or [{}])[0]}
                           .items() if v is not None)
        return (f"**{self.title}: not run in this build.** The results store "
                f"`{self.results_dir}/` has no `{self.profile}`-profile run on "
                f"`{self.dataset}`" + (f" with {wanted}" if wanted else "")
                + f". This produces them:\n\n```bash\n{self.command()}\n```")

    def __repr__(self) -> str:
        return self._repr_markdown_()


def exhibit(title: str, profile: str | None = None, dataset: str | None = None, *,
            results_dir: str = "results", require: tuple[dict[str, Any], ...] = ({},),
            **match: Any) -> Exhibit:
    """The `Exhibit` of a page: `setting(profile, dataset)` decides what it shows."""
    chosen = setting(profile, dataset)
    return Exhibit(title, profile=chosen["profile"], dataset=chosen["dataset"],
                   results_dir=results_dir, require=require, **match)


def table1(profile: str, datasets: list[str] | None = None, *,
           data_dir: str = "data") -> Any:
    """Table 1 from the dataset objects: classes, superclasses, images and image size of
    each dataset of the build (loaded as its runs load it); a dataset that is not on this
    machine gets a row saying so."""
    import pandas as pd

    from .run import load_scenario

    rows = []
    columns = ("classes", "superclasses", "train images", "test images", "train per class",
               "image size")
    for name in datasets or [setting(profile)["dataset"]]:
        cfg = RunConfig.resolve(profile, dataset=name, data_dir=data_dir)
        try:
            arrays = load_scenario(cfg).data
        except (OSError, ValueError) as err:
            where = resolve_path(data_dir)
            why = str(err).replace(str(where), data_dir)  # same text on every machine
            rows.append({"dataset": name, **dict.fromkeys(columns, ""),
                         "note": "not on this machine: " + why.split(":")[0]})
            continue
        per_train = np.bincount(arrays.train_y)
        rows.append({"dataset": name, "classes": arrays.num_classes,
                     "superclasses": len(arrays.coarse_names or []) or "",
                     "train images": len(arrays.train_y), "test images": len(arrays.test_y),
                     "train per class": f"{per_train.min()}-{per_train.max()}"
                     if per_train.min() != per_train.max() else int(per_train[0]),
                     "image size": "x".join(str(d) for d in arrays.train_x.shape[1:3]),
                     "note": f"as the `{profile}` profile loads it"})
    return pd.DataFrame(rows).set_index("dataset")
