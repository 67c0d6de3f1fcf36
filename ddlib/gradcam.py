"""Grad-CAM (Selvaraju et al., ICCV 2017) over rounds, as PROTOCOL 5.4 specifies (Figure 6).

target = ground-truth class logit before softmax (sigma * cos for UCIR: the model's logits
already are that); A = output of the final residual block (`backbone.feature_map`, the tensor
fed to global average pooling) or, with layer="last_conv", the last convolution of that block
(PyCIL's hook); w_k = spatial mean of d target / d A_k; map = ReLU(sum_k w_k A_k), bilinear
upsampling to the input size, min-max normalised to [0, 1]. Model in eval mode, float32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checkpoint, results
from .analysis import as_results, display_name
from .config import RunConfig
from .scenario import Scenario
from .engine import DeviceData, infer
from .methods import METHODS
from .models import Net
from .run import checkpoint_path, load_scenario, round_one_path

Layer = Literal["block_out", "last_conv"]


def _last_conv(backbone: nn.Module) -> nn.Conv2d:
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]  # the final block's second convolution (its shortcut is the identity)


def grad_cam(model: Net, images: Tensor, targets: int | Tensor, *,
             layer: Layer = "block_out") -> Tensor:
    """Grad-CAM maps in [0, 1] of normalised `images` (3, H, W) or (B, 3, H, W) for class
    labels `targets` (one int or (B,)); returns (H, W) or (B, H, W) on the images' device."""
    if layer not in ("block_out", "last_conv"):
        raise ValueError(f"layer={layer!r} is unknown; choose 'block_out' or 'last_conv'")
    single = images.dim() == 3
    x = (images[None] if single else images).float()
    device = next(model.parameters()).device
    x = x.to(device)
    targets = torch.as_tensor(targets, device=device).long().reshape(-1)
    if len(targets) not in (1, len(x)):
        raise ValueError(f"{len(targets)} targets for {len(x)} images")
    targets = targets.expand(len(x))
    if int(targets.max()) >= model.num_classes or int(targets.min()) < 0:
        raise ValueError(f"target class out of range 0..{model.num_classes - 1}")
    was_training = model.training
    model.eval()
    captured: list[Tensor] = []
    hook = None
    if layer == "last_conv":
        hook = _last_conv(model.backbone).register_forward_hook(
            lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            fmap = model.backbone.feature_map(x)            # (B, C, h, w)
            logits = model.head(fmap.mean(dim=(2, 3)))      # the backbone's GAP, then head
            acts = captured[-1] if captured else fmap
            score = logits.gather(1, targets[:, None]).sum()  # images are independent in eval
            grads, = torch.autograd.grad(score, acts)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)          # (B, C, 1, 1)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - low
    cam = torch.where(span > 0, (cam - low) / span.clamp_min(1e-12), torch.zeros_like(cam))
    return cam[0] if single else cam


# ----------------------------------------------------------------------------- checkpoints


def _locate(run: dict | str | Path) -> tuple[dict, RunConfig]:
    """Record and config of a run; a JSON path moved since the run keeps its checkpoints
    findable because `results_dir` is re-derived from where the file lies now."""
    result = as_results(run)[0]
    cfg = RunConfig.from_dict(result["config"])
    if isinstance(run, (str, Path)) and Path(run).is_file():
        path = Path(run).resolve()
        # <results_dir>/<profile>/<dataset>/<run_name>/inc<N>/<file>.json (ddlib.results)
        moved = dataclasses.replace(cfg, results_dir=str(path.parents[4]))
        if results.result_path(moved) == path:
            cfg = moved
    return result, cfg


def load_round_model(run: dict | str | Path, round_idx: int, *, device: str = "cpu",
                     scenario: Scenario | None = None,
                     data: DeviceData | None = None) -> tuple[Net, DeviceData, Scenario]:
    """The model after `round_idx` of a stored run, rebuilt from its checkpoint (round 1 may
    be the copy shared by all arms), with the run's data; pass `scenario`/`data` to reuse."""
    result, cfg = _locate(run)
    dev = torch.device(device)
    scenario = scenario or load_scenario(cfg)
    if data is None:
        data = DeviceData.from_arrays(scenario.data, dev, pad=0, channels_last=False)
    if not 1 <= round_idx <= scenario.num_rounds:
        raise ValueError(f"round_idx={round_idx} must lie in 1..{scenario.num_rounds}")
    state = checkpoint.load(checkpoint_path(cfg, round_idx))
    want = cfg.identity()
    # a run that took round 1 from the shared copy may have left an older config's round 1
    if round_idx == 1 and (state is None or state["identity"] != want):
        state, want = checkpoint.load(round_one_path(cfg)), cfg.round_one_identity()
    if state is None:
        raise FileNotFoundError(f"no checkpoint of round {round_idx} for {display_name(result)}"
                                f": looked for {checkpoint_path(cfg, round_idx)}")
    if state["identity"] != want:
        raise ValueError(f"the checkpoint of round {round_idx} belongs to another configuration "
                         f"(identity {state['identity']}, expected {want})")
    method = METHODS[cfg.method](cfg, scenario, data)
    method.load_state(state)
    model = method.model.float().eval()
    return model, data, scenario


# ----------------------------------------------------------------------------- Figure 6


@dataclass
class GradCamSeries:
    """Grad-CAM of a few test images through every round, for a baseline and its +DD run."""

    runs: list[str]             # display names, e.g. ["UCIR", "UCIR+DD"]
    rounds: list[int]
    classes_seen: list[int]
    test_indices: list[int]     # into the scenario's test set
    labels: list[int]           # ground-truth labels (class-order positions)
    class_names: list[str]      # names of the ground-truth classes
    images: np.ndarray          # uint8 (n, H, W, 3), not normalised
    maps: np.ndarray            # float32 (runs, rounds, n, H, W) in [0, 1]
    predictions: np.ndarray     # int (runs, rounds, n): CNN prediction of that round's model
    predicted_names: list[list[list[str]]]
    layer: str = "block_out"

    @property
    def correct(self) -> np.ndarray:
        """(runs, rounds, n) bool: was the round's CNN prediction right."""
        return self.predictions == np.asarray(self.labels)[None, None]


def choose_images(last_pred_baseline: np.ndarray, last_pred_dd: np.ndarray, labels: np.ndarray,
                  num_images: int) -> list[int]:
    """Positions (into the given round-1 test images, in test order) of the first image of
    each class that the baseline gets wrong and +DD right at the last round; then, to fill
    `num_images`, the first image of further classes (PROTOCOL 5.4)."""
    wanted = (last_pred_baseline != labels) & (last_pred_dd == labels)
    chosen: list[int] = []
    for pool in (np.flatnonzero(wanted), np.arange(len(labels))):
        for i in pool.tolist():
            if len(chosen) < num_images and labels[i] not in {labels[j] for j in chosen}:
                chosen.append(i)
    return chosen


def gradcam_over_rounds(baseline: Any, dd: Any, *, num_images: int = 2,
                        test_indices: list[int] | None = None, device: str = "cpu",
                        layer: Layer = "block_out") -> GradCamSeries:
    """Load every round's model of a (baseline, +DD) pair from its checkpoints and compute
    Grad-CAM of test images whose class was learned in round 1 (chosen by `choose_images`
    unless `test_indices` are given)."""
    pair = [_locate(r) for r in (baseline, dd)]
    keys = [(c.dataset, c.order, c.increment, c.init_classes, c.method) for _, c in pair]
    if keys[0] != keys[1]:
        raise ValueError(f"the two runs differ in (dataset, order, increment, init_classes, "
                         f"method): {keys[0]} vs {keys[1]}")
    scenario = load_scenario(pair[0][1])
    data = DeviceData.from_arrays(scenario.data, torch.device(device), pad=0, channels_last=False)
    first = scenario.test_indices(scenario.new_classes(1))
    rounds = list(range(1, scenario.num_rounds + 1))
    models = [[load_round_model(r, k, device=device, scenario=scenario, data=data)[0]
               for k in rounds] for r in (baseline, dd)]
    if test_indices is None:
        first_idx = torch.as_tensor(first, device=device)
        last = [infer(m[-1], data, data.test_x, first_idx)[1].argmax(1).cpu().numpy()
                for m in models]
        picked = choose_images(last[0], last[1], scenario.data.test_y[first], num_images)
        test_indices = first[picked].tolist()
    bad = [i for i in test_indices if i not in set(first.tolist())]
    if bad:
        raise ValueError(f"test images {bad} are not of a round-1 class")
    idx = torch.as_tensor(test_indices, device=device)
    x = data.augment.normalize(data.test_x[idx])
    y = data.test_y[idx]
    maps, preds = [], []
    for run_models in models:
        maps.append([grad_cam(m, x, y, layer=layer).cpu().numpy() for m in run_models])
        preds.append([infer(m, data, data.test_x, idx)[1].argmax(1).cpu().numpy()
                      for m in run_models])
    names = scenario.data.class_names
    preds_arr = np.asarray(preds)
    return GradCamSeries(
        runs=[display_name(r) for r, _ in pair], rounds=rounds,
        classes_seen=[scenario.seen(k) for k in rounds], test_indices=list(test_indices),
        labels=y.cpu().tolist(), class_names=[names[c] for c in y.cpu().tolist()],
        images=data.test_x[idx].permute(0, 2, 3, 1).cpu().numpy(),
        maps=np.asarray(maps, dtype=np.float32), predictions=preds_arr,
        predicted_names=[[[names[c] for c in row] for row in run] for run in preds_arr],
        layer=layer)
