"""The round lifecycle shared by every baseline, and where DD plugs in (DESIGN.md data flow).

One round: grow the head -> (dd) select similar classes, train the expert -> train the
classifier on `Method.loss` (the baseline's objective + lambda_dd * Ln, Eq. 4) -> extra
stage -> memory update -> evaluation. A baseline overrides hooks only; it never sees the
expert.
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
from ..engine import DeviceData, Schedule
from ..expert import DiscriminativeDistillation
from ..memory import ExemplarMemory, herding
from ..metrics import accuracy, confusion_matrix, per_class_accuracy, top_k_accuracy
from ..models import LinearHead, Net, make_backbone
from ..scenario import Scenario
from ..utils import round_seed, seed_everything

Outputs = tuple[Tensor, Tensor]  # (features, logits)


@dataclass
class Round:
    """What one round works on; labels are remapped (class-order positions)."""

    idx: int                 # 1-based
    new_classes: list[int]
    old_classes: list[int]
    train_indices: np.ndarray  # classifier's training set: new-class images + memory
    # Training images the method keeps for itself this round (BiC's validation split): they
    # train neither the classifier nor the expert.
    reserved: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def unreserved(self, indices: np.ndarray) -> np.ndarray:
        return indices[~np.isin(indices, self.reserved)]

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
        engine.tune_backend(self.device)
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
    def make_head(self, in_dim: int) -> nn.Module:
        return LinearHead(in_dim)

    def expand(self, rnd: Round) -> None:
        """Grow the head by the round's new classes (UCIR imprints them)."""
        self.model.head.grow(len(rnd.new_classes))

    def before_round(self, rnd: Round) -> None:
        """Adjust the round's data before any training (BiC reserves a validation split)."""

    def objective(self, x: Tensor, y: Tensor, out: Outputs,
                  old: Outputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The baseline's own loss (Lc and its old-knowledge terms). `old` = old model's
        outputs on the same batch, None in round 1."""
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor, out: Outputs, old: Outputs | None,
             dd: DiscriminativeDistillation | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. (4): the baseline's objective (Lc + lambda_1 * Lo and its own extra terms) +
        lambda_2 * Ln. Ln needs an expert and acts from round 2 on (`old` given)."""
        loss, parts = self.objective(x, y, out, old)
        if dd is not None and old is not None:
            ln = dd(x, out[1])
            loss = loss + self.cfg.lambda_dd * ln
            parts["Ln"] = ln.detach()
        return loss, parts

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
            dd = self._fit_expert(rnd)
            timings["expert"] = time.perf_counter() - t0

        teacher = self.old_model

        def step_loss(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            out = self.model(x)
            old = None
            if teacher is not None:
                with torch.no_grad():
                    old = teacher(x)
            loss, parts = self.loss(x, y, out, old, dd)
            parts["acc"] = (out[1].detach().argmax(1) == y).float().mean() * 100
            return loss, parts

        t0 = time.perf_counter()
        history = engine.train(self.model, self.data, rnd.train_indices, step_loss,
                               self.schedule(), generator=self.generator,
                               params=self.trainable_parameters(),
                               desc=f"round {round_idx} classifier", show_progress=cfg.progress)
        timings["classifier"] = time.perf_counter() - t0
        extra = self.extra_stage(rnd) or {}
        t0 = time.perf_counter()
        self.update_memory(rnd)
        timings["memory"] = time.perf_counter() - t0
        record = self.evaluate(rnd)
        record["losses"] = history[-1] if history else {}
        record["history_classifier"] = history
        record.update(extra)
        if dd is not None:  # the expert's accuracy next to the classifier's on its classes
            record.update(dd.record, classifier_acc_on_expert_classes=dd.accuracy(
                self.model, self.data, self._test_indices(rnd), classifier=True))
        self.old_model = self._frozen_copy()
        timings["total"] = time.perf_counter() - start
        record["time"] = {k: round(v, 3) for k, v in timings.items()}
        return record

    def _test_indices(self, rnd: Round) -> np.ndarray:
        return self.scenario.test_indices(range(rnd.num_seen))

    def _fit_expert(self, rnd: Round) -> DiscriminativeDistillation:
        """DD's expert for this round, from everything the method does not reserve."""
        c = self.cfg
        return DiscriminativeDistillation.fit(
            self.old_model, self.data,
            {n: rnd.unreserved(self.scenario.train_indices([n])) for n in rnd.new_classes},
            {o: rnd.unreserved(self.memory.ranked[o]) for o in rnd.old_classes},
            stage_a=Schedule(c.expert_epochs, c.expert_lr, c.expert_milestones, c.momentum,
                             c.weight_decay, c.batch_size),
            stage_b=Schedule(c.expert_balanced_epochs, c.expert_balanced_lr,
                             c.expert_balanced_milestones, c.momentum, c.weight_decay,
                             c.batch_size),
            generator=self.generator, similar_k=c.similar_k, temperature=c.temperature_new,
            init=c.expert_init, test_indices=self._test_indices(rnd),
            desc=f"round {rnd.idx} expert", show_progress=c.progress)

    def state(self) -> dict:
        """Everything the next round needs, as tensors and plain values (a checkpoint)."""
        return {"model": self.model.state_dict(),
                "memory": {str(c): torch.from_numpy(idx) for c, idx in self.memory.ranked.items()},
                "class_means": self.class_means.cpu()}

    def load_state(self, state: dict) -> None:
        """Restore `state()`; the old model is then the restored model, as after a round."""
        checkpoint.load_resized(self.model, state["model"])
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
        """Shrink old classes to the new quota, herd the new ones, recompute NME means
        (both from float32 features, whatever the training precision)."""
        m = self.memory.quota(rnd.num_seen)
        self.memory.reduce(m)
        for c in rnd.new_classes:
            idx = self.scenario.train_indices([c])
            feats, _ = engine.infer(self.model, self.data, self.data.train_images(idx),
                                    autocast=False)
            self.memory.add(c, idx[herding(feats.cpu(), m)])
        means = []
        for c in range(rnd.num_seen):
            images = self.data.train_images(self.memory.ranked[c])
            phi = nn.functional.normalize(
                engine.infer(self.model, self.data, images, autocast=False)[0], dim=1)
            if self.cfg.nme_flip:
                flipped = engine.infer(self.model, self.data, images, flip=True,
                                       autocast=False)[0]
                phi = (phi + nn.functional.normalize(flipped, dim=1)) / 2
            means.append(nn.functional.normalize(phi.mean(dim=0), dim=0))
        self.class_means = torch.stack(means)

    def evaluate(self, rnd: Round) -> dict:
        """CNN and NME top-1 (and top-5) on the test images of all seen classes (PROTOCOL
        1.6)."""
        n = rnd.num_seen
        idx = torch.as_tensor(self.scenario.test_indices(range(n)), device=self.device)
        feats, logits = engine.infer(self.model, self.data, self.data.test_x, idx)
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
