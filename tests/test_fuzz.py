"""Malformed inputs: the `.npz` loader and the CLI flags.

Every bad input must end in a ValueError / FileNotFoundError that names the key or the path
(loader), or in exit status 2 with "error: ..." or argparse's usage message (CLI), never in
a traceback from deep inside numpy or torch. Handcrafted tables plus a seeded random fuzz
loop (no hypothesis dependency); the whole file runs in a few seconds.
"""

from __future__ import annotations

import importlib
import io
import pickle
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from numpy.lib import format as npy_format

from ddlib.__main__ import main
from ddlib.config import RunConfig
from ddlib.data import ImageArrays, arrays

REQUIRED = ("train_x", "train_y", "test_x", "test_y")


def valid() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"train_x": rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
            "train_y": np.array([0, 1, 2, 3] * 3), "test_x": rng.integers(0, 256, (4, 8, 8, 3),
                                                                          dtype=np.uint8),
            "test_y": np.array([3, 2, 1, 0]), "coarse": np.array([0, 0, 1, 1]),
            "class_names": np.array(["a", "b", "c", "d"])}


def _npz_bytes(d: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **d)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _members(d: dict[str, np.ndarray]) -> dict[str, bytes]:
    out = {}
    for k, v in d.items():
        buffer = io.BytesIO()
        np.save(buffer, v)
        out[f"{k}.npy"] = buffer.getvalue()
    return out


def _with(**changes: np.ndarray) -> bytes:
    return _npz_bytes({**valid(), **changes})


def _drop(*keys: str) -> bytes:
    return _npz_bytes({k: v for k, v in valid().items() if k not in keys})


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


V = valid()
# name -> (file bytes, or a callable making the path itself; text the message must contain)
NPZ_CASES: dict[str, tuple[bytes | Callable[[Path], None], str]] = {
    # not an .npz at all
    "text file": (b"train_x,train_y\n1,2\n", "not a readable .npz"),
    "empty file": (b"", "not a readable .npz"),
    "single .npy": (_members({"x": V["train_x"]})["x.npy"], "holds one array (.npy)"),
    "pickled dict": (pickle.dumps(V), "not a readable .npz"),
    "zip of text": (_zip({"readme.txt": b"hi"}), "missing key(s)"),
    "zip of garbage .npy": (_zip({f"{k}.npy": b"garbage" for k in REQUIRED}),
                            "train_x is not a .npy array"),
    "truncated archive": (_npz_bytes(V)[:300], "not a readable .npz"),
    "truncated member": (_zip({**_members(V), "train_x.npy": _members(V)["train_x.npy"][:-50]}),
                         "train_x"),
    "corrupt compressed member": (_flip(_npz_bytes(V, compressed=True), 200), "train_x"),
    "header declares 1 TB": (_zip({**_members(V), "train_x.npy": _npy_header((10**12,))}),
                             "train_x is damaged"),
    "header declares 2**62 images": (_zip({**_members(V), "test_x.npy":
                                           _npy_header((2**62, 8, 8, 3))}), "test_x"),
    "negative shape in header": (_zip({**_members(V), "train_y.npy": _npy_header((-1,), "<i8")}),
                                 "train_y"),
    # keys
    "missing test_y": (_drop("test_y"), "test_y"),
    "no required key": (_npz_bytes({"foo": np.arange(3)}), "missing key(s)"),
    "misspelt key": (_npz_bytes({**{k: v for k, v in V.items() if k != "test_y"},
                                 "test_Y": V["test_y"]}), "test_y"),
    # pickled object arrays (would need allow_pickle)
    "object labels": (_with(train_y=V["train_y"].astype(object)), "train_y"),
    "object images": (_with(train_x=V["train_x"].astype(object)), "train_x"),
    "object class_names": (_with(class_names=V["class_names"].astype(object)), "class_names"),
    # images: dtype, shape, channels, emptiness, constant
    "float images": (_with(train_x=V["train_x"].astype(np.float32)), "train_x"),
    "NaN images": (_with(train_x=np.full((12, 8, 8, 3), np.nan)), "train_x"),
    "int8 images": (_with(test_x=V["test_x"].astype(np.int8)), "test_x"),
    "bool images": (_with(train_x=V["train_x"] > 100), "train_x"),
    "grey (N, H, W)": (_with(train_x=V["train_x"][..., 0]), "train_x"),
    "1 channel": (_with(test_x=V["test_x"][..., :1]), "test_x"),
    "4 channels": (_with(train_x=np.concatenate([V["train_x"]] * 2, -1)[..., :4]), "train_x"),
    "channels first": (_with(train_x=V["train_x"].transpose(0, 3, 1, 2).copy()), "train_x"),
    "5-D images": (_with(train_x=V["train_x"][None]), "train_x"),
    "0-d images": (_with(train_x=np.array(7, np.uint8)), "train_x"),
    "no train images": (_with(train_x=V["train_x"][:0], train_y=V["train_y"][:0]), "train_x"),
    "no test images": (_with(test_x=V["test_x"][:0], test_y=V["test_y"][:0]), "test_x"),
    "zero-width images": (_with(train_x=V["train_x"][:, :, :0]), "train_x"),
    "test image size differs": (_with(test_x=V["test_x"][:, :4]), "test_x"),
    "constant images": (_with(train_x=np.zeros_like(V["train_x"])), "train_x: channel 0"),
    "one constant channel": (_with(train_x=np.concatenate(
        [V["train_x"][..., :2], np.full_like(V["train_x"][..., :1], 9)], -1)), "channel 2"),
    # labels: dtype, shape, ranges
    "NaN in labels": (_with(test_y=np.array([0, 1, np.nan, 2])), "test_y"),
    "float labels": (_with(train_y=V["train_y"].astype(float)), "train_y"),
    "bool labels": (_with(train_y=V["train_y"] > 1), "train_y"),
    "complex labels": (_with(train_y=V["train_y"].astype(complex)), "train_y"),
    "string labels": (_with(train_y=V["train_y"].astype(str)), "train_y"),
    "structured labels": (_with(train_y=np.zeros(12, dtype=[("a", "<i4")])), "train_y"),
    "2-D labels": (_with(train_y=V["train_y"][:, None]), "train_y"),
    "0-d labels": (_with(test_y=np.array(1)), "test_y"),
    "too few labels": (_with(train_y=V["train_y"][:-1]), "train_y"),
    "too many labels": (_with(test_y=np.arange(5) % 4), "test_y"),
    "negative label": (_with(train_y=V["train_y"] - 1), "train_y"),
    "negative test label": (_with(test_y=np.array([0, 1, 2, -5])), "test_y"),
    "gap in classes": (_with(train_y=V["train_y"] * 2), "train_y"),
    "label 2**62": (_with(train_y=np.array([0, 1, 2, 2**62] * 3)), "train_y"),
    "uint64 max label": (_with(train_y=np.array([0, 1, 2, 2**64 - 1] * 3, np.uint64)),
                         "train_y"),
    "test class not in train": (_with(test_y=np.array([0, 1, 2, 4])), "test_y"),
    "test label int64 max": (_with(test_y=np.array([0, 1, 2, 2**63 - 1])), "test_y"),
    # optional keys
    "coarse too short": (_with(coarse=np.array([0, 1, 1])), "coarse"),
    "coarse negative": (_with(coarse=np.array([0, 0, 1, -1])), "coarse"),
    "coarse NaN": (_with(coarse=np.array([0, 0, 1, np.nan])), "coarse"),
    "coarse 10**15": (_with(coarse=np.array([0, 0, 1, 10**15])), "coarse"),
    "coarse 2-D": (_with(coarse=np.array([[0, 0, 1, 1]])), "coarse"),
    "class_names too few": (_with(class_names=np.array(["a", "b"])), "class_names"),
    "class_names bytes": (_with(class_names=np.array([b"a", b"b", b"c", b"d"])), "class_names"),
    "class_names numbers": (_with(class_names=np.arange(4)), "class_names"),
    "class_names 2-D": (_with(class_names=np.array([["a", "b", "c", "d"]])), "class_names"),
}


def _write(path: Path, source: bytes | Callable[[Path], None]) -> None:
    if callable(source):
        source(path)
    else:
        path.write_bytes(source)


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_malformed_npz_is_a_clear_value_error(tmp_path: Path, case: str) -> None:
    source, text = NPZ_CASES[case]
    path = tmp_path / "bad.npz"
    _write(path, source)
    with pytest.raises(ValueError) as err:
        arrays(path)
    message = str(err.value)
    assert text in message, message
    assert str(path) in message or any(k in message for k in (*REQUIRED, "coarse",
                                                              "class_names"))


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p.mkdir() or p],
                         ids=["missing", "a folder"])
def test_missing_npz_names_the_path(tmp_path: Path, make) -> None:
    path = make(tmp_path / "nowhere.npz")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        arrays(path)


# ----------------------------------------------------------------------------- random fuzz

def _mutations(rng: np.random.Generator) -> list[Callable[[dict], None]]:
    """Small random edits of a valid dict of arrays (each edits it in place)."""
    def key(d: dict) -> str:
        return str(rng.choice(sorted(d)))

    def astype(d: dict) -> None:
        k = key(d)
        dtype = rng.choice(["u1", "i1", "i2", "<i4", ">i8", "u8", "f4", "f8", "?", "c8", "U3",
                            "S3", "O", "m8[s]", "M8[D]", "f2"])
        try:
            d[k] = d[k].astype(dtype)
        except (ValueError, TypeError):
            pass

    def reshape(d: dict) -> None:
        k = key(d)
        shapes = [(-1,), (1, -1), (-1, 1), d[k].shape[::-1], d[k].shape[:-1],
                  (*d[k].shape, 1)]
        try:
            d[k] = d[k].reshape(shapes[rng.integers(len(shapes))])
        except ValueError:
            pass

    def slice_(d: dict) -> None:
        k = key(d)
        if d[k].ndim:
            axis = int(rng.integers(d[k].ndim))
            stop = int(rng.integers(0, d[k].shape[axis] + 1))
            d[k] = np.take(d[k], np.arange(stop), axis=axis)

    def values(d: dict) -> None:
        k = key(d)
        if d[k].size and d[k].dtype.kind in "iuf":
            flat = d[k].astype(np.float64 if d[k].dtype.kind == "f" else d[k].dtype).ravel()
            choices = [-1, 0, 1, 255, 256, 2**31, 2**63 - 1, np.nan, np.inf]
            value = choices[rng.integers(len(choices))]
            try:
                flat[rng.integers(flat.size)] = value
            except (OverflowError, ValueError):
                return
            d[k] = flat.reshape(d[k].shape)

    def drop(d: dict) -> None:
        d.pop(key(d))

    def add(d: dict) -> None:
        d[str(rng.choice(["extra", "coarse", "class_names", "train_X"]))] = (
            rng.integers(-3, 300, int(rng.integers(0, 6))))

    def swap(d: dict) -> None:
        a, b = key(d), key(d)
        d[a], d[b] = d[b], d[a]

    return [astype, reshape, slice_, values, drop, add, swap]


def _check_accepted(data: ImageArrays) -> None:
    """What a successful load promises to the rest of ddlib."""
    c = data.num_classes
    assert data.train_x.dtype == data.test_x.dtype == np.uint8
    assert data.train_x.ndim == 4 and data.train_x.shape[-1] == 3
    assert data.train_x.shape[1:] == data.test_x.shape[1:]
    assert data.train_y.dtype == data.test_y.dtype == np.int64
    assert len(data.train_y) == len(data.train_x) and len(data.test_y) == len(data.test_x)
    assert sorted(set(data.train_y.tolist())) == list(range(c))
    assert 0 <= data.test_y.min() and data.test_y.max() < c
    assert len(data.class_names) == c and min(data.std) > 0
    if data.coarse is not None:
        assert data.coarse.shape == (c,) and 0 <= data.coarse.min() and data.coarse.max() < c


def test_random_array_mutations_never_crash(tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    mutations = _mutations(rng)
    path, outcomes = tmp_path / "fuzz.npz", {"accepted": 0, "rejected": 0}
    for trial in range(300):
        d = valid()
        steps = [mutations[i] for i in rng.integers(0, len(mutations), int(rng.integers(1, 4)))]
        for step in steps:
            step(d)
        try:
            np.savez(path, **d)
        except (ValueError, TypeError):  # not even savable
            continue
        try:
            data = arrays(path)
        except (ValueError, FileNotFoundError):
            outcomes["rejected"] += 1
            continue
        except Exception as err:  # noqa: BLE001 - that is the point of the test
            pytest.fail(f"trial {trial}, {[s.__name__ for s in steps]}: "
                        f"{type(err).__name__}: {err}")
        _check_accepted(data)
        outcomes["accepted"] += 1
    assert outcomes["rejected"] > 150 and outcomes["accepted"] > 10, outcomes


def test_random_byte_damage_never_crashes(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz.npz"
    for trial in range(300):
        data = _npz_bytes(valid(), compressed=bool(trial % 2))
        kind = trial % 3
        if kind == 0:  # cut
            data = data[:int(rng.integers(0, len(data)))]
        elif kind == 1:  # flip bytes
            for at in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data = _flip(data, int(at))
        else:  # overwrite a run with random bytes
            at = int(rng.integers(0, len(data)))
            data = data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at + 64:]
        path.write_bytes(data)
        try:
            _check_accepted(arrays(path))  # damage inside pixel data can go unnoticed
        except (ValueError, FileNotFoundError):
            pass
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"trial {trial} (kind {kind}): {type(err).__name__}: {err}")


# ----------------------------------------------------------------------------- CLI flags


class Accepted(Exception):
    """Raised where training would start: the flags passed validation and data loading."""


@pytest.fixture
def no_training(monkeypatch):
    run_module = importlib.import_module("ddlib.run")  # `ddlib.run` is the function

    class Stop:
        @staticmethod
        def from_arrays(*args, **kwargs):
            raise Accepted

    monkeypatch.setattr(run_module, "DeviceData", Stop)


def _numeric_flags() -> dict[str, str]:
    kinds = {}
    for f in fields(RunConfig):
        kind = str(f.type).split()[0].split("[")[0]
        if kind in ("int", "float", "tuple"):
            kinds[f.name] = kind
    return kinds


FLAGS = _numeric_flags()
# Values that are bad for (nearly) every numeric flag; the few legitimate ones are below.
BAD = {"negative": "-1", "zero": "0", "huge": "2147483647", "huger": "1e30",
       "beyond int32": "2147483648", "overflow": "1e400", "word": "abc", "empty": "",
       "nan": "nan", "inf": "inf", "-inf": "-inf", "hex": "0x10", "fraction": "2.5",
       "list": "1,x"}
ZERO_OK = {"similar_k", "order", "momentum", "weight_decay", "lambda_old", "lambda_dd",
           "expert_balanced_epochs", "ucir_lambda_base", "ucir_margin", "ucir_lambda_mr",
           "seed", "threads", "class_order_seed"}
# Large but meaningful: many epochs, a big memory or batch, a far-off seed; and float knobs
# where any finite value is legal: training copes or stops at the NaN guard ("error:
# non-finite loss ...", exit 2; see test_huge_float_knobs_end_in_the_nan_guard).
HUGE_OK = {"order", "memory", "epochs", "batch_size", "expert_epochs",
           "expert_balanced_epochs", "bic_epochs", "ucir_k", "seed", "class_order_seed"}
FLOAT_HUGE_OK = {"lr", "momentum", "weight_decay", "expert_lr", "expert_balanced_lr",
                 "temperature_old", "temperature_new", "lambda_old", "lambda_dd", "bic_lr",
                 "ucir_lambda_base", "ucir_margin", "ucir_lambda_mr"}
FRACTION_OK = FLOAT_HUGE_OK | {"width"}
def _expected(name: str, label: str) -> str:
    kind = FLAGS[name]
    if label == "zero" and name in ZERO_OK or label == "negative" and name == "seed":
        return "accepted"
    if label == "huge" and kind == "int" and name in HUGE_OK:
        return "accepted"
    if label in ("huge", "huger", "beyond int32") and kind == "float":  # all finite floats
        return "accepted" if name in FLOAT_HUGE_OK else "rejected"
    if label == "fraction" and kind == "float":
        return "accepted" if name in FRACTION_OK else "rejected"
    if label == "empty" and kind == "tuple":  # "" = no milestones
        return "accepted"
    return "rejected"


CLI_CASES = [pytest.param(name, label, id=f"{name}={label}") for name in FLAGS for label in BAD]


@pytest.mark.parametrize("name,label", CLI_CASES)
def test_bad_numeric_flag_exits_2_without_traceback(name: str, label: str, tmp_path: Path,
                                                   capsys, no_training) -> None:
    flag = f"--{name.replace('_', '-')}={BAD[label]}"
    argv = ["run", flag, "--results-dir", str(tmp_path), "--no-progress"]
    if name == "ucir_k":
        argv += ["--method", "ucir"]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: usage + "error: argument --x: ..."
        code = exit_.code
        assert code == 2 and f"argument --{name.replace('_', '-')}" in capsys.readouterr().err
        outcome = "rejected"
    except Accepted:
        outcome = "accepted"
    else:
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: "), (code, err)
        outcome = "rejected"
    assert outcome == _expected(name, label), f"{flag}: {outcome}"


@pytest.mark.parametrize("argv", [["bench", "--steps", "0"], ["bench", "--steps", "-5"],
                                  ["bench", "--steps", "x"], ["bench", "--threads", "-1"],
                                  ["bench", "--threads", "100000"], ["run", "--profile", "huge"],
                                  ["run", "--dd=1"], ["fly"], []])
def test_other_bad_arguments_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_choices_validated_by_config_exit_2(tmp_path: Path, capsys, no_training) -> None:
    for argv in (["--method", "sgd"], ["--device", "tpu"], ["--dataset", "mnist"],
                 ["--dataset", "arrays", "--data-dir", str(tmp_path / "none.npz")],
                 ["--dataset", "cifar100", "--data-dir", str(tmp_path)],
                 ["--init-classes", "25"], ["--increment", "16"], ["--memory", "10"],
                 ["--synthetic-superclasses", "3"], ["--milestones", "1,9"]):
        assert main(["run", *argv, "--results-dir", str(tmp_path)]) == 2, argv
        assert capsys.readouterr().err.startswith("error: ")


def test_cli_with_a_bad_npz_exits_2_naming_the_path(tmp_path: Path, capsys) -> None:
    for case in ("zip of garbage .npy", "header declares 1 TB", "NaN in labels",
                 "constant images", "single .npy"):
        path = tmp_path / f"{case.replace(' ', '_')}.npz"
        _write(path, NPZ_CASES[case][0])
        argv = ["run", "--dataset", "arrays", "--data-dir", str(path), "--results-dir",
                str(tmp_path / "r"), "--increment", "2", "--no-progress"]
        assert main(argv) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("error: ") and NPZ_CASES[case][1] in err, err


@pytest.mark.parametrize("flag", ["--lr=1e30", "--weight-decay=1e30"])
def test_huge_float_knobs_end_in_the_nan_guard(tmp_path: Path, capsys, flag: str) -> None:
    argv = ["run", flag, "--epochs", "1", "--milestones", "1", "--threads", "1",
            "--no-progress", "--results-dir", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: non-finite loss in round 1")


@pytest.mark.slow
def test_real_cli_process_with_a_bad_npz(tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    _write(path, NPZ_CASES["truncated archive"][0])
    done = subprocess.run(
        [sys.executable, "-m", "ddlib", "run", "--dataset", "arrays", "--data-dir", str(path),
         "--threads", "1", "--results-dir", str(tmp_path / "r")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"TQDM_DISABLE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and str(path) in done.stderr
