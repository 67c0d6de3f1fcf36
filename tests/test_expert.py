"""Similar-class selection (PROTOCOL 4.1 step 4) on hand-made class centres."""

from __future__ import annotations

import pytest
import torch

from ddlib.expert import select_similar_classes

# 1-D centres: new classes 4 at 0.0 and 5 at 10.0; old classes 0..3 at 1, 9.5, 2, 20.
NEW = torch.tensor([[0.0], [10.0]])
OLD = torch.tensor([[1.0], [9.5], [2.0], [20.0]])


def pairs(k):
    return [(c, o) for c, o, _ in select_similar_classes(NEW, OLD, [4, 5], [0, 1, 2, 3], k)]


def test_nearest_pairs_k1():
    assert pairs(1) == [(5, 1), (4, 0)]


def test_k2_skips_taken_classes():
    # sorted: (5,1) .5, (4,0) 1, (4,2) 2, (5,0)/(5,2) taken, (4,1) taken, (5,3) 10
    assert pairs(2) == [(5, 1), (4, 0), (4, 2), (5, 3)]


@pytest.mark.parametrize("k", [3, 4])
def test_fewer_old_classes_than_needed_uses_each_once(k):
    chosen = pairs(k)
    olds = [o for _, o in chosen]
    assert sorted(olds) == [0, 1, 2, 3] and len(set(olds)) == len(olds)


def test_k0_selects_nothing():
    assert pairs(0) == []


def test_distances_are_euclidean():
    got = select_similar_classes(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]),
                                 [1], [0], 1)
    assert got == [(1, 0, 5.0)]


def test_ties_break_by_new_then_old_label():
    new = torch.tensor([[0.0], [0.0]])
    old = torch.tensor([[1.0], [-1.0]])
    got = select_similar_classes(new, old, [2, 3], [0, 1], 1)
    assert [(c, o) for c, o, _ in got] == [(2, 0), (3, 1)]


def test_distances_reach_the_host_in_one_copy(monkeypatch):
    """One device-to-host copy of the distance matrix, not a float() (a sync on a GPU) per
    (new, old) pair; the same pairs as by hand."""
    reads = []

    def recording(name):
        method = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            reads.append(name)
            return method(self, *args, **kwargs)
        return read

    for name in ("__float__", "item", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, recording(name))
    assert pairs(2) == [(5, 1), (4, 0), (4, 2), (5, 3)]
    assert reads == ["tolist"]


# ---- the expert as a plug-in: construction, stage B's sampling, data it may see ----------

import numpy as np  # noqa: E402

import ddlib  # noqa: E402
from ddlib import expert as expert_module  # noqa: E402
from ddlib.expert import balanced_indices, make_expert  # noqa: E402
from ddlib.models import LinearHead, Net, make_backbone  # noqa: E402


def _old_model() -> Net:
    torch.manual_seed(0)
    return Net(make_backbone("resnet32", width=0.25), LinearHead(16, 3)).eval().requires_grad_(False)


def test_old_init_copies_the_old_features_and_a_fresh_head():
    old = _old_model()
    exp = make_expert(old, 5, "old")
    for (name, a), b in zip(old.backbone.state_dict().items(), exp.backbone.state_dict().values()):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr()  # a copy: training the expert leaves the old model
    assert exp.head.num_classes == 5 and all(p.requires_grad for p in exp.parameters())


def test_scratch_init_shares_no_weights_with_the_old_model():
    old = _old_model()
    exp = make_expert(old, 5, "scratch")
    old_params = dict(old.backbone.named_parameters())
    for name, p in exp.backbone.named_parameters():
        q = old_params[name]
        assert p.data_ptr() != q.data_ptr()
        if "conv" in name:  # convolutions redrawn (BN starts at 1 / 0 in both by construction)
            assert not torch.equal(p, q), name
    bn = next(m for m in exp.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    with pytest.raises(ValueError, match="expert_init"):
        make_expert(old, 5, "imagenet")


def test_stage_b_draws_each_new_class_down_to_the_old_classes_count():
    new = [np.arange(0, 50), np.arange(100, 130)]
    old = [np.arange(200, 207), np.arange(300, 309)]   # 7 and 9 stored: the smaller binds
    rng = np.random.default_rng(0)
    first, second = balanced_indices(new, old, rng), balanced_indices(new, old, rng)
    for picked in (first, second):
        assert len(set(picked.tolist())) == len(picked)          # without replacement
        for idx in new:
            assert np.isin(picked, idx).sum() == 7
        assert np.isin(np.concatenate(old), picked).all()         # every exemplar, every epoch
    assert not np.array_equal(np.sort(first), np.sort(second))   # resampled each epoch
    assert np.array_equal(balanced_indices(new, [], rng), np.concatenate(new))


@pytest.mark.slow
def test_bic_validation_images_never_reach_the_expert(smoke, monkeypatch):
    seen = []
    train = expert_module.train_expert

    def spy(expert, data, classes, new_indices, old_indices, **kw):
        seen.append(np.concatenate(new_indices + old_indices))
        return train(expert, data, classes, new_indices, old_indices, **kw)

    monkeypatch.setattr(expert_module, "train_expert", spy)
    from ddlib.methods.base import Method

    reserved = []
    fit_expert = Method._fit_expert
    monkeypatch.setattr(Method, "_fit_expert",
                        lambda self, rnd: reserved.append(rnd.reserved) or fit_expert(self, rnd))
    ddlib.run(smoke(method="bic", dd=True), verbose=False)
    assert len(seen) == len(reserved) == 3
    for used, held in zip(seen, reserved):
        assert len(held) and not np.isin(used, held).any()


def test_expert_init_is_part_of_the_identity_only_when_scratch(smoke):
    cfg = smoke(dd=True)
    # at its default the field is not hashed: runs made before the option keep their identity
    assert cfg.identity() == cfg.identity(exclude=frozenset({"expert_init"}))
    assert smoke(dd=True, expert_init="scratch").identity() != cfg.identity()
    assert smoke(expert_init="scratch").identity() == smoke().identity()  # baseline: no expert
    with pytest.raises(ValueError, match="expert_init"):
        smoke(dd=True, expert_init="random")


@pytest.mark.slow
def test_scratch_expert_runs_end_to_end_and_records_both_stages(smoke):
    out = ddlib.run(smoke(dd=True, expert_init="scratch"), verbose=False)
    for rec in out["rounds"][1:]:
        assert len(rec["history_expert_a"]) == 2 and len(rec["history_expert_b"]) == 1
        assert {"loss", "acc"} <= set(rec["history_expert_a"][0])
        assert 0 <= rec["expert_acc_b"] <= 100
    assert len(out["rounds"][0]["history_classifier"]) == 3


def test_dd_stages_add_no_compile(monkeypatch):
    """The student's step with Ln, compiled as engine.train compiles it (a CompileCounter
    for a backend), over two stages of two epochs, each with a fresh expert: two graphs
    (the student's training backbone, the frozen expert's), none added by the second."""
    from torch._dynamo.testing import CompileCounter

    from ddlib import engine
    from ddlib.engine import DeviceData, Schedule
    from ddlib.expert import DiscriminativeDistillation

    counter = CompileCounter()
    monkeypatch.setattr(engine, "compiled", lambda fn, device: torch.compile(
        fn, backend=counter, dynamic=False))
    rng = np.random.default_rng(0)

    class Arrays:
        train_x = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
        train_y = np.arange(16) % 4
        test_x, test_y = train_x[:4], train_y[:4]
        mean, std = (0.5,) * 3, (0.25,) * 3

    data = DeviceData.from_arrays(Arrays, torch.device("cpu"), pad=1, channels_last=False)
    data.compile = True
    torch.manual_seed(0)
    student = Net(make_backbone("resnet32", width=0.25), LinearHead(16, 4))
    counts = []
    for classes in ([3, 1], [2, 0, 1]):
        expert = make_expert(student, len(classes))
        expert.eval().requires_grad_(False)
        dd = DiscriminativeDistillation(expert, classes)

        def loss_fn(x, y, dd=dd):
            logits = student(x)[1]
            return torch.nn.functional.cross_entropy(logits, y) + dd(x, logits), {}

        engine.train(student, data, np.arange(16), loss_fn, Schedule(2, 0.05, batch_size=8),
                     generator=torch.Generator().manual_seed(0), show_progress=False)
        counts.append(counter.frame_count)
    assert counts == [2, 2]
