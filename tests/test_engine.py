"""Batched augmentation and the training loop's guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddlib.augment import Augment
from ddlib.engine import DeviceData, Schedule, train
from ddlib.models import LinearHead, Net, ResNet32


def test_batched_crop_flip_equals_per_image_reference():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    aug = Augment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), pad=2, device=torch.device("cpu"))
    out = aug.train(images, torch.Generator().manual_seed(7))
    # replay the same random draws, then crop and flip one image at a time
    gen = torch.Generator().manual_seed(7)
    off_y = torch.randint(0, 5, (6, 1), generator=gen)
    off_x = torch.randint(0, 5, (6, 1), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    for i in range(6):
        padded = torch.nn.functional.pad(images[i], (2, 2, 2, 2))
        crop = padded[:, off_y[i, 0]:off_y[i, 0] + 8, off_x[i, 0]:off_x[i, 0] + 8]
        if flip[i]:
            crop = crop.flip(2)
        expected = (crop.float() / 255 - 0.5) / 0.25
        assert torch.allclose(out[i], expected, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_normalize_is_the_test_transform():
    aug = Augment((0.5, 0.25, 0.0), (0.5, 0.5, 1.0), pad=4, device=torch.device("cpu"))
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert aug.normalize(x)[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.5, 1.0])


def _tiny_data():
    rng = np.random.default_rng(0)

    class Arrays:
        train_x = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
        train_y = np.arange(16) % 2
        test_x, test_y = train_x[:4], train_y[:4]
        mean, std = (0.5,) * 3, (0.25,) * 3

    return DeviceData.from_arrays(Arrays, torch.device("cpu"), pad=1, channels_last=False)


def test_nan_loss_stops_with_round_and_epoch_named():
    data = _tiny_data()
    net = Net(ResNet32(width=0.25), LinearHead(16, 2))

    def loss_fn(x, y):
        _, logits = net(x)
        return logits.sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match=r"round 3 classifier, epoch 1"):
        train(net, data, np.arange(16), loss_fn, Schedule(2, 0.1, batch_size=8),
              generator=torch.Generator().manual_seed(0), desc="round 3 classifier",
              show_progress=False)


def test_training_reduces_the_loss_and_uses_the_schedule():
    torch.manual_seed(0)
    data = _tiny_data()
    net = Net(ResNet32(width=0.25), LinearHead(16, 2))

    def loss_fn(x, y):
        _, logits = net(x)
        return torch.nn.functional.cross_entropy(logits, y), {}

    history = train(net, data, np.arange(16), loss_fn, Schedule(6, 0.05, (4,), batch_size=8),
                    generator=torch.Generator().manual_seed(0), show_progress=False)
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    assert not net.training  # left in eval mode for what follows (herding, evaluation)


def _memmapped(tmp_path, x: np.ndarray) -> np.memmap:
    np.save(tmp_path / "x.npy", x)
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def test_memory_mapped_training_images_stay_on_disk_and_train_identically(tmp_path):
    in_memory = _tiny_data()
    arrays = type("Arrays", (), dict(train_x=_memmapped(tmp_path, in_memory.train_x.permute(
        0, 2, 3, 1).numpy()), train_y=np.arange(16) % 2, mean=(0.5,) * 3, std=(0.25,) * 3))
    arrays.test_x, arrays.test_y = arrays.train_x[:4], arrays.train_y[:4]
    on_disk = DeviceData.from_arrays(arrays, torch.device("cpu"), pad=1, channels_last=False)
    assert on_disk.on_disk and not in_memory.on_disk
    assert isinstance(on_disk.test_x, torch.Tensor)  # test images are always loaded
    assert torch.equal(on_disk.test_x, in_memory.test_x)
    idx = np.array([5, 0, 11])  # any order, as herding and the expert ask
    assert torch.equal(on_disk.train_images(idx), in_memory.train_images(idx))

    weights = []
    for data in (in_memory, on_disk):
        torch.manual_seed(0)
        net = Net(ResNet32(width=0.25), LinearHead(16, 2))

        def loss_fn(x, y, net=net):
            return torch.nn.functional.cross_entropy(net(x)[1], y), {}

        # 16 images in batches of 6: the last batch is short, read ahead like the others
        train(net, data, np.arange(16), loss_fn, Schedule(2, 0.05, batch_size=6),
              generator=torch.Generator().manual_seed(0), show_progress=False)
        weights.append(torch.cat([p.flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("batch_size, sizes", [(5, [5, 5, 5, 1]), (2, [2] * 8)])
def test_batches_cover_the_order_once_with_matching_labels(tmp_path, batch_size, sizes):
    # 8 batches > READ_AHEAD: the read-ahead queue is refilled while batches are consumed
    data = _tiny_data()
    disk = DeviceData(_memmapped(tmp_path, data.train_x.permute(0, 2, 3, 1).numpy()),
                      data.train_y, data.test_x, data.test_y, data.augment)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    for source in (data, disk):
        got = list(source.batches(order, batch_size))
        assert [len(x) for x, _ in got] == sizes
        assert torch.equal(torch.cat([x for x, _ in got]), data.train_x[order])
        assert torch.equal(torch.cat([y for _, y in got]), data.train_y[order])
