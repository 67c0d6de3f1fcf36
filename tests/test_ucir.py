"""UCIR pieces (PROTOCOL 3.3) against hand computations: losses, cosine head, imprinting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddlib import engine
from ddlib.engine import DeviceData
from ddlib.losses import less_forget_loss, margin_ranking_loss
from ddlib.methods import METHODS
from ddlib.methods.base import Round
from ddlib.methods.ucir import UCIR, adaptive_lambda, imprint_weights
from ddlib.models import CosineHead
from ddlib.run import load_scenario

# ---- less-forget constraint and its weight ----------------------------------------------


def test_less_forget_is_mean_one_minus_cosine_of_raw_features():
    new = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    old = torch.tensor([[5.0, 0.0], [2.0, 0.0], [-3.0, -4.0]])  # cos = 1, 0, -1
    assert less_forget_loss(new, old).item() == pytest.approx((0 + 1 + 2) / 3)


def test_less_forget_gradient_reaches_only_the_new_features():
    new = torch.tensor([[1.0, 1.0]], requires_grad=True)
    old = torch.tensor([[1.0, 0.0]], requires_grad=True)
    less_forget_loss(new, old).backward()
    assert new.grad is not None and new.grad.abs().sum() > 0 and old.grad is None


@pytest.mark.parametrize("old,new,expected", [(10, 10, 5.0), (50, 10, 5 * math.sqrt(5)),
                                              (20, 5, 10.0)])
def test_adaptive_lambda_is_base_times_sqrt_old_over_new(old, new, expected):
    assert adaptive_lambda(5.0, old, new) == pytest.approx(expected)


# ---- margin ranking ---------------------------------------------------------------------
# 2 old classes (0, 1), 3 new (2, 3, 4).
COS = torch.tensor([
    [0.9, 0.95, 0.5, 0.8, 0.2],   # y=0: old column 1 (0.95) must not be a negative
    [0.0, 0.3, -0.2, 0.1, 0.6],   # y=1
    [0.9, 0.9, 0.9, -1.0, 0.9],   # y=3: new-class sample, never an anchor
])
Y = torch.tensor([0, 1, 3])


def test_margin_ranking_hand_values():
    # anchor 0: g=.9, h=(.8,.5) -> .4, .1; anchor 1: g=.3, h=(.6,.1) -> .8, .3
    assert margin_ranking_loss(COS, Y, 2, 0.5, 2).item() == pytest.approx(1.6 / 4)


def test_margin_ranking_k1_and_margin_zero():
    assert margin_ranking_loss(COS, Y, 2, 0.5, 1).item() == pytest.approx((0.4 + 0.8) / 2)
    # m = 0: -.1, -.4 -> 0, 0; .3, -.2 -> .3, 0
    assert margin_ranking_loss(COS, Y, 2, 0.0, 2).item() == pytest.approx(0.3 / 4)


def test_margin_ranking_zero_without_old_samples_and_still_differentiable():
    cos = COS.clone().requires_grad_(True)
    loss = margin_ranking_loss(cos, torch.tensor([2, 3, 4]), 2, 0.5, 2)
    loss.backward()
    assert loss.item() == 0.0 and cos.grad.abs().sum() == 0


def test_margin_ranking_mean_is_over_anchors_only():
    # one anchor (row 1: .8, .3) among three rows: the mean is over its k = 2 terms
    assert margin_ranking_loss(COS, torch.tensor([3, 1, 4]), 2, 0.5, 2).item() == \
        pytest.approx(1.1 / 2)


def test_margin_ranking_compiles_once_whatever_the_anchor_count():
    """No host sync and no label-dependent shape: one full graph (a graph break would
    raise) serves batches of 0 to 3 anchors."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    loss = torch.compile(margin_ranking_loss, backend=counter, fullgraph=True, dynamic=False)
    for labels, expected in (([0, 1, 3], 1.6 / 4), ([3, 1, 4], 1.1 / 2), ([2, 3, 4], 0.0),
                             ([0, 0, 1], None)):
        y = torch.tensor(labels)
        got = loss(COS, y, 2, 0.5, 2)
        assert got.item() == pytest.approx(margin_ranking_loss(COS, y, 2, 0.5, 2).item())
        if expected is not None:
            assert got.item() == pytest.approx(expected)
    assert counter.frame_count == 1


def test_margin_ranking_k_is_capped_by_new_class_count():
    # one new class: K=2 reduces to K=1 -> anchor 0: .5-.9+.5 = .1; anchor 1: .5-.3-.2 = 0
    cos = COS[:, :3]
    assert margin_ranking_loss(cos, Y, 2, 0.5, 2).item() == pytest.approx(0.1 / 2)


def test_margin_ranking_gradient_pushes_gt_up_and_negatives_down():
    cos = COS.clone().requires_grad_(True)
    margin_ranking_loss(cos, Y, 2, 0.5, 2).backward()
    g = cos.grad
    assert g[0, 0] < 0 and g[0, 3] > 0 and g[0, 2] > 0 and g[0, 1] == 0 and g[0, 4] == 0
    assert g[2].abs().sum() == 0  # new-class sample untouched


# ---- cosine head ------------------------------------------------------------------------


def test_cosine_head_is_sigma_times_cosine():
    head = CosineHead(2, 2)
    with torch.no_grad():
        head.weight_new.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        head.sigma.fill_(2.0)
    f = torch.tensor([[3.0, 4.0]])
    assert head.cosine(f)[0].tolist() == pytest.approx([0.6, 0.8])
    assert head(f)[0].tolist() == pytest.approx([1.2, 1.6])


def test_cosine_head_init_sigma_and_bounds():
    head = CosineHead(16, 7)
    assert head.num_classes == 7 and head.sigma.item() == 1.0
    assert isinstance(head.sigma, torch.nn.Parameter) and head.sigma.requires_grad
    assert head.weight.abs().max() <= 16 ** -0.5


def test_sigma_receives_gradient():
    head = CosineHead(4, 3)
    F.cross_entropy(head(torch.randn(5, 4)), torch.tensor([0, 1, 2, 0, 1])).backward()
    assert head.sigma.grad is not None and head.sigma.grad.abs().item() > 0


def test_grow_keeps_old_rows_and_freezes_them():
    torch.manual_seed(0)
    head = CosineHead(4, 3)
    before = head.weight.detach().clone()
    head.grow(2)
    assert head.num_classes == 5 and torch.equal(head.weight[:3], before)
    assert not head.weight_old.requires_grad and head.weight_new.shape == (2, 4)


def test_old_rows_unchanged_after_a_step_new_rows_and_sigma_change():
    torch.manual_seed(0)
    head = CosineHead(4, 3)
    head.grow(2)
    old_rows, new_rows = head.weight[:3].detach().clone(), head.weight[3:].detach().clone()
    sigma = head.sigma.item()
    # all parameters handed to the optimiser, with weight decay: the frozen rows get no
    # gradient, so neither the update nor the decay touches them
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    loss = F.cross_entropy(head(torch.randn(8, 4)), torch.arange(8) % 5)
    assert loss.item() > 0
    loss.backward()
    opt.step()
    assert torch.equal(head.weight[:3], old_rows)
    assert not torch.allclose(head.weight[3:], new_rows) and head.sigma.item() != sigma


def test_grow_with_init_imprints_rows():
    head = CosineHead(2, 1)
    init = torch.tensor([[0.0, 3.0]])
    head.grow(1, init=init)
    assert torch.equal(head.weight[1:], init) and head.weight_new.requires_grad
    with pytest.raises(ValueError, match="shape"):
        head.grow(2, init=init)


def test_fresh_is_independent_with_its_own_sigma():
    head = CosineHead(4, 3)
    with torch.no_grad():
        head.sigma.fill_(7.0)
    head.grow(2)
    other = head.fresh(6)
    assert isinstance(other, CosineHead) and other.num_classes == 6
    assert other.sigma.item() == 1.0 and other.weight_old.shape[0] == 0
    assert all(p.data_ptr() != q.data_ptr() for p in other.parameters() for q in head.parameters())


def test_cosine_head_computes_in_float32_under_autocast():
    head = CosineHead(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(2, 4).bfloat16())
    assert out.dtype == torch.float32


# ---- imprinting -------------------------------------------------------------------------


def test_imprinted_rows_are_normalised_means_of_normalised_features_times_mean_norm():
    old = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1 -> scale 3
    feats = [torch.tensor([[2.0, 0.0], [0.0, 6.0]]),  # normalised mean along (1, 1)
             torch.tensor([[-1.0, 0.0]])]
    rows = imprint_weights(feats, old)
    s = 3 / math.sqrt(2)
    assert rows.tolist() == [pytest.approx([s, s]), pytest.approx([-3.0, 0.0])]


def test_ucir_expand_imprints_from_the_current_network(smoke):
    cfg = smoke(method="ucir")
    scenario = load_scenario(cfg)
    data = DeviceData.from_arrays(scenario.data, torch.device("cpu"), pad=2, channels_last=False)
    method = METHODS["ucir"](cfg, scenario, data)
    assert isinstance(method, UCIR) and isinstance(method.model.head, CosineHead)
    assert not method.model.backbone.blocks[-1].last_relu
    method.expand(Round(1, list(range(5)), [], scenario.train_indices(range(5))))
    old_rows = method.model.head.weight.detach().clone()
    with torch.no_grad():
        method.model.head.sigma.fill_(3.0)
    new = list(range(5, 10))
    method.expand(Round(2, new, list(range(5)), scenario.train_indices(new)))
    head = method.model.head
    assert head.num_classes == 10 and head.sigma.item() == 3.0
    assert torch.equal(head.weight[:5], old_rows)
    row = head.weight[5:].detach()
    assert row.norm(dim=1) == pytest.approx(old_rows.norm(dim=1).mean().expand(5), rel=1e-5)
    images = data.train_x[torch.as_tensor(scenario.train_indices([7]))]
    f, _ = engine.infer(method.model, data, images)
    expected = F.normalize(F.normalize(f, dim=1).mean(0), dim=0)
    assert F.cosine_similarity(row[2], expected, dim=0).item() == pytest.approx(1.0)


def test_ucir_objective_combines_the_three_terms(smoke):
    cfg = smoke(method="ucir", ucir_lambda_base=2.0, ucir_lambda_mr=3.0)
    scenario = load_scenario(cfg)
    data = DeviceData.from_arrays(scenario.data, torch.device("cpu"), pad=2, channels_last=False)
    method = METHODS["ucir"](cfg, scenario, data)
    method.model.head.grow(15)  # 15 old classes, then 5 new
    method.model.head.grow(5)
    torch.manual_seed(0)
    d = method.model.head.in_dim
    feats, old_feats = torch.randn(6, d), torch.randn(6, d)
    y = torch.tensor([0, 3, 14, 15, 17, 19])
    logits = method.model.head(feats)
    loss, parts = method.objective(None, y, (feats, logits), (old_feats, torch.zeros(6, 15)))
    lam = 2.0 * math.sqrt(15 / 5)
    cos = method.model.head.cosine(feats)
    expected = (F.cross_entropy(logits, y) + lam * less_forget_loss(feats, old_feats)
                + 3.0 * margin_ranking_loss(cos, y, 15, 0.5, 2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) >= {"Lc", "Llf", "Lmr"}
    loss1, parts1 = method.objective(None, y, (feats, logits), None)
    assert set(parts1) == {"Lc"} and loss1.item() == pytest.approx(parts["Lc"].item())


@pytest.mark.parametrize("field,value", [("ucir_margin", -0.1), ("ucir_k", 0),
                                         ("ucir_lambda_base", -1.0), ("ucir_lambda_mr", -1.0)])
def test_config_rejects_bad_ucir_values(smoke, field, value):
    with pytest.raises(ValueError, match=field):
        smoke(method="ucir", **{field: value})
