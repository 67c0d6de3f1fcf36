"""One run over many processes: `torchrun ... -m ddlib run ...` (PyTorch's DistributedDataParallel).

Inert unless torchrun started this process with WORLD_SIZE > 1: every function then answers
as for a single process (rank 0 of 1) and nothing is communicated.

The division of work (engine.train, run.py):
- training (classifier, both expert stages): DDP; each epoch's permutation and each global
  batch's augmentation are drawn identically on every rank from the run's seeded generator,
  and every rank trains on its contiguous shard of the global batch (`shard`);
- every other step (herding, class means, similar-class selection, BiC's split and stage 2,
  evaluation) runs on every rank on identical weights; after each round rank 0's state is
  broadcast (`share_round`), after checking that every rank computed the same;
- only rank 0 writes results, checkpoints and logs;
- waits of unbounded length happen outside the collectives' timeout: ImageNet's decode on a
  lock file (`imagenet`), and rank 0's wait for another process's lock on the run in
  `barrier`, on a process group of its own with a timeout of WAIT_TIMEOUT.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# Each rank writes its per-round state digests (before rank 0's state is shared) to
# <dir>/rank<r>.json when this variable names a folder: the tests compare them.
DIGESTS_ENV = "DDLIB_RANK_DIGESTS"
# A collective that waits longer than this fails (NCCL's watchdog aborts the process).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
# `barrier`'s limit: rank 0 may wait there for a run that another sweep trains for days.
WAIT_TIMEOUT = datetime.timedelta(days=30)
_waiting_group = None  # the gloo group of `barrier`, made by `init`
# How many processes share this process's GPU: the sweep sets it (`--jobs-per-gpu`).
GPU_JOBS_ENV = "DDLIB_JOBS_ON_GPU"


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return launched() and dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) when launched by it; return
    this rank's device (cuda:LOCAL_RANK on CUDA). A single process gets `device` back."""
    global _waiting_group
    if not launched() or active():
        return _rank_device(device)
    options: dict[str, Any] = {}
    if device.type == "cuda":
        local, per_node = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
        visible = torch.cuda.device_count()
        if per_node > visible:
            raise RuntimeError(f"--nproc_per_node={per_node} but this node has {visible} "
                               "visible GPU(s): start at most one process per GPU")
        torch.cuda.set_device(local)
        # binds NCCL's communicator to this rank's GPU (torch >= 2.3; else it guesses)
        if "device_id" in inspect.signature(dist.init_process_group).parameters:
            options["device_id"] = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=COLLECTIVE_TIMEOUT, **options)
    _waiting_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return _rank_device(device)


def _rank_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def device_memory_share(device: torch.device) -> int:
    """Bytes of CUDA `device` this process may plan with: its free memory, at most its
    share of the whole when GPU_JOBS_ENV jobs share the GPU. Packed jobs start together and
    each reads the free memory before any other allocates; each taking the free memory
    would have all of them copy a dataset that fits only once."""
    jobs = os.environ.get(GPU_JOBS_ENV, "1")
    if not jobs.isdigit() or int(jobs) < 1:
        raise ValueError(f"{GPU_JOBS_ENV}={jobs!r}: the number of jobs sharing the GPU must "
                         "be a positive integer")
    free, total = torch.cuda.mem_get_info(device)
    return min(free, total // int(jobs))


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over the ranks, in place (returned for chaining)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Every rank waits for the others, for up to WAIT_TIMEOUT: run.py's ranks wait here
    while rank 0 waits for the run's lock, which another process may hold for hours."""
    if active():
        dist.barrier(group=_waiting_group)


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers (BatchNorm statistics) on every rank."""
    if not active():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def shard(size: int, r: int, n: int) -> slice:
    """Rank `r`'s contiguous slice (of `n` ranks) of a global batch of `size` images: the
    first size % n ranks take one image more."""
    base, extra = divmod(size, n)
    start = r * base + min(r, extra)
    return slice(start, start + base + (r < extra))


def check_same_config(identity: str) -> None:
    """Raise when the ranks were started with different run configurations."""
    identities = all_gather_object(identity)
    if len(set(identities)) > 1:
        raise ValueError(f"the {len(identities)} ranks run different configurations "
                         f"(identities by rank: {identities}); start every rank with the "
                         "same flags")


def _digest(value: Any) -> str:
    h = hashlib.sha256()
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(str(key).encode() + _digest(value[key]).encode())
    elif isinstance(value, torch.Tensor):
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(json.dumps(value, default=str).encode())
    return h.hexdigest()[:16]


def _to_cpu(value: Any) -> Any:
    """`value` with every tensor on the CPU (a CUDA tensor would unpickle onto rank 0's GPU)."""
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value.cpu() if isinstance(value, torch.Tensor) else value


def share_round(method, record: dict) -> None:
    """After a round: check that every rank computed the same state (weights, exemplars,
    class means, similar-class pairs), warn naming what differs, then give every rank rank
    0's state, so that ranks can never drift apart between rounds."""
    if not active():
        return
    state = method.state()
    mine = {"weights": _digest(state["model"]), "exemplars": _digest(state["memory"]),
            "class_means": _digest(state["class_means"]),
            "similar_pairs": _digest(record.get("similar_pairs"))}
    folder = os.environ.get(DIGESTS_ENV)
    if folder:
        path = Path(folder) / f"rank{rank()}.json"
        done = json.loads(path.read_text()) if path.is_file() else []
        path.write_text(json.dumps(done + [{"round": record.get("round"), **mine}]))
    everyone = all_gather_object(mine)
    differ = [key for key in mine if len({d[key] for d in everyone}) > 1]
    if differ and is_main():
        warnings.warn(f"round {record.get('round')}: the ranks' {', '.join(differ)} differ "
                      "(non-deterministic kernels?); every rank continues with rank 0's",
                      RuntimeWarning, stacklevel=2)
    shared = broadcast_object(_to_cpu(state) if is_main() else None)
    if not is_main():
        method.load_state(shared)
