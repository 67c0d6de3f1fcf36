"""Grad-CAM (PROTOCOL 5.4): a planted patch, a hook-based reference, checkpoints of a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddlib import RunConfig, gradcam, run
from ddlib.metrics import confusion_matrix
from ddlib.methods.bic import BiasCorrectedHead, BiasLayer
from ddlib.models import CosineHead, LinearHead, Net, make_backbone
from ddlib.run import load_scenario

ROWS, COLS = slice(2, 8), slice(9, 15)  # the planted patch of class 1 in 16x16 images


class TinyBackbone(nn.Module):
    """Two 3x3 convolutions at full resolution: a feature map that can localise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.out_dim = 8

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


def patch_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dim noise; class 1 images carry a bright patch at a fixed place."""
    x = torch.rand(n, 3, 16, 16, generator=generator) * 0.5
    y = torch.randint(0, 2, (n,), generator=generator)
    x[y == 1, :, ROWS, COLS] = 1.0
    return (x - 0.5) / 0.25, y


def test_peak_lies_in_the_planted_patch():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = Net(TinyBackbone(), LinearHead(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        x, y = patch_batch(32, gen)
        loss = F.cross_entropy(net(x)[1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = patch_batch(64, gen)
    with torch.no_grad():
        assert (net(x)[1].argmax(1) == y).float().mean() > 0.95
    maps = gradcam.grad_cam(net, x[y == 1], 1)
    assert maps.shape == (int((y == 1).sum()), 16, 16)
    assert maps.min() >= 0 and maps.max() <= 1
    for m in maps:
        r, c = divmod(int(m.argmax()), 16)
        assert ROWS.start <= r < ROWS.stop and COLS.start <= c < COLS.stop


def small_net(head: str) -> Net:
    """Width-0.25 ResNet-32 with a signed last block and UCIR's cosine head, or BiC's linear
    head with a bias layer (Grad-CAM must see the logits after it)."""
    torch.manual_seed(1)
    if head == "cosine":
        top: nn.Module = CosineHead(16, 4)
    else:
        top = BiasCorrectedHead(16, 4)
        top.bias_layers.append(BiasLayer(2, 4))
        with torch.no_grad():
            top.bias_layers[0].alpha.fill_(0.7)
    net = Net(make_backbone("resnet32", width=0.25, shortcut="B", last_relu=False), top)
    return net.eval()


def reference_cam(net: Net, x: torch.Tensor, target: int, module: nn.Module) -> torch.Tensor:
    """Grad-CAM written the usual way: hooks on `module`, gradient of the target logit."""
    store = {}
    handle = module.register_forward_hook(lambda _m, _i, out: store.update(a=out))
    logits = net(x)[1]
    handle.remove()
    grad, = torch.autograd.grad(logits[0, target], store["a"])
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("head", ["cosine", "bias_corrected"])
@pytest.mark.parametrize("layer", ["block_out", "last_conv"])
def test_matches_a_hook_reference(layer, head):
    net = small_net(head)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    module = net.backbone.blocks if layer == "block_out" else net.backbone.blocks[-1].conv2
    maps = gradcam.grad_cam(net, x, torch.tensor([0, 2, 3]), layer=layer)
    for i, target in enumerate([0, 2, 3]):
        expected = reference_cam(net, x[i:i + 1], target, module)
        torch.testing.assert_close(maps[i], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gradcam.grad_cam(net, x[1], 2, layer=layer), maps[1])
    assert not net.training
    with pytest.raises(ValueError, match="out of range"):
        gradcam.grad_cam(net, x, 4)
    with pytest.raises(ValueError, match="layer"):
        gradcam.grad_cam(net, x, 0, layer="conv1")


def test_choose_images():
    labels = np.array([0, 0, 1, 1, 2, 2])
    base = np.array([0, 1, 1, 0, 2, 0])   # wrong on 1, 3, 5
    dd = np.array([0, 0, 1, 1, 2, 1])     # right on 1, 3, not 5
    assert gradcam.choose_images(base, dd, labels, 1) == [1]
    assert gradcam.choose_images(base, dd, labels, 2) == [1, 3]
    assert gradcam.choose_images(base, dd, labels, 3) == [1, 3, 4]  # fallback: a third class
    assert gradcam.choose_images(labels, labels, labels, 2) == [0, 2]  # none wanted


@pytest.fixture(scope="module")
def smoke_pair(tmp_path_factory):
    """iCaRL and iCaRL+DD smoke runs, in the folder the analysis tests share."""
    folder = tmp_path_factory.getbasetemp() / "analysis_smoke_results"
    return [run(RunConfig.resolve("smoke", method="icarl", dd=dd, results_dir=str(folder),
                                  progress=False), verbose=False) for dd in (False, True)]


@pytest.mark.slow
def test_round_models_reproduce_the_stored_predictions(smoke_pair):
    base, dd = smoke_pair
    last = len(base["rounds"])
    model, data, scenario = gradcam.load_round_model(dd, last)
    idx = torch.as_tensor(scenario.test_indices(range(scenario.seen(last))))
    with torch.no_grad():
        pred = model(data.augment.normalize(data.test_x[idx]))[1].argmax(1).numpy()
    counts = confusion_matrix(data.test_y[idx].numpy(), pred, scenario.seen(last))
    np.testing.assert_array_equal(counts, dd["rounds"][-1]["confusion_cnn"])
    # round 1 of a +DD run lives in the checkpoint shared with its baseline
    one, _, _ = gradcam.load_round_model(dd, 1, scenario=scenario, data=data)
    assert one.num_classes == scenario.seen(1)


@pytest.mark.slow
def test_gradcam_over_rounds(smoke_pair):
    base, dd = smoke_pair
    series = gradcam.gradcam_over_rounds(base, dd, num_images=2)
    rounds = len(base["rounds"])
    assert series.runs == ["iCaRL", "iCaRL+DD"] and series.rounds == list(range(1, rounds + 1))
    assert series.maps.shape == (2, rounds, 2, 16, 16)
    assert series.images.dtype == np.uint8 and series.images.shape == (2, 16, 16, 3)
    assert len(set(series.labels)) == 2 and max(series.labels) < series.classes_seen[0]
    assert series.correct.shape == (2, rounds, 2)
    np.testing.assert_array_equal(series.maps[0, 0], series.maps[1, 0])  # round 1 is shared
    scenario = load_scenario(RunConfig.from_dict(base["config"]))
    late = int(scenario.test_indices([scenario.seen(rounds) - 1])[0])  # a last-round class
    with pytest.raises(ValueError, match="round-1 class"):
        gradcam.gradcam_over_rounds(base, dd, test_indices=[late])
