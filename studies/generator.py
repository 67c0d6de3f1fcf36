"""Issue #11: how hard the synthetic data is once the `cpu` network is trained to convergence.

The generator's amplitudes were tuned against a 12-epoch network, far from convergence. This
study trains the `cpu` profile's network (ResNet-32 at half width, 16x16, 100 training images
per class) on round 1 alone, the first 10 or 20 classes of class order 0, with plain
cross-entropy and the paper's step schedule (lr 0.1, /10 at 50 % and 75 % of the epochs), for
several fine-class amplitudes (0.14 is the generator's) and epoch counts; `classes=100` is
joint training on every class at once, the incremental methods' upper bound. Its measure is single-task accuracy, a property
of the data and the network only: no incremental method and no DD is involved. The target is
CIFAR-100's round-1 accuracy with ResNet-32 (PROTOCOL 6: 89-91 % on 10 classes, 80-82 % on 20).

Run: `python studies/generator.py 0.14 20 24 48 96` (fine amplitude, classes, epoch counts; one
torch thread); every result is added to `studies/generator.json`.
"""

from __future__ import annotations

import fcntl
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddlib import data as data_module
from ddlib.config import PROFILES
from ddlib.engine import DeviceData, Schedule, infer, train
from ddlib.models import LinearHead, Net, make_backbone
from ddlib.scenario import class_order

HERE = Path(__file__).parent
OUT = HERE / "generator.json"


def single_task(arrays: data_module.ImageArrays, classes: int, epochs: int) -> dict:
    """Train the cpu network on the first `classes` classes of order 0; test accuracy, train
    accuracy of the last epoch and the share of test errors inside the true superclass."""
    cpu = PROFILES["cpu"]
    torch.manual_seed(1993)
    keep = class_order(arrays.num_classes, 0)[:classes]
    relabel = np.full(arrays.num_classes, -1)
    relabel[keep] = np.arange(classes)
    train_y, test_y = relabel[arrays.train_y], relabel[arrays.test_y]
    train_idx, test_mask = np.flatnonzero(train_y >= 0), test_y >= 0
    sub = data_module.ImageArrays(
        "synthetic", arrays.train_x, np.where(train_y >= 0, train_y, 0),
        arrays.test_x[test_mask], test_y[test_mask], class_names=arrays.class_names,
        coarse=arrays.coarse, coarse_names=arrays.coarse_names, mean=arrays.mean, std=arrays.std)
    device = torch.device("cpu")
    dev = DeviceData.from_arrays(sub, device, pad=max(1, round(4 * cpu["image_size"] / 32)),
                                 channels_last=False)
    backbone = make_backbone("resnet32", width=cpu["width"])
    model = Net(backbone, LinearHead(backbone.out_dim, classes))

    def loss_fn(x, y):
        _, logits = model(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean() * 100
        return loss, {"acc": acc}

    schedule = Schedule(epochs=epochs, lr=0.1, milestones=(epochs // 2, epochs * 3 // 4),
                        batch_size=cpu["batch_size"])
    start = time.perf_counter()
    history = train(model, dev, train_idx, loss_fn, schedule,
                    generator=torch.Generator().manual_seed(1993), show_progress=False)
    _, logits = infer(model, dev, dev.test_x)
    pred = logits.argmax(1).numpy()
    true = dev.test_y.numpy()
    wrong = pred != true
    coarse = arrays.coarse[keep]
    inside = (coarse[pred[wrong]] == coarse[true[wrong]]).mean() if wrong.any() else 0.0
    return {"test_acc": round(100 * float(1 - wrong.mean()), 2),
            "train_acc_last_epoch": round(history[-1]["acc"], 2),
            "errors_inside_superclass": round(100 * float(inside), 1),
            "siblings_in_task": int(len(coarse) - len(set(coarse.tolist()))),
            "seconds": round(time.perf_counter() - start, 1)}


def record(key: str, value: dict) -> None:
    with open(OUT.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = json.loads(OUT.read_text()) if OUT.is_file() else {}
        table[key] = value
        OUT.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")


def main(fine_amp: float, coarse_only: float, classes: int, epoch_counts: list[int]) -> None:
    torch.set_num_threads(1)
    cpu = PROFILES["cpu"]
    data_module.FINE_AMP, data_module.COARSE_ONLY = fine_amp, coarse_only
    arrays = data_module.synthetic(
        num_classes=cpu["synthetic_classes"], num_superclasses=cpu["synthetic_superclasses"],
        train_per_class=cpu["train_per_class"], test_per_class=cpu["test_per_class"],
        image_size=cpu["image_size"], seed=0)
    for epochs in epoch_counts:
        result = single_task(arrays, classes, epochs)
        key = f"fine_amp={fine_amp} coarse_only={coarse_only} classes={classes} epochs={epochs}"
        print(f"{key}: {result}", flush=True)
        record(key, result)


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), [int(e) for e in sys.argv[4:]])
