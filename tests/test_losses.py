"""KD, Lo, Ln and the combined Eq. (4) against hand computations."""

from __future__ import annotations

import math

import torch

from ddlib.losses import cross_entropy, dd_loss, kd_loss, old_knowledge_loss


def _softmax(values, t):
    e = [math.exp(v / t) for v in values]
    return [x / sum(e) for x in e]


def _kd_by_hand(student, teacher, t):
    p = _softmax(teacher, t)
    q = _softmax(student, t)
    return -sum(pi * math.log(qi) for pi, qi in zip(p, q))


def test_kd_matches_hand_computation():
    student, teacher = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    got = kd_loss(torch.tensor([student]), torch.tensor([teacher]), 2.0)
    assert math.isclose(float(got), _kd_by_hand(student, teacher, 2.0), rel_tol=1e-6)
    # on paper: p = softmax([1.5, 1, .5]) = (.5065, .3072, .1863), q = reversed p, so
    # -sum p log q = .5065 * 1.6803 + .3072 * 1.1803 + .1863 * .6803 = 1.3404
    assert math.isclose(float(got), 1.3404, abs_tol=2e-4)


def test_kd_averages_over_batch_without_t_squared():
    s = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    t = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    expected = (_kd_by_hand([0, 1], [1, 0], 4.0) + _kd_by_hand([2, -1], [0.5, 0.5], 4.0)) / 2
    assert math.isclose(float(kd_loss(s, t, 4.0)), expected, rel_tol=1e-6)


def test_lo_uses_only_old_logits():
    logits = torch.tensor([[1.0, 2.0, 30.0, -4.0]])  # classes 2, 3 are new
    old = torch.tensor([[0.5, 0.0]])
    got = old_knowledge_loss(logits, old, 2.0)
    assert math.isclose(float(got), _kd_by_hand([1, 2], [0.5, 0.0], 2.0), rel_tol=1e-6)


def test_ln_uses_expert_classes_in_expert_order():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    expert = torch.tensor([[2.0, 0.0, 1.0]])
    idx = torch.tensor([3, 4, 1])  # new classes 3, 4 then similar old class 1
    got = dd_loss(logits, expert, idx, 2.0)
    assert math.isclose(float(got), _kd_by_hand([4, 5, 2], [2, 0, 1], 2.0), rel_tol=1e-6)


def test_teacher_gets_no_gradient():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.ones(1, 3, requires_grad=True)
    kd_loss(s, t, 2.0).backward()
    assert t.grad is None and s.grad is not None


def test_cross_entropy_hand_value():
    got = cross_entropy(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]))
    assert math.isclose(float(got), -math.log(_softmax([1, 2, 3], 1.0)[0]), rel_tol=1e-6)


def test_every_term_computes_in_float32_from_fp16_inputs():
    """What makes fp16 autocast safe for the losses: each term upcasts its inputs, so fp16
    logits near fp16's largest value (65504) neither overflow a softmax at temperature nor
    lose the loss's digits: the value equals that of the float32 copies, and is float32."""
    from ddlib.losses import less_forget_loss, margin_ranking_loss

    logits = torch.tensor([[6.0e4, 5.99e4, -6.0e4, 1.0], [3.0, -2.0, 0.5, 1.5]])
    teacher = torch.tensor([[5.9e4, 6.0e4], [1.0, 0.0]])
    features = torch.tensor([[300.0, -200.0, 100.0], [0.5, 0.25, -1.0]])
    targets = torch.tensor([0, 3])
    terms = {
        "kd": lambda z, t, f: kd_loss(z[:, :2], t, 2.0),
        "Lo": lambda z, t, f: old_knowledge_loss(z, t, 2.0),
        "Ln": lambda z, t, f: dd_loss(z, t, torch.tensor([3, 1]), 2.0),
        "Lc": lambda z, t, f: cross_entropy(z, targets),
        "Llf": lambda z, t, f: less_forget_loss(f, f.flip(0)),
        "Lmr": lambda z, t, f: margin_ranking_loss(z / 6.0e4, targets, 2, 0.5, 2),
    }
    half = [x.half() for x in (logits, teacher, features)]
    for name, term in terms.items():
        got = term(*half)
        assert got.dtype == torch.float32 and torch.isfinite(got), name
        assert torch.equal(got, term(*[x.float() for x in half])), name
