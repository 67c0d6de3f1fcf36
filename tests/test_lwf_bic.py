"""LwF and BiC specifics (PROTOCOL 3.1, 3.4): losses against hand values, LwF read from
iCaRL's training, BiC's validation split, bias layers and its memory check. End-to-end runs
come from test_methods.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ddlib
from ddlib import results
from ddlib.engine import DeviceData
from ddlib.methods import METHODS
from ddlib.methods.bic import BiC
from ddlib.methods.lwf import LwF
from ddlib.methods.bic import BiasLayer
from ddlib.run import load_scenario

Z = [1.0, 2.0, 0.5, -1.0]  # student logits over N = 4 seen classes, s = 2 old
A = [0.5, 1.5]             # old model's logits over the 2 old classes


def _log_softmax(v, t=1.0):
    m = math.log(sum(math.exp(x / t) for x in v))
    return [x / t - m for x in v]


def _kd(student, teacher, t=2.0):  # -sum_c softmax(a/T)_c log softmax(b/T)_c
    return -sum(math.exp(p) * q for p, q in zip(_log_softmax(teacher, t), _log_softmax(student, t)))


def _bare(cls, cfg):
    """A method object for calling `objective`, which reads only `cfg`."""
    method = cls.__new__(cls)
    method.cfg = cfg
    return method


def _call(method, y):
    out = (torch.zeros(1, 3), torch.tensor([Z]))
    old = (torch.zeros(1, 3), torch.tensor([A]))
    return method.objective(None, torch.tensor([y]), out, old)


def _method(cfg):
    scenario = load_scenario(cfg)
    data = DeviceData.from_arrays(scenario.data, torch.device("cpu"), pad=2, channels_last=False)
    return METHODS[cfg.method](cfg, scenario, data)


def test_lwf_with_exemplars_is_ce_over_all_plus_kd(smoke):
    loss, parts = _call(_bare(LwF, smoke(method="lwf")), y=1)
    ce = -_log_softmax(Z)[1]
    assert parts["Lc"].item() == pytest.approx(ce, rel=1e-6)
    assert parts["Lo"].item() == pytest.approx(_kd(Z[:2], A), rel=1e-6)
    assert loss.item() == pytest.approx(ce + _kd(Z[:2], A), rel=1e-6)


def test_lwf_without_exemplars_ce_covers_new_logits_only(smoke):
    loss, parts = _call(_bare(LwF, smoke(method="lwf", lwf_exemplars=False)), y=3)
    ce_new = -_log_softmax(Z[2:])[1]  # class 3 = position 1 among the new logits
    assert parts["Lc"].item() == pytest.approx(ce_new, rel=1e-6)
    assert loss.item() == pytest.approx(ce_new + _kd(Z[:2], A), rel=1e-6)


@pytest.mark.slow
def test_lwf_without_exemplars_does_not_replay_memory(smoke):
    method = _method(smoke(method="lwf", lwf_exemplars=False))
    for c in range(5):
        method.memory.add(c, method.scenario.train_indices([c])[:16])
    rnd = method.make_round(2)
    method.before_round(rnd)
    assert np.array_equal(rnd.train_indices, method.scenario.train_indices(range(5, 10)))


@pytest.mark.slow
def test_lwf_with_exemplars_reads_icarls_training(smoke):
    lwf = ddlib.run(smoke(method="lwf", dd=True), verbose=False)
    icarl = results.read(results.result_path(smoke(method="icarl", dd=True)))
    assert lwf["rounds"] == icarl["rounds"] and lwf["inference"] == "cnn"
    assert lwf["trained_as"] == {"method": "icarl", "identity": icarl["identity"]}
    stored = results.read(results.result_path(smoke(method="lwf", dd=True)))
    assert stored["config"]["method"] == "lwf" and stored["identity"] != icarl["identity"]


@pytest.mark.slow
def test_lwf_without_exemplars_trains_on_its_own(smoke):
    out = ddlib.run(smoke(method="lwf", lwf_exemplars=False), verbose=False)
    assert "trained_as" not in out
    assert not results.result_path(smoke(method="icarl")).exists()


def test_bic_objective_weights_by_old_fraction(smoke):
    loss, parts = _call(_bare(BiC, smoke(method="bic")), y=3)
    lam = 2 / 4  # s / N
    expected = (1 - lam) * -_log_softmax(Z)[3] + lam * _kd(Z[:2], A)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bias_layer_identity_then_only_newest_logits():
    logits = torch.randn(3, 6)
    layer = BiasLayer(2, 4)
    assert torch.equal(layer(logits), logits)  # alpha = 1, beta = 0
    with torch.no_grad():
        layer.alpha.fill_(2.0)
        layer.beta.fill_(-0.5)
    out = layer(logits)
    assert torch.equal(out[:, :2], logits[:, :2]) and torch.equal(out[:, 4:], logits[:, 4:])
    assert torch.allclose(out[:, 2:4], 2 * logits[:, 2:4] - 0.5)


def _split(cfg):
    method = _method(cfg)
    for c in range(5):  # round-1 memory: all 24 images of each old class (quota 40)
        method.memory.add(c, method.scenario.train_indices([c]))
    rnd = method.make_round(2)
    before = rnd.train_indices.copy()
    method.before_round(rnd)
    return method, rnd, before


def test_bic_validation_split(smoke):
    cfg = smoke(method="bic", memory=200)
    method, rnd, before = _split(cfg)
    n_val = max(1, math.floor(0.1 * 200 / 5))
    assert n_val == 4
    labels = method.scenario.data.train_y[rnd.reserved]
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, n_val))
    assert not np.isin(rnd.reserved, rnd.train_indices).any()
    kept_or_held = np.sort(np.concatenate([rnd.train_indices, rnd.reserved]))
    assert np.array_equal(kept_or_held, np.sort(before))  # nothing else lost
    old_val = rnd.reserved[labels < 5]
    assert np.isin(old_val, method.memory.indices()).all()  # old classes: from exemplars
    assert np.array_equal(_split(cfg)[1].reserved, rnd.reserved)  # same seed, same split


@pytest.mark.slow
def test_bic_memory_too_small_fails_before_training(smoke):
    cfg = smoke(method="bic", memory=25)  # last round: 15 old classes, 1 exemplar each
    with pytest.raises(ValueError, match="memory=25 is too small for BiC"):
        ddlib.run(cfg, verbose=False)
    BiC.check(smoke(method="bic", memory=30), 20, [5, 5, 5, 5])  # 2 each: 1 val + 1 train
    with pytest.raises(ValueError, match="memory=200 asks for 4"):  # 4 val + 1 train
        BiC.check(smoke(method="bic", memory=200), 20, [5, 5, 5, 5], min_train_per_class=4)


@pytest.mark.slow
def test_bic_run_freezes_one_bias_layer_per_round(smoke):
    method = _method(smoke(method="bic"))
    stage2 = method.extra_stage

    def spy(rnd):  # stage 2 may change nothing but the new (alpha, beta): BN stats included
        before = {k: v.clone() for k, v in method.model.state_dict().items()}
        extra = stage2(rnd)
        after = method.model.state_dict()
        changed = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
        assert changed <= {f"head.bias_layers.{rnd.idx - 2}.alpha",
                           f"head.bias_layers.{rnd.idx - 2}.beta"}
        return extra

    method.extra_stage = spy
    bounds = []
    for r in range(1, method.scenario.num_rounds + 1):
        rec = method.fit_round(r)
        assert ("bic_alpha" in rec) == (r > 1)
        bounds += [(method.scenario.seen(r - 1), method.scenario.seen(r))] if r > 1 else []
    layers = method.model.head.bias_layers
    assert [(b.start, b.end) for b in layers] == bounds == [(5, 10), (10, 15), (15, 20)]
    assert not any(p.requires_grad for p in layers.parameters())
    assert not any(p.requires_grad for p in method.old_model.parameters())
    assert len(method.old_model.head.bias_layers) == 3
    assert rec["bic_alpha"] == pytest.approx(layers[-1].alpha.item())  # last round's record
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not any(id(p) in trainable for p in layers.parameters())


@pytest.mark.slow
def test_bic_stage_two_never_ends_worse_than_the_identity_on_validation(smoke):
    import torch.nn.functional as F

    from ddlib import engine
    from ddlib.methods.bic import BETA_L2

    method = _method(smoke(method="bic", bic_lr=50.0))  # absurd lr: SGD alone diverges
    stage2, seen = method.extra_stage, []

    def spy(rnd):
        if not rnd.old_classes:  # round 1: no stage 2
            return stage2(rnd)
        val = torch.as_tensor(rnd.reserved)
        y = method.data.train_y[val]
        _, logits = engine.infer(method.model, method.data, method.data.train_x[val])
        extra = stage2(rnd)
        layer = method.model.head.bias_layers[-1]
        fitted = F.cross_entropy(layer(logits), y) + BETA_L2 * layer.beta.pow(2).sum() / 2
        seen.append((float(fitted), float(F.cross_entropy(logits, y))))
        return extra

    method.extra_stage = spy
    for r in range(1, method.scenario.num_rounds + 1):
        method.fit_round(r)
    assert len(seen) == 3 and all(fitted <= identity + 1e-6 for fitted, identity in seen)
