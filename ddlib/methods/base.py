"""The round lifecycle shared by every baseline, and the DD hook (DESIGN.md data flow).

One round: grow the head -> (dd) select similar classes, train the expert -> train the
classifier on the baseline's loss (+ lambda_dd * Ln) -> extra stage -> memory update ->
evaluation. A baseline overrides hooks only; it never sees the expert.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .. import checkpoint, engine
from ..config import RunConfig
from ..data import Scenario
from ..engine import DeviceData, Schedule
from ..expert import DiscriminativeDistillation
from ..memory import ExemplarMemory, herding
from ..metrics import accuracy, confusion_matrix, per_class_accuracy, top_k_accuracy
from ..models import BiasLayer, LinearHead, Net, make_backbone
from ..utils import round_seed, seed_everything

Outputs = tuple[Tensor, Tensor]  # (features, logits)


@dataclass
class Round:
    """What one round works on; labels are remapped (class-order positions)."""

    idx: int                 # 1-based
    new_classes: list[int]
    old_classes: list[int]
    train_indices: np.ndarray  # classifier's training set: new-class images + memory
    holdout: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_seen(self) -> int:
        return len(self.old_classes) + len(self.new_classes)


class Method:
    """Base class of LwF, iCaRL, UCIR, BiC. Subclasses override the hooks below."""

    name = "base"
    inference = "cnn"  # which rule gives the method's reported accuracy: cnn | nme
    backbone_options: dict = {}

    def __init__(self, cfg: RunConfig, scenario: Scenario, data: DeviceData) -> None:
        self.cfg = cfg
        self.scenario = scenario
        self.data = data
        self.device = data.device
        seed_everything(cfg.seed)  # weight init
        backbone = make_backbone(cfg.backbone, width=cfg.width, **self.backbone_options)
        self.model = Net(backbone, self.make_head(backbone.out_dim)).to(self.device)
        if data.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.old_model: Net | None = None
        self.memory = ExemplarMemory(cfg.memory)
        self.class_means: Tensor | None = None  # NME means of the seen classes
        self.generator = torch.Generator(device=self.device)

    # ---- hooks --------------------------------------------------------------------------
    @classmethod
    def trained_as(cls, cfg: RunConfig) -> RunConfig | None:
        """Another method's config whose training is this one's step for step, if any: the
        run then reads that run's rounds with its own inference rule instead of training
        them twice (run.py)."""
        return None

    def make_head(self, in_dim: int) -> nn.Module:
        return LinearHead(in_dim)

    def expand(self, rnd: Round) -> None:
        """Grow the head by the round's new classes (UCIR imprints them)."""
        self.model.head.grow(len(rnd.new_classes))

    def before_round(self, rnd: Round) -> None:
        """Adjust the round's data before any training (BiC holds out a validation split)."""

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The baseline's own loss (Lc and its old-knowledge terms). `old` = old model's
        outputs on the same batch, None in round 1."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def extra_stage(self, rnd: Round) -> dict | None:
        """Method-specific stage after classifier training (BiC bias layer); may return
        values for the round's record."""

    # ---- lifecycle ----------------------------------------------------------------------
    def schedule(self) -> Schedule:
        c = self.cfg
        return Schedule(c.epochs, c.lr, c.milestones, c.momentum, c.weight_decay, c.batch_size)

    def make_round(self, round_idx: int) -> Round:
        new = list(self.scenario.new_classes(round_idx))
        old = list(range(new[0]))
        train_idx = np.concatenate([self.scenario.train_indices(new), self.memory.indices()])
        return Round(round_idx, new, old, train_idx)

    def fit_round(self, round_idx: int) -> dict:
        """Run one round end to end; returns its record for the results file."""
        cfg = self.cfg
        seed = round_seed(cfg.seed, round_idx)
        seed_everything(seed)
        self.generator.manual_seed(seed)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        rnd = self.make_round(round_idx)
        self.before_round(rnd)
        self.expand(rnd)

        dd = None
        if cfg.dd and self.old_model is not None:
            t0 = time.perf_counter()
            dd = self._prepare_dd(rnd)
            timings["expert"] = time.perf_counter() - t0

        teacher = self.old_model

        def loss_fn(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            out = self.model(x)
            old = None
            if teacher is not None:
                with torch.no_grad():
                    old = teacher(x)
            loss, parts = self.objective(x, y, out, old)
            if dd is not None:  # Eq. (4): + lambda_2 * Ln
                ln = dd(x, out[1])
                loss = loss + cfg.lambda_dd * ln
                parts["Ln"] = ln.detach()
            return loss, parts

        t0 = time.perf_counter()
        history = engine.train(self.model, self.data, rnd.train_indices, loss_fn, self.schedule(),
                               generator=self.generator, params=self.trainable_parameters(),
                               desc=f"round {round_idx} classifier", show_progress=cfg.progress)
        timings["classifier"] = time.perf_counter() - t0
        extra = self.extra_stage(rnd) or {}
        t0 = time.perf_counter()
        self.update_memory(rnd)
        timings["memory"] = time.perf_counter() - t0
        record = self.evaluate(rnd)
        record["losses"] = history[-1] if history else {}
        record.update(extra)
        if dd is not None:  # the expert's accuracy next to the classifier's on its classes
            record.update(dd.record, classifier_acc_on_expert_classes=dd.accuracy(self.model, classifier=True))
        self.old_model = self._frozen_copy()
        timings["total"] = time.perf_counter() - start
        record["time"] = {k: round(v, 3) for k, v in timings.items()}
        return record

    def _prepare_dd(self, rnd: Round) -> DiscriminativeDistillation:
        c = self.cfg
        dd = DiscriminativeDistillation(
            c.similar_k, c.temperature_new,
            Schedule(c.expert_epochs, c.expert_lr, c.expert_milestones, c.momentum,
                     c.weight_decay, c.batch_size),
            Schedule(c.expert_balanced_epochs, c.expert_balanced_lr,
                     c.expert_balanced_milestones, c.momentum, c.weight_decay, c.batch_size),
            show_progress=c.progress)

        def keep(idx: np.ndarray) -> np.ndarray:  # BiC's validation images stay unseen
            return idx[~np.isin(idx, rnd.holdout)]

        dd.prepare(old_model=self.old_model, data=self.data, new_classes=rnd.new_classes,
                   new_indices={c: keep(self.scenario.train_indices([c])) for c in rnd.new_classes},
                   exemplars={o: keep(self.memory.ranked[o]) for o in rnd.old_classes},
                   test_indices=self.scenario.test_indices(range(rnd.num_seen)),
                   generator=self.generator, round_idx=rnd.idx)
        return dd

    def state(self) -> dict:
        """Everything the next round needs, as tensors and plain values (a checkpoint)."""
        return {"model": self.model.state_dict(),
                "bias_ranges": [[b.start, b.end] for b in self.model.bias_layers],
                "memory": {str(c): torch.from_numpy(idx) for c, idx in self.memory.ranked.items()},
                "class_means": self.class_means.cpu()}

    def load_state(self, state: dict) -> None:
        """Restore `state()`; the old model is then the restored model, as after a round."""
        self.model.bias_layers = nn.ModuleList(BiasLayer(a, b) for a, b in state["bias_ranges"])
        checkpoint.load_resized(self.model, state["model"])
        for p in self.model.bias_layers.parameters():
            p.requires_grad_(False)  # bias layers freeze once trained
        self.model.to(self.device)
        self.memory.ranked = {int(c): idx.numpy() for c, idx in state["memory"].items()}
        self.class_means = state["class_means"].to(self.device)
        self.old_model = self._frozen_copy()

    def _frozen_copy(self) -> Net:
        old = copy.deepcopy(self.model).eval()
        for p in old.parameters():
            p.requires_grad_(False)
        return old

    def update_memory(self, rnd: Round) -> None:
        """Shrink old classes to the new quota, herd the new ones, recompute NME means."""
        m = self.memory.quota(rnd.num_seen)
        self.memory.reduce(m)
        for c in rnd.new_classes:
            idx = self.scenario.train_indices([c])
            feats, _ = engine.infer(self.model, self.data, self.data.train_images(idx))
            self.memory.add(c, idx[herding(feats.cpu(), m)])
        means = []
        for c in range(rnd.num_seen):
            images = self.data.train_images(self.memory.ranked[c])
            phi = nn.functional.normalize(engine.infer(self.model, self.data, images)[0], dim=1)
            if self.cfg.nme_flip:
                flipped = engine.infer(self.model, self.data, images, flip=True)[0]
                phi = (phi + nn.functional.normalize(flipped, dim=1)) / 2
            means.append(nn.functional.normalize(phi.mean(dim=0), dim=0))
        self.class_means = torch.stack(means)

    def evaluate(self, rnd: Round) -> dict:
        """CNN and NME top-1 (and top-5) on the test images of all seen classes (PROTOCOL
        1.6)."""
        n = rnd.num_seen
        idx = torch.as_tensor(self.scenario.test_indices(range(n)), device=self.device)
        feats, logits = engine.infer(self.model, self.data, self.data.test_x[idx])
        y = self.data.test_y[idx].cpu().numpy()
        logits = logits[:, :n].cpu().numpy()
        similarity = (nn.functional.normalize(feats, dim=1) @ self.class_means.T).cpu().numpy()
        pred_cnn, pred_nme = logits.argmax(1), similarity.argmax(1)  # NME: = nearest mean
        conf_cnn, conf_nme = confusion_matrix(y, pred_cnn, n), confusion_matrix(y, pred_nme, n)
        return {
            "round": rnd.idx, "classes_seen": n, "new_classes": rnd.new_classes,
            "acc_cnn": accuracy(conf_cnn), "acc_nme": accuracy(conf_nme),
            "top5_cnn": top_k_accuracy(logits, y), "top5_nme": top_k_accuracy(similarity, y),
            "per_class_acc_cnn": per_class_accuracy(conf_cnn),
            "per_class_acc_nme": per_class_accuracy(conf_nme),
            "confusion_cnn": conf_cnn.tolist(), "confusion_nme": conf_nme.tolist(),
            "memory_per_class": self.memory.quota(n),
        }
