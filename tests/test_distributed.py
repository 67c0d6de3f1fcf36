"""torchrun with 2 gloo processes on the CPU (issue 13): DDP training equals one process where
it should, a smoke run finishes with one result and identical ranks, and a killed rank's run
resumes from its last finished round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddlib import distributed

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            *args]


def test_shard_covers_the_batch_once():
    assert distributed.shard(7, 0, 1) == slice(0, 7)
    assert [distributed.shard(11, r, 2) for r in range(2)] == [slice(0, 6), slice(6, 11)]
    parts = [distributed.shard(10, r, 4) for r in range(4)]
    assert [p.stop - p.start for p in parts] == [3, 3, 2, 2]
    assert np.array_equal(np.concatenate([np.arange(10)[p] for p in parts]), np.arange(10))
    os.environ["WORLD_SIZE"] = "2"  # launched() but no process group: still inert
    try:
        assert not distributed.active() and distributed.world_size() == 1
    finally:
        del os.environ["WORLD_SIZE"]


# One BN-free network trained by engine.train: under DDP the ranks' shard gradients, weighted
# by shard size, average to the global batch's gradient, so the result must equal one
# process up to float summation order (not bit for bit: the sums run in another order).
TRAIN_SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from ddlib import distributed, engine
    from ddlib.augment import Augment

    out, batch, disk = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "disk"
    distributed.init(torch.device("cpu"))
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (46, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (46,), generator=g)
    stored = x.permute(0, 2, 3, 1).numpy().copy() if disk else x  # NHWC array: read per batch
    data = engine.DeviceData(stored, y, x, y, Augment((0.5,) * 3, (0.25,) * 3, pad=2,
                                                    device=torch.device("cpu")))

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
            self.head = nn.Linear(4 * 36, 4)

        def forward(self, images):
            features = self.body(images)
            return features, self.head(features)

    assert data.on_disk == disk
    model = Tiny()

    def loss_fn(images, labels):
        _, logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        return loss, {"acc": (logits.argmax(1) == labels).float().mean() * 100}

    history = engine.train(model, data, list(range(46)), loss_fn,
                           engine.Schedule(epochs=3, lr=0.05, milestones=(2,), batch_size=batch),
                           generator=torch.Generator().manual_seed(2), show_progress=False)
    torch.save({"state": model.state_dict(), "history": history},
               f"{out}/rank{distributed.rank()}.pt")
""")


# 46 images; batch 10: 5/5 and a last batch of 6 (3/3); batch 11: every batch splits 6/5,
# unevenly, so the shares' weights matter, last batch 2 (1/1). "disk": under DDP the ranks
# read only their shard from an NHWC array (as from ImageNet's memory-mapped cache).
@pytest.mark.parametrize("batch,where", [(10, "memory"), (11, "memory"), (11, "disk")])
def test_ddp_training_equals_one_process(tmp_path, batch, where):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    subprocess.run([sys.executable, str(script), str(one), str(batch), "memory"], check=True,
                   env=_env(PYTHONPATH=str(ROOT)), timeout=TIMEOUT)
    subprocess.run(_torchrun([str(script), str(two), str(batch), where]), check=True,
                   env=_env(PYTHONPATH=str(ROOT)), timeout=TIMEOUT)
    single = torch.load(one / "rank0.pt")
    ranks = [torch.load(two / f"rank{r}.pt") for r in range(2)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), f"ranks differ in {key}"
        assert torch.allclose(value, single["state"][key], atol=1e-5), key
    assert single["state"]["head.weight"].abs().sum() > 0
    for mine, theirs in zip(ranks[0]["history"], single["history"]):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-4), key


def _run_cmd(method: str, results: Path) -> list[str]:
    return ["-m", "ddlib", "run", "--profile", "smoke", "--method", method, "--dd",
            "--results-dir", str(results)]


def _accuracies(results: Path) -> list[tuple[float, float]]:
    (path,) = results.rglob("order0*.json")
    return [(r["acc_cnn"], r["acc_nme"]) for r in json.loads(path.read_text())["rounds"]]


@pytest.mark.parametrize("method", ["icarl", "bic"])
def test_smoke_run_under_torchrun(tmp_path, method):
    digests = tmp_path / "digests"
    digests.mkdir()
    two, one = tmp_path / "two", tmp_path / "one"
    done = subprocess.run(_torchrun(_run_cmd(method, two)), cwd=ROOT, check=False, capture_output=True,
                          text=True, env=_env(**{distributed.DIGESTS_ENV: str(digests)}),
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "differ" not in done.stderr, done.stderr[-3000:]
    assert len(list(two.rglob("*.json"))) == 1  # rank 0 alone writes the result
    # every rank computed the same weights, exemplars, class means and similar pairs
    rank0, rank1 = (json.loads((digests / f"rank{r}.json").read_text()) for r in range(2))
    assert len(rank0) == 4 and rank0 == rank1
    subprocess.run([sys.executable, *_run_cmd(method, one)], cwd=ROOT, check=True,
                   capture_output=True, env=_env(), timeout=TIMEOUT)
    # Not equal: each rank normalises BatchNorm over its 16-image shard of the 32-image
    # batch (SyncBatchNorm is CUDA-only), which moves a 3-epoch smoke run by a few points;
    # the BN-free test above shows the rest of DDP training equals one process.
    acc2, acc1 = np.array(_accuracies(two)), np.array(_accuracies(one))
    assert acc2.shape == acc1.shape
    assert np.abs(acc2 - acc1).max() <= 25, (acc2, acc1)
    # Round 1's features tell its 5 classes apart (chance is 20%). NME, not the CNN head: after
    # 12 steps on 120 images the head is noise on 50 test images (CNN 16% here, 34% in one
    # process), while the class means are what the later rounds' exemplars build on.
    assert acc2[0][1] > 100 / 5 + 10, acc2


def test_killed_rank_resumes_from_last_finished_round(tmp_path):
    results = tmp_path / "res"
    proc = subprocess.Popen(_torchrun(_run_cmd("icarl", results)), cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    ckpt = results / "smoke" / "synthetic" / "icarl+dd" / "inc5" / "order0.ckpt"
    deadline = time.monotonic() + TIMEOUT
    while not (ckpt / "round02.pt").exists():  # round 3 is running
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], check=True,
                              capture_output=True, text=True).stdout.split()
    workers = [int(p) for p in children
               if b"ddlib" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGKILL)  # one rank dies mid-round
    stderr = proc.communicate(timeout=TIMEOUT)[1]
    assert proc.returncode != 0
    assert not (ckpt / "round04.pt").exists() and not list(results.rglob("order0.json")), stderr
    done = subprocess.run(_torchrun(_run_cmd("icarl", results)), cwd=ROOT, check=False, capture_output=True,
                          text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed after round" in done.stdout + done.stderr
    assert len(json.loads(next(results.rglob("order0.json")).read_text())["rounds"]) == 4


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RuntimeError, match="--nproc_per_node=3 but this node has 2"):
        distributed.init(torch.device("cuda"))


def _fake_cuda_init(monkeypatch, init_process_group) -> list[dict]:
    """distributed.init on rank 1 of 2 on a node with 2 (mocked) GPUs; the calls it made."""
    calls: list[dict] = []
    for name, value in dict(WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append({"set": index}))
    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group(calls))
    monkeypatch.setattr(torch.distributed, "new_group",
                        lambda **kwargs: calls.append({"new_group": kwargs}) or "waiting group")
    monkeypatch.setattr(distributed, "_waiting_group", None)
    assert distributed.init(torch.device("cuda")) == torch.device("cuda", 1)
    return calls


def test_nccl_is_bound_to_the_rank_s_gpu(monkeypatch):
    def init_process_group(calls):
        def init(backend=None, init_method=None, timeout=None, device_id=None):
            calls.append({"backend": backend, "timeout": timeout, "device_id": device_id})
        return init

    calls = _fake_cuda_init(monkeypatch, init_process_group)
    assert calls[:2] == [{"set": 1}, {"backend": "nccl", "timeout": distributed.COLLECTIVE_TIMEOUT,
                                      "device_id": torch.device("cuda", 1)}]
    # the group of unbounded waits (a run's lock) is gloo's, with its own long timeout
    assert calls[2] == {"new_group": {"backend": "gloo", "timeout": distributed.WAIT_TIMEOUT}}
    assert distributed._waiting_group == "waiting group"


def test_torch_without_device_id_is_not_passed_one(monkeypatch):
    def init_process_group(calls):
        def init(backend=None, init_method=None, timeout=None):  # torch < 2.3
            calls.append({"backend": backend})
        return init

    assert {"backend": "nccl"} in _fake_cuda_init(monkeypatch, init_process_group)


# Rank 0 waits for the run's lock (another process trains it) while rank 1 waits at run.py's
# barrier: longer than a collective may take, here shortened to 4 s.
LOCKED_RUN_SCRIPT = textwrap.dedent("""
    import datetime, os, pathlib, sys
    from ddlib import distributed
    from ddlib.config import RunConfig
    from ddlib.run import run

    distributed.COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=4)
    results, ready = sys.argv[1], sys.argv[2]
    pathlib.Path(ready, os.environ["RANK"]).touch()
    run(RunConfig.resolve("smoke", increment=10, epochs=1, milestones=(), results_dir=results,
                          progress=False))
""")


def test_ranks_wait_for_a_locked_run_longer_than_a_collective_may(tmp_path):
    import fcntl

    from ddlib.config import RunConfig
    from ddlib.results import result_path
    from ddlib.run import run

    cfg = RunConfig.resolve("smoke", increment=10, epochs=1, milestones=(),
                            results_dir=str(tmp_path / "results"), progress=False)
    run(cfg, verbose=False)  # the result the ranks will read once the lock is free
    script, ready = tmp_path / "locked.py", tmp_path / "ready"
    script.write_text(LOCKED_RUN_SCRIPT)
    ready.mkdir()
    with open(result_path(cfg).with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is running this configuration
        proc = subprocess.Popen(_torchrun([str(script), str(tmp_path / "results"), str(ready)]),
                                env=_env(PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIMEOUT
        while len(list(ready.iterdir())) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(15)  # rank 1 waits at the barrier for well over 4 s
        fcntl.flock(lock, fcntl.LOCK_UN)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr[-3000:]
    assert "result exists" in stdout + stderr


def test_ranks_with_different_configs_fail(tmp_path):
    script = tmp_path / "configs.py"
    script.write_text(textwrap.dedent("""
        import torch
        from ddlib import distributed
        distributed.init(torch.device("cpu"))
        distributed.check_same_config("same")
        distributed.check_same_config(f"config of rank {distributed.rank()}")
    """))
    done = subprocess.run(_torchrun([str(script)]), check=False,
                          capture_output=True, text=True,
                          env=_env(PYTHONPATH=str(ROOT)), timeout=TIMEOUT)
    assert done.returncode != 0
    assert "ranks run different configurations" in done.stderr
