"""ImageNet-1k / ImageNet-Subset on a tiny fake ImageFolder tree: decoding, cache, subset
rule, errors, the random-resized crop, the config table and one wired-up round."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddlib import RunConfig, engine, imagenet as inet
from ddlib.augment import Augment, random_resized_crop
from ddlib.scenario import load_dataset as load
from ddlib.engine import DeviceData
from ddlib.models import ResNet18

WNIDS = [f"n0{i}00{i}" for i in (7, 3, 9, 1, 5, 2)]  # deliberately unsorted
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200),
           (200, 30, 200)]  # class colour, by sorted wnid
TRAIN_SIZES = [(40, 30), (30, 50), (64, 64), (25, 60)]  # (width, height): mixed aspect ratios
VAL_SIZES = [(50, 20), (33, 33)]


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=100, subsampling=0)


def _tree(root: Path, wnids: list[str] = WNIDS) -> Path:
    """train/<wnid>/ and val/<wnid>/ of solid images in the class's colour."""
    for wnid in wnids:
        colour = COLOURS[sorted(wnids).index(wnid) % len(COLOURS)]
        for split, sizes in (("train", TRAIN_SIZES), ("val", VAL_SIZES)):
            for i, size in enumerate(sizes):
                _save(root / split / wnid / f"{wnid}_{i}.JPEG", Image.new("RGB", size, colour))
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path / "imagenet")


# ----------------------------------------------------------------------------- loading


def test_arrays_shapes_dtypes_and_labels(tree: Path) -> None:
    data = inet.imagenet(tree, subset=False, image_size=16)
    assert data.name == "imagenet" and data.class_names == sorted(WNIDS)
    assert data.train_x.shape == (24, 16, 16, 3) and data.test_x.shape == (12, 16, 16, 3)
    assert data.train_x.dtype == data.test_x.dtype == np.uint8
    assert data.train_y.dtype == data.test_y.dtype == np.int64
    assert np.bincount(data.train_y).tolist() == [4] * 6
    assert np.bincount(data.test_y).tolist() == [2] * 6
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        colour = x.reshape(len(x), -1, 3).mean(axis=1)  # solid images: label <-> colour
        assert np.abs(colour - np.array(COLOURS)[y]).max() < 6
    assert data.mean == inet.IMAGENET_MEAN and data.std == inet.IMAGENET_STD
    assert data.coarse is None
    via_load = load("imagenet", data_dir=tree, image_size=16)
    assert np.array_equal(via_load.train_x, data.train_x)


def _bands(width: int, height: int) -> Image.Image:
    """Four equal bands along the longer side: red, green, blue, yellow."""
    image = Image.new("RGB", (width, height))
    long = max(width, height)
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        lo, hi = k * long // 4, (k + 1) * long // 4
        image.paste(colour, (lo, 0, hi, height) if width >= height else (0, lo, width, hi))
    return image


@pytest.mark.parametrize("width, height, size", [(40, 20, 10), (20, 40, 10), (400, 200, 16)])
def test_shorter_side_resize_then_centre_crop(tmp_path: Path, width, height, size) -> None:
    # A centre crop of the middle half keeps exactly the green and blue bands; squashing
    # would keep all four, a corner crop red and green. 400x200 also exercises JPEG draft.
    _save(tmp_path / "a.JPEG", _bands(width, height))
    img = inet._decode(tmp_path / "a.JPEG", size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    if height > width:
        img = img.transpose(1, 0, 2)  # bands along rows: look at them as columns
    inner = slice(1, size * 2 // 5)  # the outermost column may blend in the next band
    assert np.abs(img[:, inner].astype(int) - (0, 255, 0)).max() < 40
    assert np.abs(img[:, ::-1][:, inner].astype(int) - (0, 0, 255)).max() < 40


def test_test_images_are_resized_to_256_of_224_then_centre_cropped(tree: Path) -> None:
    # PROTOCOL 1.5: test = shorter side to 256 (for 224), centre crop 224; train = the centre
    # square of a shorter side at image_size. A framed image tells the two apart: at 28 the
    # test resize is 32, and its centre crop cuts the whole 2-px (at 32) frame away.
    framed = Image.new("RGB", (64, 64), (255, 0, 0))
    framed.paste((0, 255, 0), (4, 4, 60, 60))
    for split in ("train", "val"):
        _save(tree / split / WNIDS[0] / f"{WNIDS[0]}_0.JPEG", framed)
    data = inet.imagenet(tree, subset=False, image_size=28)
    first = int(np.flatnonzero(data.test_y == sorted(WNIDS).index(WNIDS[0]))[0])
    test_image = data.test_x[first].astype(int)
    assert np.abs(test_image - (0, 255, 0)).max() < 40  # frame cut away
    train_first = int(np.flatnonzero(data.train_y == sorted(WNIDS).index(WNIDS[0]))[0])
    assert data.train_x[train_first, 0, 14].tolist()[0] > 150  # frame kept: red top row
    assert np.array_equal(data.test_x[first],
                          inet._decode(tree / "val" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG", 28, 32))


def test_cache_is_memory_mapped_reused_and_invalidated(tree: Path, monkeypatch) -> None:
    first = inet.imagenet(tree, subset=False, image_size=16)
    cache = tree / "ddlib-cache-full-16"
    assert (cache / "fingerprint").is_file()
    assert not list(tree.glob(".ddlib-cache*.partial-*"))  # no partial folder left

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(Image, "open", refuse)
    second = inet.imagenet(tree, subset=False, image_size=16)
    assert isinstance(second.train_x, np.memmap) and isinstance(second.test_x, np.memmap)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(first, key), getattr(second, key))
    assert second.class_names == first.class_names
    # A changed tree invalidates the cache: the new file list must be decoded again.
    monkeypatch.undo()
    _save(tree / "train" / WNIDS[0] / "extra.JPEG", Image.new("RGB", (20, 20)))
    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(AssertionError, match="decoded"):
        inet.imagenet(tree, subset=False, image_size=16)


def test_a_cache_cut_short_or_left_partial_is_rebuilt(tree: Path) -> None:
    inet.imagenet(tree, subset=False, image_size=8)
    cache = tree / "ddlib-cache-full-8"
    (cache / "train_x.npy").write_bytes((cache / "train_x.npy").read_bytes()[:200])
    with pytest.warns(UserWarning, match="ignoring unreadable cache"):
        data = inet.imagenet(tree, subset=False, image_size=8)
    assert data.train_x.shape == (24, 8, 8, 3)
    assert np.load(cache / "train_x.npy").shape == (24, 8, 8, 3)
    # A crash while decoding leaves a partial folder without a fingerprint: never read, and
    # removed by the next decode when it is abandoned: its process gone on this host, or
    # untouched for a day on another (whose processes this one cannot see).
    (cache / "fingerprint").unlink()
    here = socket.gethostname()
    partial = ".ddlib-cache-full-8.partial-"
    crashed, alive = tree / f"{partial}{here}-999999999", tree / f"{partial}{here}-{os.getppid()}"
    elsewhere, abandoned = tree / f"{partial}other-host-1", tree / f"{partial}gone-host-1"
    for folder in (crashed, alive, elsewhere, abandoned):
        folder.mkdir()
        (folder / "train_x.npy").write_bytes(b"")
    old = time.time() - inet.STALE_PARTIAL_S - 60
    for path in (abandoned, abandoned / "train_x.npy"):
        os.utime(path, (old, old))
    assert inet.imagenet(tree, subset=False, image_size=8).train_x.shape == (24, 8, 8, 3)
    assert (cache / "fingerprint").is_file()
    assert not crashed.exists() and not abandoned.exists()
    assert alive.is_dir() and elsewhere.is_dir()


def test_a_cache_another_decoder_finished_first_is_taken(tree: Path, monkeypatch) -> None:
    # On a file system whose locks do not reach across hosts two decoders may overlap: the
    # one that finishes second finds a valid cache where it would rename its own, takes it
    # and removes its own folder.
    first = inet.imagenet(tree, subset=False, image_size=8)
    cache = tree / "ddlib-cache-full-8"
    fingerprint = (cache / "fingerprint").read_text()
    shutil.rmtree(cache)
    decode = inet._decode_splits

    def overtaken(out: Path, *args) -> None:
        decode(out, *args)
        shutil.copytree(out, cache)  # the other decoder's rename
        (cache / "fingerprint").write_text(fingerprint)

    monkeypatch.setattr(inet, "_decode_splits", overtaken)
    data = inet.imagenet(tree, subset=False, image_size=8)
    assert Path(data.train_x.filename) == cache / "train_x.npy"
    assert np.array_equal(data.train_x, first.train_x)
    assert not list(tree.glob(".ddlib-cache-full-8.partial-*"))


def test_a_file_system_without_locks_still_decodes(tree: Path, monkeypatch) -> None:
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(inet.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="does not lock files.*first cache finished is kept"):
        data = inet.imagenet(tree, subset=False, image_size=8)
    assert data.train_x.shape == (24, 8, 8, 3)


# Under torchrun every rank loads the dataset: the first to take the cache's lock decodes
# (slowly here, so that the other arrives meanwhile), the other waits, then reads its cache.
DECODE_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from ddlib import distributed, imagenet as inet

    tree, log = sys.argv[1], sys.argv[2]
    distributed.init(torch.device("cpu"))
    decode = inet._decode_splits

    def logged(*args):
        with open(log, "a") as out:
            out.write(f"rank {distributed.rank()}\\n")
        time.sleep(5)
        decode(*args)

    inet._decode_splits = logged
    data = inet.imagenet(tree, subset=False, image_size=8)
    sums = distributed.all_gather_object(int(data.train_x.sum()) + int(data.test_x.sum()))
    assert len(set(sums)) == 1, sums
""")


@pytest.mark.slow
def test_ranks_of_one_torchrun_decode_the_cache_once(tree: Path, tmp_path: Path) -> None:
    script, log = tmp_path / "decode.py", tmp_path / "decodes.log"
    script.write_text(DECODE_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), str(tree), str(log)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(log.read_text().splitlines()) == 1, log.read_text()
    assert "waiting for" in done.stderr  # the other rank said whom it waits for
    assert (tree / "ddlib-cache-full-8" / "fingerprint").is_file()
    assert not list(tree.glob(".ddlib-cache-full-8.partial-*"))


def test_read_only_root_caches_in_the_user_cache(tree: Path, tmp_path: Path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    real_access = inet.os.access
    monkeypatch.setattr(inet.os, "access", lambda path, mode: False if Path(path) == tree
                        else real_access(path, mode))
    with pytest.warns(UserWarning, match="read-only: caching the decoded images in .*home-cache"):
        data = inet.imagenet(tree, subset=False, image_size=8)
    assert data.train_x.shape == (24, 8, 8, 3)
    assert not list(tree.glob("*ddlib-cache*"))
    assert len(list((tmp_path / "home-cache" / "ddlib").glob("*/ddlib-cache-full-8"))) == 1


# ----------------------------------------------------------------------------- subset rule

# PROTOCOL 1.1: positions in the sorted 1000-wnid list of the 100 subset classes.
SUBSET_FIRST_DRAWN = [54, 7, 894, 512, 126, 337, 988, 11, 284, 493]
SUBSET_POSITIONS = [int(v) for v in """
7 11 14 44 54 62 75 77 85 105 108 123 126 127 133 142 160 174 186 192 215 219 224 238 240
260 262 274 275 279 284 288 289 303 312 323 324 337 390 391 394 400 413 419 437 446 466 470
471 473 478 490 493 494 507 508 509 512 523 539 542 548 590 597 600 622 632 634 637 650 658
665 699 704 722 730 748 761 782 783 812 836 842 850 852 856 859 886 894 906 911 912 928 959
966 979 988 989 990 999""".split()]


def test_subset_rule_gives_protocol_positions_and_spares_global_rng() -> None:
    names = [f"n{i:08d}" for i in range(1000)]
    state = np.random.get_state()
    chosen = inet.ucir_subset(names[::-1])  # input order does not matter: sorted first
    assert [names.index(w) for w in chosen] == SUBSET_POSITIONS
    assert np.random.RandomState(1993).choice(1000, 100, replace=False)[:10].tolist() \
        == SUBSET_FIRST_DRAWN
    assert np.array_equal(np.random.get_state()[1], state[1])
    with pytest.raises(ValueError, match="1000"):
        inet.ucir_subset(names[:999])


def test_subset_on_a_small_tree_with_patched_class_counts(tree: Path, monkeypatch) -> None:
    monkeypatch.setattr(inet, "IMAGENET_CLASSES", 6)
    monkeypatch.setattr(inet, "SUBSET_CLASSES", 3)
    data = inet.imagenet(tree, subset=True, image_size=8)
    picked = np.random.RandomState(1993).permutation(6)[:3]
    expected = sorted(sorted(WNIDS)[i] for i in picked)
    assert data.name == "imagenet100" and data.class_names == expected
    assert sorted(set(data.train_y.tolist())) == [0, 1, 2] and len(data.train_y) == 12
    colours = np.array([COLOURS[sorted(WNIDS).index(w)] for w in expected])
    mean = data.test_x.reshape(len(data.test_x), -1, 3).mean(axis=1)
    assert np.abs(mean - colours[data.test_y]).max() < 6  # labels = rank among the subset
    assert (tree / "ddlib-cache-subset-8" / "fingerprint").is_file()


def test_tree_of_exactly_the_subset_classes_is_taken_as_is(tree: Path, monkeypatch) -> None:
    monkeypatch.setattr(inet, "SUBSET_CLASSES", 6)
    assert inet.imagenet(tree, subset=True, image_size=8).class_names == sorted(WNIDS)


# ----------------------------------------------------------------------------- errors


def _flat_val(root: Path) -> None:
    for folder in (root / "val").iterdir():
        for f in folder.iterdir():
            f.rename(root / "val" / f.name)
        folder.rmdir()


def _empty_class(root: Path) -> None:
    for f in (root / "train" / WNIDS[2]).iterdir():
        f.unlink()


def _val_mismatch(root: Path) -> None:
    (root / "val" / WNIDS[1]).rename(root / "val" / "n09999999")


def _broken_image(root: Path) -> None:
    (root / "train" / WNIDS[0] / "broken.JPEG").write_bytes(b"not a jpeg")


@pytest.mark.parametrize("damage, kwargs, pattern", [
    (lambda root: None, dict(subset=True), r"subset=True.*1000.*100.*found 6"),
    (lambda root: (root / "val").rename(root / "v"), {}, r"split folder not found: .*val"),
    (lambda root: (root / "train").rename(root / "t"), {}, r"split folder not found: .*train"),
    (_flat_val, {}, r"val holds 12 images directly, not class folders.*val/<wnid>"),
    (_empty_class, {}, rf"no images .* in .*train/{WNIDS[2]}"),
    (_val_mismatch, {}, rf"class folders of .*val do not match .*train.*{WNIDS[1]}.*n09999999"),
    (_broken_image, {}, r"broken\.JPEG: not a readable image"),
    (lambda root: None, dict(image_size=4), "image_size must be >= 8"),
])
def test_errors_name_the_path_or_parameter(tree: Path, damage, kwargs, pattern) -> None:
    damage(tree)
    with pytest.raises(ValueError, match=pattern):
        inet.imagenet(tree, **{"subset": False, "image_size": 8, **kwargs})
    # nothing decoded left behind, not even partly (only the lock file, a few bytes)
    assert not [p for p in tree.glob("*ddlib-cache*") if p.is_dir()]


def test_missing_root_and_empty_train_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"root not found: .*nowhere"):
        inet.imagenet(tmp_path / "nowhere", subset=False)
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match=r"no class folders in .*train"):
        inet.imagenet(tmp_path, subset=False)


def test_too_little_disk_fails_before_decoding(tree: Path, monkeypatch) -> None:
    need = 36 * 16 * 16 * 3  # 36 images at 16
    usage = inet.shutil.disk_usage(tree)
    monkeypatch.setattr(inet.shutil, "disk_usage", lambda path: usage._replace(free=need - 1))
    with pytest.raises(ValueError, match=r"36 images at image_size=16 needs 0\.0 GiB in .*"
                                         r"imagenet, which has 0\.0 GiB free.*smaller image_size"):
        inet.imagenet(tree, subset=False, image_size=16)
    assert not [p for p in tree.glob("*ddlib-cache*") if p.is_dir()]
    assert inet.imagenet(tree, subset=False, image_size=15).train_x.shape[1] == 15


def test_load_refuses_synthetic_sizes_for_imagenet(tree: Path) -> None:
    with pytest.raises(ValueError, match="num_classes do not apply to dataset 'imagenet100'"):
        load("imagenet100", data_dir=tree, num_classes=3)


# ----------------------------------------------------------------------------- augmentation


def _batch(b: int = 8, size: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def test_random_resized_crop_shape_dtype_and_determinism() -> None:
    x = _batch()
    out = random_resized_crop(x, torch.Generator().manual_seed(1), size=(24, 24))
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 255
    again = random_resized_crop(x, torch.Generator().manual_seed(1), size=(24, 24))
    other = random_resized_crop(x, torch.Generator().manual_seed(2), size=(24, 24))
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert random_resized_crop(x, torch.Generator(), size=(12, 20)).shape == (8, 3, 12, 20)


@pytest.mark.parametrize("scale", [(1.0, 1.0), (1.5, 2.0)])  # whole image; no box fits
def test_full_square_box_without_flip_is_plain_normalisation(scale) -> None:
    x = _batch()
    aug = Augment((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), pad=0,
                  device=torch.device("cpu"), resized_crop=True)
    crop = random_resized_crop(x, torch.Generator(), size=(24, 24), scale=scale,
                               ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(aug.normalize(crop), aug.normalize(x), rtol=0, atol=1e-4)


def test_box_size_and_flip_on_a_ramp() -> None:
    # Pixel value = 4 * column: a box of a quarter of the area (32 of 64 columns) stretched
    # to 64 spans about 31.5 * 4 grey levels; flipped crops run right to left.
    ramp = (torch.arange(64) * 4).to(torch.uint8).expand(32, 3, 64, 64).contiguous()
    out = random_resized_crop(ramp, torch.Generator().manual_seed(0), size=(64, 64),
                              scale=(0.25, 0.25), ratio=(1.0, 1.0))
    rows = out[:, 0, 32]  # (B, 64)
    span = rows.max(dim=1).values - rows.min(dim=1).values
    assert ((span - 128).abs() <= 4).all()
    rising = rows[:, -1] > rows[:, 0]
    assert 0 < int(rising.sum()) < 32  # both orientations occur
    torch.testing.assert_close(out[:, :, 0], out[:, :, -1])  # rows of a ramp stay equal


def test_augment_train_uses_the_resized_crop() -> None:
    x = _batch()
    aug = Augment((0.5,) * 3, (0.25,) * 3, pad=0, device=torch.device("cpu"), resized_crop=True)
    out = aug.train(x, torch.Generator().manual_seed(5))
    expected = aug.normalize(random_resized_crop(x, torch.Generator().manual_seed(5),
                                                 size=(24, 24)))
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------- config, model

# These identity hashes guard the results store (computed before ImageNet support was added;
# synthetic ones since SYNTHETIC_VERSION 3 and issue #11's cpu epochs): if one changes,
# every stored result of that profile would be recomputed.
GUARD = {("smoke", None): "01c14986de", ("cpu", None): "bae62eaef2",
         ("paper", "cifar100"): "87c16a1a0b", ("paper", None): "87c16a1a0b"}


@pytest.mark.parametrize("profile, dataset", list(GUARD))
def test_existing_profiles_resolve_to_the_same_identity(profile, dataset, monkeypatch) -> None:
    # on hardware where `auto` means bf16 (AMX, a GPU) the cpu and paper runs are other runs
    monkeypatch.setattr(engine, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert RunConfig.resolve(profile, dataset=dataset).identity() == GUARD[profile, dataset]


def test_imagenet_paper_values_and_overrides() -> None:
    sub = RunConfig.resolve("paper", dataset="imagenet100", method="ucir")
    assert (sub.image_size, sub.epochs, sub.milestones, sub.weight_decay, sub.batch_size,
            sub.memory, sub.increment, sub.init_classes, sub.ucir_lambda_base) == \
        (224, 90, (30, 60), 1e-4, 128, 2000, 10, 10, 10.0)
    full = RunConfig.resolve("paper", dataset="imagenet", weight_decay=5e-4, memory=10000)
    assert (full.increment, full.memory, full.weight_decay) == (100, 10000, 5e-4)
    assert sub.backbone == full.backbone == "resnet18"
    assert RunConfig.resolve("paper").backbone == "resnet32"
    assert not full.overrides().keys() - {"weight_decay", "memory"}


def test_resnet18_without_last_relu_gives_signed_features() -> None:
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    plain, ucir = ResNet18(), ResNet18(last_relu=False)
    assert plain(x).shape == ucir(x).shape == (4, 512)
    assert plain(x).min() >= 0 and ucir(x).min() < 0


@pytest.mark.slow
def test_one_round_on_the_fake_tree_uses_resnet18_and_resized_crop(tree, smoke, monkeypatch):
    import ddlib.augment
    import ddlib.methods.base

    built, crops = [], []
    make_backbone = ddlib.methods.base.make_backbone
    crop = ddlib.augment.random_resized_crop
    monkeypatch.setattr(ddlib.methods.base, "make_backbone",
                        lambda kind, **kw: built.append((kind, kw)) or make_backbone(kind, **kw))
    monkeypatch.setattr(ddlib.augment, "random_resized_crop",
                        lambda x, g, **kw: crops.append(x.shape) or crop(x, g, **kw))
    reads, read = [], DeviceData._read  # the memory-mapped cache is read per batch on a CPU
    monkeypatch.setattr(DeviceData, "_read", lambda self, idx: reads.append(len(idx))
                        or read(self, idx))
    cfg = smoke(method="ucir", dataset="imagenet", data_dir=str(tree), image_size=32,
                init_classes=6, epochs=1, milestones=())
    result = ddlib.run(cfg, verbose=False)
    assert built == [("resnet18", {"width": cfg.width, "shortcut": "B", "last_relu": False})]
    assert crops and all(s[1:] == (3, 32, 32) for s in crops)
    assert sum(reads) >= 24  # one epoch over the 24 training images, then herding
    assert len(result["rounds"]) == 1 and sorted(result["class_names"]) == sorted(WNIDS)
    assert result["rounds"][0]["classes_seen"] == 6
