"""Backbones and head growth."""

from __future__ import annotations

import torch

from ddlib.methods.bic import BiasLayer
from ddlib.models import LinearHead, Net, ResNet32, count_parameters


def test_head_growth_keeps_old_weights_and_logits():
    torch.manual_seed(0)
    net = Net(ResNet32(width=0.25), LinearHead(16, 3)).eval()
    x = torch.randn(4, 3, 16, 16)
    before_w = net.head.weight.detach().clone()
    before_b = net.head.bias.detach().clone()
    _, logits_before = net(x)
    net.head.grow(2)
    _, logits_after = net(x)
    assert net.num_classes == 5 and logits_after.shape == (4, 5)
    assert torch.equal(net.head.weight[:3], before_w) and torch.equal(net.head.bias[:3], before_b)
    assert torch.allclose(logits_after[:, :3], logits_before)


def test_resnet32_size_and_shape():
    net = ResNet32()
    assert 0.45e6 < count_parameters(net) < 0.47e6  # PROTOCOL 2: about 0.46 M
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert net.feature_map(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)


def test_fresh_head_is_independent():
    head = LinearHead(8, 4)
    other = head.fresh(3)
    assert other.num_classes == 3 and other.weight.data_ptr() != head.weight.data_ptr()


def test_bias_layer_touches_only_its_slice():
    layer = BiasLayer(2, 4)
    with torch.no_grad():
        layer.alpha.fill_(2.0)
        layer.beta.fill_(1.0)
    out = layer(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert out.tolist() == [[1.0, 2.0, 7.0, 9.0]]
