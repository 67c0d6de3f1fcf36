"""Run configuration: every knob of PROTOCOL.md, the three profiles, validation.

A field of `RunConfig` is at once a papermill parameter, a CLI flag (`--similar-k`) and a
key of the result JSON. Fields left as `None` are filled from the profile by `resolve`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .names import DATASETS, IMAGENET_DATASETS, METHOD_NAMES, run_name
from .engine import COMPILE_SETTINGS, PRECISIONS, resolve_precision
from .scenario import round_sizes

DEVICES = ("auto", "cpu", "cuda")
EXPERT_INITS = ("old", "scratch")
METHOD_ORDER = tuple(METHOD_NAMES)  # the paper's order, in tables and figures
# Fields that change where or how fast a run goes, never its result.
RUNTIME_FIELDS = frozenset({"device", "threads", "results_dir", "progress", "data_dir",
                            "download", "fresh", "compile"})
# Fields that only act through the expert, from round 2 on.
DD_FIELDS = frozenset({"dd", "similar_k", "lambda_dd", "temperature_new", "expert_init",
                       "expert_epochs",
                       "expert_lr", "expert_milestones", "expert_balanced_epochs",
                       "expert_balanced_lr", "expert_balanced_milestones"})

# One table for the three profiles. `paper` is the seed paper's CIFAR-100 setting
# (PROTOCOL.md 1.3, 1.7 `seed` schedule, 4.1 expert phases). `cpu` and `smoke` shrink only
# data size, network width and epochs, never the rules. `cpu`'s epochs follow the convergence
# rule of `ddlib.convergence` (studies/convergence.py), the expert's phases and every
# milestone at the paper's fractions (80 % and 40 % of the classifier's epochs; /10 at 50 %
# and 75 %).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        dataset="synthetic", synthetic_classes=20, synthetic_superclasses=4,
        train_per_class=24, test_per_class=10, image_size=16, width=0.5, channels_last=False,
        precision="fp32",  # committed outputs must not depend on the machine
        compile="off",     # a compile would take longer than the whole run
        increment=5, memory=80,
        epochs=3, milestones=(2,), batch_size=32,
        expert_epochs=2, expert_milestones=(1,), expert_balanced_epochs=1,
        expert_balanced_milestones=(), bic_epochs=2,
    ),
    "cpu": dict(
        dataset="synthetic", synthetic_classes=100, synthetic_superclasses=20,
        train_per_class=100, test_per_class=40, image_size=16, width=0.5, channels_last=False,
        precision="auto", increment=10, memory=800,
        epochs=24, milestones=(12, 18), batch_size=64,
        expert_epochs=20, expert_milestones=(10, 15), expert_balanced_epochs=10,
        expert_balanced_milestones=(5,), bic_epochs=30,
    ),
    "paper": dict(
        dataset="cifar100", synthetic_classes=100, synthetic_superclasses=20,
        train_per_class=500, test_per_class=100, image_size=32, width=1.0, channels_last=True,
        precision="auto", increment=10, memory=2000,
        epochs=100, milestones=(50, 75), batch_size=128,
        expert_epochs=80, expert_milestones=(40, 60), expert_balanced_epochs=40,
        expert_balanced_milestones=(20,), bic_epochs=200,
    ),
}

# Values of one (profile, dataset) that differ from the profile's own; `resolve` applies them
# before the profile's, explicit overrides still win. A table rather than new RunConfig
# fields: every field is part of each stored run's identity. ImageNet `paper`: PROTOCOL 1.3
# (rounds, memory), 1.7 `seed` schedule for ResNet-18 (also the expert's weight decay,
# 4.1.6), 3.3 (UCIR's lambda_base).
_IMAGENET_PAPER: dict[str, Any] = dict(
    image_size=224, epochs=90, milestones=(30, 60), weight_decay=1e-4, batch_size=128,
    ucir_lambda_base=10.0)
DATASET_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("paper", "imagenet100"): dict(_IMAGENET_PAPER, increment=10, memory=2000),
    ("paper", "imagenet"): dict(_IMAGENET_PAPER, increment=100, memory=20000),
}


# Upper bounds far above every profile, low enough that a typo fails here instead of
# exhausting memory or threads mid-run (fields not listed: int32, see validate).
LIMITS: dict[str, float] = dict(synthetic_classes=10_000, synthetic_superclasses=10_000,
                                train_per_class=100_000, test_per_class=100_000,
                                image_size=1024, width=64.0, threads=1024)
SYNTHETIC_MAX_BYTES = 16 * 2**30  # uint8 images of the synthetic set
# Bump when `data.synthetic` generates other images for the same arguments (tests/test_data.py
# holds their fingerprint): it is part of every synthetic run's identity.
SYNTHETIC_VERSION = 3
# The same for how `imagenet` decodes the images (2: test images resized to 256/224 of
# image_size, then centre-cropped).
IMAGENET_VERSION = 2
# Bump a method's entry when its training changes what it computes for the same config; an
# entry above 1 is part of that method's run identities (stored results are then redone).
METHOD_VERSIONS = {"bic": 2}  # 2: stage 2 keeps the best epoch on the validation set


@dataclass(frozen=True)
class RunConfig:
    """One run of one method on one class order. `None` = take the profile's value."""

    # what to run
    method: str = "icarl"              # lwf | icarl | ucir | bic
    dd: bool = False                   # add discriminative distillation (Ln)
    similar_k: int = 1                 # similar old classes per new class (0 = dual distillation)
    profile: str = "smoke"             # smoke | cpu | paper
    # data
    dataset: str | None = None         # synthetic | cifar100 | arrays | imagenet100 | imagenet
    data_dir: str = "data"             # dataset folder (ImageNet: holds train/, val/), or
                                       # the .npz file for `arrays`
    download: bool = False             # let torchvision download CIFAR-100
    synthetic_classes: int | None = None
    synthetic_superclasses: int | None = None
    train_per_class: int | None = None  # synthetic only
    test_per_class: int | None = None   # synthetic only
    image_size: int | None = None       # synthetic and ImageNet (stored square side)
    order: int = 0                     # class order: numpy legacy seed 1993 + order
    class_order_seed: int | None = None  # the class order's seed instead (Figure 1's
                                         # dedicated order, PROTOCOL 5.2)
    init_classes: int | None = None    # classes in round 1; None = increment (B0 protocol)
    increment: int | None = None       # new classes per later round
    # memory (PROTOCOL 1.4)
    memory: int | None = None          # total exemplar budget K
    # model
    width: float | None = None         # ResNet-32 width multiplier (1.0 = 16-32-64 channels);
                                       # ImageNet's ResNet-18 is always full width
    channels_last: bool | None = None  # NHWC convolutions (always on CUDA; on CPU they pay
                                       # off only for full-width nets, measured by `bench`)
    # classifier schedule (PROTOCOL 1.7, `seed` schedule)
    epochs: int | None = None          # given alone, it scales the milestones and the
                                       # expert's phases with it
    lr: float = 0.1
    milestones: tuple[int, ...] | None = None  # epochs where lr is divided by 10
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int | None = None
    # expert (PROTOCOL 4.1): stage A imbalanced, stage B class-balanced
    expert_init: str = "old"           # old = the old model's features; scratch = fresh weights
    expert_epochs: int | None = None
    expert_lr: float = 0.1
    expert_milestones: tuple[int, ...] | None = None
    expert_balanced_epochs: int | None = None
    expert_balanced_lr: float = 0.01
    expert_balanced_milestones: tuple[int, ...] | None = None
    # losses (Eq. 4)
    temperature_old: float = 2.0       # To
    temperature_new: float = 2.0       # Tn
    lambda_old: float = 1.0            # λ1
    lambda_dd: float = 1.0             # λ2
    # LwF (PROTOCOL 3.1)
    lwf_exemplars: bool = True         # replay the memory; False = LwF-MC (CE on new logits)
    # BiC (PROTOCOL 3.4)
    bic_val_fraction: float = 0.1      # n_val = max(1, floor(fraction * K / s_r)) per class
    bic_epochs: int | None = None      # stage 2 (bias layer) epochs
    bic_lr: float = 0.1                # stage 2 SGD learning rate
    # UCIR (PROTOCOL 3.3)
    ucir_lambda_base: float = 5.0      # less-forget weight base (CIFAR 5, ImageNet 10)
    ucir_margin: float = 0.5           # margin m of the ranking loss
    ucir_k: int = 2                    # hard negatives K per old-class anchor
    ucir_lambda_mr: float = 1.0        # margin ranking weight
    # evaluation
    nme_flip: bool = True              # NME means over image and its flip (iCaRL-orig)
    # system
    seed: int | None = None            # model seed; None = 1993 + order
    device: str = "auto"               # auto = CUDA when present
    precision: str | None = None       # auto | fp32 | bf16 | fp16: autocast of every forward
                                       # (engine.resolve_precision says what auto means)
    compile: str = "auto"              # auto (= on CUDA) | on | off: torch.compile the backbones
    threads: int = 1                   # torch CPU threads (0 = torch's default); one per run,
                                       # so side-by-side runs do not oversubscribe the cores
    results_dir: str = "results"
    progress: bool = True              # progress bars
    fresh: bool = False                # ignore existing checkpoints and results

    @classmethod
    def resolve(cls, profile: str = "smoke", **overrides: Any) -> RunConfig:
        """Config of `profile` with `overrides` applied, validated."""
        check_choice("profile", profile, PROFILES)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; valid names: {sorted(names)}")
        values = {k: v for k, v in overrides.items() if v is not None}
        dataset = values.get("dataset", PROFILES[profile]["dataset"])
        defaults = {**PROFILES[profile], **DATASET_DEFAULTS.get((profile, dataset), {})}
        _follow_epochs(values, defaults)
        for key, value in defaults.items():
            values.setdefault(key, value)
        values["profile"] = profile
        values.setdefault("init_classes", values["increment"])
        if values.get("seed") is None:
            values["seed"] = 1993 + int(values.get("order", 0))
        for key in ("milestones", "expert_milestones", "expert_balanced_milestones"):
            values[key] = tuple(int(m) for m in values[key])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter (checks that need no data)."""
        check_choice("method", self.method, METHOD_NAMES)
        check_choice("expert_init", self.expert_init, EXPERT_INITS)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("compile", self.compile, COMPILE_SETTINGS)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}={value} must be a finite number")
            high = 2**32 if f.name == "seed" else 2**31  # seed: 1993 + order by default
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= high:
                raise ValueError(f"{f.name}={value} is out of range (|value| < {high})")
        for name, high in LIMITS.items():
            if getattr(self, name) is not None and getattr(self, name) > high:
                raise ValueError(f"{name}={getattr(self, name)} must be <= {high}")
        if self.dataset == "synthetic":
            size = (self.synthetic_classes * (self.train_per_class + self.test_per_class)
                    * self.image_size**2 * 3)
            if size > SYNTHETIC_MAX_BYTES:
                raise ValueError(f"the synthetic dataset would take {size / 2**30:.0f} GiB "
                                 "(> 16): lower synthetic_classes, train_per_class, "
                                 "test_per_class or image_size")
        for name in ("epochs", "batch_size", "expert_epochs", "memory", "increment",
                     "init_classes", "synthetic_classes", "synthetic_superclasses",
                     "train_per_class", "test_per_class"):
            _positive(name, getattr(self, name))
        _at_least("expert_balanced_epochs", self.expert_balanced_epochs, 0)
        _at_least("order", self.order, 0)
        if self.class_order_seed is not None:
            _at_least("class_order_seed", self.class_order_seed, 0)
        _at_least("threads", self.threads, 0)
        _at_least("image_size", self.image_size, 8)
        _positive("bic_epochs", self.bic_epochs)  # BiC
        if not 0 < self.bic_val_fraction < 1:
            raise ValueError(f"bic_val_fraction={self.bic_val_fraction} must lie in (0, 1)")
        if not self.bic_lr > 0:
            raise ValueError(f"bic_lr={self.bic_lr} must be > 0")
        if not 0 <= self.similar_k <= 4:
            raise ValueError(f"similar_k={self.similar_k} is out of range; allowed: 0..4")
        for name in ("temperature_old", "temperature_new"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1 (Eq. 2 needs T >= 1)")
        for name in ("lr", "expert_lr", "expert_balanced_lr", "width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("weight_decay", "lambda_old", "lambda_dd", "momentum"):
            _at_least(name, getattr(self, name), 0)
        for name in ("ucir_lambda_base", "ucir_margin", "ucir_lambda_mr"):
            _at_least(name, getattr(self, name), 0)
        _positive("ucir_k", self.ucir_k)
        for name, epochs in (("milestones", self.epochs),
                             ("expert_milestones", self.expert_epochs),
                             ("expert_balanced_milestones", self.expert_balanced_epochs)):
            bad = [m for m in getattr(self, name) if not 0 < m < max(epochs, 1) + 1]
            if bad:
                raise ValueError(f"{name}={getattr(self, name)}: each must lie in 1..{epochs}")

    def check_against(self, num_classes: int) -> None:
        """Raise ValueError for settings that do not fit a dataset of `num_classes` classes:
        the round structure and the memory."""
        try:
            round_sizes(num_classes, self.init_classes, self.increment)
        except ValueError as err:
            raise ValueError(f"increment={self.increment} (init_classes={self.init_classes}) "
                             f"does not fit {self.dataset}'s {num_classes} classes: {err}") from None
        if self.memory < num_classes:
            raise ValueError(
                f"memory={self.memory} is smaller than the number of classes ({num_classes}): "
                "every class needs at least one exemplar")

    @property
    def backbone(self) -> str:
        """ResNet-18 on the ImageNet datasets, ResNet-32 otherwise (PROTOCOL 2)."""
        return "resnet18" if self.dataset in IMAGENET_DATASETS else "resnet32"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_name(self) -> str:
        """Method id as shown in figures and store paths: icarl, icarl+dd, icarl+dd-k2."""
        return run_name(self.method, self.dd, self.similar_k)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """The config stored in a result or checkpoint (JSON lists back to tuples); fields
        unknown to this version are refused by the constructor."""
        values = dict(values)
        for key in ("milestones", "expert_milestones", "expert_balanced_milestones"):
            values[key] = tuple(values[key])
        return cls(**values)

    def identity(self, *, exclude: frozenset[str] = frozenset()) -> str:
        """Short hash of every field that changes the result (not where or how fast it runs).
        Without DD the expert's settings change nothing, so they are left out. Synthetic
        and ImageNet runs also hash the data version, so results on older images are not
        reused."""
        skip = RUNTIME_FIELDS | exclude | (frozenset() if self.dd else DD_FIELDS - {"dd"})
        items = {k: v for k, v in self.as_dict().items() if k not in skip}
        # Options added later leave the identities of runs at their defaults unchanged.
        for name, default in (("class_order_seed", None), ("expert_init", "old")):
            if items.get(name, default) == default:
                items.pop(name, None)
        # fp32 runs keep the identity they had before `precision` existed; `auto` counts as
        # what it runs as on this machine, so a plan and its run agree.
        ran = self.ran_precision()
        if ran == "fp32":
            items.pop("precision", None)
        else:
            items["precision"] = ran
        if self.dataset == "synthetic":
            items["synthetic_version"] = SYNTHETIC_VERSION
        elif self.dataset in IMAGENET_DATASETS:
            items["imagenet_version"] = IMAGENET_VERSION
        if METHOD_VERSIONS.get(self.method, 1) > 1:
            items["method_version"] = METHOD_VERSIONS[self.method]
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:10]

    def overrides(self) -> dict[str, Any]:
        """Fields that differ from the profile's own resolution of this method/order/dd."""
        base = RunConfig.resolve(self.profile, method=self.method, dd=self.dd,
                                 similar_k=self.similar_k, order=self.order,
                                 increment=self.increment, init_classes=self.init_classes,
                                 dataset=self.dataset)
        skip = RUNTIME_FIELDS | (frozenset() if self.dd else DD_FIELDS)
        if self.ran_precision() == base.ran_precision():  # auto and what it resolves to
            skip |= {"precision"}
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in skip and getattr(self, f.name) != getattr(base, f.name)}

    def ran_precision(self) -> str:
        """fp32 | bf16 | fp16: what `precision` runs as on this machine's `device`. Configs stored
        before the field existed (None) ran in fp32."""
        return resolve_precision(self.precision or "fp32", self.device)

    def round_one_identity(self) -> str:
        """Identity of round 1 alone: DD never acts in round 1, so baseline and +DD share it
        (PROTOCOL 4.3, trap 16)."""
        return self.identity(exclude=DD_FIELDS)


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    """ValueError naming parameter `name` when `value` is not one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {sorted(allowed)}")


# (epochs field, milestones field): milestones follow an epochs override proportionally.
_SCHEDULES = (("epochs", "milestones"), ("expert_epochs", "expert_milestones"),
              ("expert_balanced_epochs", "expert_balanced_milestones"))


def _follow_epochs(values: dict[str, Any], defaults: dict[str, Any]) -> None:
    """An `epochs` override scales the expert's two phases by the same factor (the
    profiles keep the paper's 100 : 80 + 40) unless they are given too; milestones not
    given move proportionally with their phase's epochs. In place, on `values`."""
    for name, _ in _SCHEDULES:  # ranges are validate()'s; the arithmetic needs integers
        if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)):
            raise ValueError(f"{name}={values[name]!r} must be an integer")
    if "epochs" in values:
        ratio = values["epochs"] / defaults["epochs"]
        for name in ("expert_epochs", "expert_balanced_epochs"):
            if name not in values and defaults[name]:
                values[name] = max(1, round(defaults[name] * ratio))
    for epochs_field, milestones_field in _SCHEDULES:
        if epochs_field in values and milestones_field not in values:
            values[milestones_field] = _scaled(defaults[milestones_field],
                                               defaults[epochs_field], values[epochs_field])


def _scaled(milestones: Sequence[int], epochs: int, new_epochs: int) -> tuple[int, ...]:
    """Milestones at the same fractions of `new_epochs` as of `epochs` (PROTOCOL's step
    schedule kept in shape); those landing outside 1..new_epochs-1 are dropped."""
    moved = {round(m * new_epochs / epochs) for m in milestones}
    return tuple(sorted(m for m in moved if 1 <= m < new_epochs))


def _positive(name: str, value: Any) -> None:
    _at_least(name, value, 1)


def _at_least(name: str, value: Any, low: float) -> None:
    if value is None or not value >= low:  # `not >=` also refuses NaN
        raise ValueError(f"{name}={value!r} must be >= {low}")
