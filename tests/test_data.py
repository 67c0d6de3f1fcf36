"""Tests of ddlib.data: class orders, rounds, scenarios and the three loaders."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddlib.data import CIFAR100_COARSE, CIFAR100_FIGURE1, ImageArrays, arrays, cifar100, synthetic
from ddlib.scenario import Scenario, class_order, dedicated_order_seed, round_sizes
from ddlib.scenario import load_dataset as load

ORDER0 = [int(v) for v in """
68 56 78 8 23 84 90 65 74 76 40 89 3 92 55 9 26 80 43 38 58 70 77 1 85 19 17 50 28 53 13 81 45 82
6 59 83 16 15 44 91 41 72 60 79 52 20 10 31 54 37 95 14 71 96 98 97 2 64 66 42 22 35 86 24 34 87
21 99 0 88 27 18 94 11 12 47 25 30 46 62 69 36 61 7 63 75 5 32 4 51 48 73 93 39 67 29 49 57 33
""".split()]
SMALL = dict(num_classes=20, num_superclasses=4, train_per_class=24, test_per_class=10,
             image_size=16)


# ----------------------------------------------------------------------------- class orders


def test_class_order_matches_protocol_and_leaves_global_rng_alone() -> None:
    state = np.random.get_state()
    assert class_order(100, 0).tolist() == ORDER0
    assert class_order(100, 1)[:10].tolist() == [72, 6, 33, 96, 60, 94, 29, 40, 45, 66]
    assert class_order(100, 2)[:10].tolist() == [91, 18, 57, 73, 66, 71, 68, 61, 44, 54]
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize("num_classes,order", [(100, 0), (100, 5), (1000, 2), (7, 1)])
def test_class_order_is_a_deterministic_permutation(num_classes: int, order: int) -> None:
    perm = class_order(num_classes, order)
    assert perm.dtype == np.int64
    assert sorted(perm.tolist()) == list(range(num_classes))
    assert np.array_equal(perm, class_order(num_classes, order))


def test_figure1_dedicated_orders_are_protocol_seeds_18_and_19() -> None:
    baby, *people = CIFAR100_FIGURE1.values()  # 'baby'; 'boy', 'girl', 'man', 'woman'
    people = tuple(people)
    assert dedicated_order_seed(100, 20, baby, people) == 18
    assert dedicated_order_seed(100, 10, baby, people) == 19
    # PROTOCOL 5.2, seed 18 at 20 per round: baby r1, woman r2, girl r3, boy r4, man r5
    position = np.argsort(class_order(100, 0, seed=18))
    assert [int(position[c]) // 20 + 1 for c in (2, 98, 35, 11, 46)] == [1, 2, 3, 4, 5]
    assert np.array_equal(class_order(100, 7, seed=18), np.random.RandomState(18).permutation(100))
    with pytest.raises(ValueError, match="4 other classes .* the 3 later rounds"):
        dedicated_order_seed(100, 25, baby, people)


def test_class_order_rejects_negative_order() -> None:
    with pytest.raises(ValueError, match="order"):
        class_order(100, -1)


# ----------------------------------------------------------------------------- rounds


@pytest.mark.parametrize("args,expected", [
    ((100, 10, 10), [10] * 10),
    ((100, 20, 20), [20] * 5),
    ((100, 50, 10), [50] + [10] * 5),
    ((100, 10, 30), [10, 30, 30, 30]),
    ((100, 20, 30), [20, 30, 30, 20]),  # the remainder forms a last, smaller round
    ((10, 10, 5), [10]),
])
def test_round_sizes(args: tuple[int, int, int], expected: list[int]) -> None:
    assert round_sizes(*args) == expected
    assert sum(round_sizes(*args)) == args[0]


@pytest.mark.parametrize("args,name", [
    ((100, 0, 10), "init_classes"),
    ((100, 101, 10), "init_classes"),
    ((100, 10, 0), "increment"),
    ((100, 90, 11), "increment"),
])
def test_round_sizes_rejects_bad_values(args: tuple[int, int, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        round_sizes(*args)


def test_round_sizes_says_how_many_classes_are_left() -> None:
    with pytest.raises(ValueError, match="10"):
        round_sizes(100, 90, 11)


# ----------------------------------------------------------------------------- scenario


def tiny_arrays() -> ImageArrays:
    """6 classes in 3 superclasses; pixel value encodes (class, image index) for tracing."""
    train_y = np.array([0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0, 2], dtype=np.int64)
    test_y = np.array([5, 0, 3, 1, 2, 4], dtype=np.int64)
    train_x = np.repeat(np.arange(len(train_y), dtype=np.uint8), 4 * 4 * 3).reshape(-1, 4, 4, 3)
    test_x = np.repeat(np.arange(len(test_y), dtype=np.uint8), 4 * 4 * 3).reshape(-1, 4, 4, 3)
    return ImageArrays(
        name="tiny", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        class_names=[f"k{c}" for c in range(6)],
        coarse=np.array([0, 0, 1, 1, 2, 2], dtype=np.int64),
        coarse_names=["a", "b", "c"], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )


def test_scenario_relabels_consistently() -> None:
    data = tiny_arrays()
    sc = Scenario.build(data, order=0, init_classes=2, increment=2)
    order = class_order(6, 0)
    assert np.array_equal(sc.order, order)
    inverse = np.argsort(order)
    assert np.array_equal(sc.data.train_y, inverse[data.train_y])
    assert np.array_equal(sc.data.test_y, inverse[data.test_y])
    assert sc.data.class_names == [data.class_names[o] for o in order]
    assert np.array_equal(sc.data.coarse, data.coarse[order])
    assert sc.data.coarse_names == data.coarse_names
    assert sc.data.train_x is data.train_x  # images are shared, not copied
    # Label i is original class order[i], for every image.
    assert np.array_equal(order[sc.data.train_y], data.train_y)
    assert np.array_equal(data.train_y, tiny_arrays().train_y)  # the input is left untouched


def test_scenario_rounds_and_indices() -> None:
    sc = Scenario.build(tiny_arrays(), order=3, init_classes=2, increment=3)
    assert sc.rounds == [2, 3, 1] and sc.num_rounds == 3
    assert [sc.seen(r) for r in range(4)] == [0, 2, 5, 6]
    assert [sc.new_classes(r) for r in (1, 2, 3)] == [range(0, 2), range(2, 5), range(5, 6)]
    y = sc.data.train_y
    idx = sc.train_indices(sc.new_classes(2))
    assert np.array_equal(idx, np.flatnonzero((y >= 2) & (y < 5)))
    assert np.array_equal(sc.train_indices([4]), np.flatnonzero(y == 4))
    assert np.array_equal(sc.test_indices(range(sc.seen(3))), np.arange(6))
    assert sc.test_indices([]).size == 0
    with pytest.raises(ValueError, match="round_idx"):
        sc.new_classes(4)


def test_relabel_rejects_non_permutation() -> None:
    with pytest.raises(ValueError, match="order"):
        tiny_arrays().relabel(np.array([0, 0, 1, 2, 3, 4]))


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_with_expected_shapes() -> None:
    a, b, c = synthetic(**SMALL), synthetic(**SMALL), synthetic(**SMALL, seed=1)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.train_x, c.train_x)
    assert a.train_x.shape == (20 * 24, 16, 16, 3) and a.train_x.dtype == np.uint8
    assert a.test_x.shape == (20 * 10, 16, 16, 3) and a.test_x.dtype == np.uint8
    assert a.train_y.dtype == np.int64 and a.test_y.dtype == np.int64
    assert np.array_equal(np.bincount(a.train_y), [24] * 20)
    assert np.array_equal(np.bincount(a.test_y), [10] * 20)
    assert a.num_classes == 20 and a.class_names[7] == "s01_c2"
    assert a.coarse.tolist() == [c // 5 for c in range(20)] and a.coarse_names[3] == "super03"
    flat = a.train_x.reshape(-1, 3) / 255.0
    assert np.allclose(a.mean, flat.mean(axis=0)) and np.allclose(a.std, flat.std(axis=0))


@pytest.mark.parametrize("size", [8, 16])
def test_synthetic_classes_are_hierarchical(size: int) -> None:
    data = synthetic(**{**SMALL, "image_size": size})
    means = np.stack([data.train_x[data.train_y == c].mean(0).ravel() for c in range(20)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    same = data.coarse[:, None] == data.coarse[None]
    for c in range(20):
        siblings = same[c] & (np.arange(20) != c)
        own = np.linalg.norm(means[c] - means[siblings].mean(0))
        assert own < dist[c, ~same[c]].min(), f"class {c} is closer to another superclass"
    within = dist[same & ~np.eye(20, dtype=bool)].mean()
    assert within < 0.5 * dist[~same].mean()


@pytest.mark.parametrize("kwargs,name", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_superclasses": 0}, "num_superclasses"),
    ({"num_superclasses": 3}, "num_superclasses"),  # does not divide 20
    ({"train_per_class": 0}, "train_per_class"),
    ({"test_per_class": 0}, "test_per_class"),
    ({"image_size": 7}, "image_size"),
])
def test_synthetic_rejects_bad_sizes(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        synthetic(**{**SMALL, **kwargs})


# ----------------------------------------------------------------------------- CIFAR-100


def fine_names() -> list[str]:
    return [f"fine{c:02d}" for c in range(100)]


def write_fake_cifar(root: Path, coarse_map: tuple[int, ...] = CIFAR100_COARSE,
                     bytes_keys: bool = True) -> dict[str, Any]:
    """Write train/test/meta pickles in CIFAR-100's layout; return the images and labels written.

    The original files come from Python 2 and load with str keys under latin1; Python 3
    writers produce bytes keys. Both are covered via ``bytes_keys``.
    """
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, per_class in (("train", 2), ("test", 1)):
        fine = np.repeat(np.arange(100), per_class)
        rng.shuffle(fine)
        images = rng.integers(0, 256, (len(fine), 32, 32, 3), dtype=np.uint8)
        entry = {
            key("filenames"): [key(f"img_{i}.png") for i in range(len(fine))],
            key("batch_label"): key(f"{split} batch 1 of 1"),
            key("fine_labels"): fine.tolist(),
            key("coarse_labels"): [coarse_map[f] for f in fine],
            key("data"): images.transpose(0, 3, 1, 2).reshape(len(fine), 3072),  # R, G, B planes
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[split] = (images, fine)
    meta = {key("fine_label_names"): [key(n) for n in fine_names()],
            key("coarse_label_names"): [key(f"coarse{s}") for s in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar100_reads_the_raw_pickles(tmp_path: Path, bytes_keys: bool) -> None:
    written = write_fake_cifar(tmp_path, bytes_keys=bytes_keys)
    data = cifar100(tmp_path)
    assert np.array_equal(data.train_x, written["train"][0]) and data.train_x.dtype == np.uint8
    assert np.array_equal(data.train_y, written["train"][1]) and data.train_y.dtype == np.int64
    assert np.array_equal(data.test_x, written["test"][0])
    assert np.array_equal(data.test_y, written["test"][1])
    assert data.coarse.tolist() == list(CIFAR100_COARSE) and data.coarse.dtype == np.int64
    assert data.class_names == fine_names()
    assert data.coarse_names == [f"coarse{s}" for s in range(20)]
    assert data.num_classes == 100 and data.name == "cifar100"


def test_cifar100_rejects_a_wrong_coarse_map(tmp_path: Path) -> None:
    wrong = list(CIFAR100_COARSE)
    wrong[4] = 1  # beaver is not a fish
    write_fake_cifar(tmp_path, coarse_map=tuple(wrong))
    with pytest.raises(ValueError, match="coarse_labels"):
        cifar100(tmp_path)


def test_cifar100_missing_folder_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        cifar100(tmp_path / "nowhere")
    message = str(err.value)
    assert str((tmp_path / "nowhere" / "cifar-100-python").resolve()) in message
    assert "download" in message


# ----------------------------------------------------------------------------- user arrays


def valid_npz() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "train_x": rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
        "train_y": np.array([0, 1, 2, 3] * 3, dtype=np.int32),
        "test_x": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
        "test_y": np.array([3, 2, 1, 0], dtype=np.uint8),
        "coarse": np.array([0, 0, 1, 1]),
        "class_names": np.array(["a", "b", "c", "d"]),
    }


def test_arrays_round_trip(tmp_path: Path) -> None:
    arrs = valid_npz()
    np.savez(tmp_path / "mine.npz", **arrs)
    data = arrays(tmp_path / "mine.npz")
    assert data.name == "mine" and data.num_classes == 4
    assert np.array_equal(data.train_x, arrs["train_x"])
    assert np.array_equal(data.test_x, arrs["test_x"])
    assert np.array_equal(data.train_y, arrs["train_y"]) and data.train_y.dtype == np.int64
    assert np.array_equal(data.test_y, arrs["test_y"]) and data.test_y.dtype == np.int64
    assert data.coarse.tolist() == [0, 0, 1, 1] and data.class_names == ["a", "b", "c", "d"]
    flat = arrs["train_x"].reshape(-1, 3) / 255.0
    assert np.allclose(data.mean, flat.mean(axis=0)) and np.allclose(data.std, flat.std(axis=0))
    assert load("arrays", data_dir=tmp_path / "mine.npz").class_names == data.class_names


def _drop(d: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in d.items() if k != key}


BAD_NPZ = {
    "missing key": (lambda d: _drop(d, "test_y"), "test_y"),
    "float images": (lambda d: {**d, "train_x": d["train_x"].astype(np.float32)}, "train_x"),
    "wrong channels": (lambda d: {**d, "test_x": d["test_x"][..., :1]}, "test_x"),
    "grey images": (lambda d: {**d, "train_x": d["train_x"][..., 0]}, "train_x"),
    "length mismatch": (lambda d: {**d, "train_y": d["train_y"][:-1]}, "train_y"),
    "empty": (lambda d: {**d, "test_x": d["test_x"][:0], "test_y": d["test_y"][:0]}, "test_x"),
    "negative label": (lambda d: {**d, "train_y": d["train_y"] - 1}, "train_y"),
    "nan labels": (lambda d: {**d, "test_y": np.array([0, 1, np.nan, 2])}, "test_y"),
    "float labels": (lambda d: {**d, "train_y": d["train_y"].astype(float)}, "train_y"),
    "gap in classes": (lambda d: {**d, "train_y": d["train_y"] * 2}, "train_y"),
    "unseen test label": (lambda d: {**d, "test_y": np.array([0, 1, 2, 4])}, "test_y"),
    "coarse length": (lambda d: {**d, "coarse": np.array([0, 1, 1])}, "coarse"),
    "class_names length": (lambda d: {**d, "class_names": np.array(["a", "b"])}, "class_names"),
    "image size mismatch": (lambda d: {**d, "test_x": d["test_x"][:, :4]}, "test_x"),
    "misspelt key": (lambda d: {**_drop(d, "train_x"), "train_X": d["train_x"]}, "train_x"),
    "pickled objects": (lambda d: {**d, "class_names": d["class_names"].astype(object)},
                        "class_names"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_arrays_rejects_malformed_files(tmp_path: Path, case: str) -> None:
    make, key = BAD_NPZ[case]
    np.savez(tmp_path / "bad.npz", **make(valid_npz()))
    with pytest.raises(ValueError, match=key):
        arrays(tmp_path / "bad.npz")


def test_arrays_warns_about_and_ignores_keys_it_does_not_read(tmp_path: Path) -> None:
    np.savez(tmp_path / "meta.npz", **valid_npz(), meta=np.array(["made by gen.py, seed 3"]))
    with pytest.warns(UserWarning, match=r"ignoring key\(s\) \['meta'\]"):
        data = arrays(tmp_path / "meta.npz")
    np.savez(tmp_path / "plain.npz", **valid_npz())
    assert np.array_equal(data.train_x, arrays(tmp_path / "plain.npz").train_x)


def test_arrays_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        arrays(tmp_path / "nothere.npz")


# ----------------------------------------------------------------------------- dispatch


def test_load_dispatches_and_names_the_parameter(tmp_path: Path) -> None:
    data = load("synthetic", data_dir=None, **SMALL)
    assert np.array_equal(data.train_x, synthetic(**SMALL).train_x)
    with pytest.raises(ValueError, match="dataset.*synthetic.*cifar100.*arrays"):
        load("mnist", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="download"):
        load("cifar100", data_dir=tmp_path)


def test_synthetic_images_match_their_version():
    """The images of `SYNTHETIC_VERSION`: a change to the generator must bump the version
    (it is part of every synthetic run's identity), then update this fingerprint."""
    import hashlib

    from ddlib.config import SYNTHETIC_VERSION

    d = synthetic(num_classes=8, num_superclasses=2, train_per_class=3, test_per_class=2,
                  image_size=8, seed=0)
    digest = hashlib.sha256(d.train_x.tobytes() + d.test_x.tobytes()).hexdigest()[:16]
    assert (SYNTHETIC_VERSION, digest) == (3, "4e04cd18886cea8b")
