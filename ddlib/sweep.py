"""Run a grid of papermill jobs (notebooks x parameter sets): resumable, side by side.

`python -m ddlib sweep` executes `notebooks/<method>.ipynb` for every method and dataset,
and `notebooks/ablation.ipynb`, into `book/runs/` (the book's run pages; fixed names
whatever the profile), with the book's grid of the profile (`ddlib.grid.GRID`). Each job:

- has its parameter names checked against the notebook (`papermill.inspect_notebook`; papermill
  itself only warns) and its values checked by `ddlib.plan`, for all jobs before any starts;
- is skipped when its executed notebook is current (same parameters, newer than its source
  and than `ddlib`, no error) and every result file it plans exists;
- runs in its own papermill process with an explicit working directory (the source
  notebook's folder, as nbval and Jupyter Book use) and kernel `python3`, its log in
  `<log_dir>/<output stem>.log`;
- runs side by side with the others: `jobs_per_gpu` per visible GPU (CUDA_VISIBLE_DEVICES,
  and the number of jobs sharing it in DDLIB_JOBS_ON_GPU, so that each plans with its share
  of the GPU's memory: `distributed.device_memory_share`) when there are GPUs, else
  `workers` at once on the CPU with the cores split into torch `threads` (the notebook
  parameter of that name). On 2 shared cores 2 jobs x 1 thread beat 1 job x 2 threads by
  far (README, "Sweeps"), hence one thread per job by default.

A failing job does not stop the others; the report names it with its notebook and log,
and the command exits non-zero.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import DATASETS, DEVICES, IMAGENET_DATASETS, METHOD_ORDER, PROFILES, RunConfig
from .distributed import GPU_JOBS_ENV
from .utils import display_path, project_root

INDUCTOR_CACHE = "_build/inductor-cache"  # under the project root

RUNTIME_PARAMETERS = frozenset({"threads"})  # differ between sweeps, never change results
# Runs packed on one GPU at once: a ResNet-32 run alone leaves an H100/H200 mostly idle
# (launch-bound). 1 until measured: benchmarks/gpu-check.sh times 1/2/4/8 packed runs; no
# GPU has been available to measure it yet.
JOBS_PER_GPU = 1
# A job's torch threads on the CPU: RunConfig's default, which the notebooks share.
CPU_THREADS: int = RunConfig.threads


@dataclass(frozen=True)
class Job:
    """One papermill execution: `notebook` with `parameters` into `output`."""

    notebook: Path
    output: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    expects: tuple[Path, ...] = ()  # result files it writes; all present -> may be skipped
    inject_threads: bool = True     # pass the sweep's thread count as parameter `threads`

    @property
    def name(self) -> str:
        return self.output.stem


@dataclass
class Outcome:
    job: Job
    status: str  # "done" | "skipped" | "failed"
    seconds: float = 0.0
    log: Path | None = None
    tail: str = ""


def experiment_jobs(profile: str, *, datasets: Sequence[str] = ("synthetic",),
                    methods: Sequence[str] = METHOD_ORDER, ablation: bool = True,
                    out_dir: str | Path = "book/runs", notebooks_dir: str | Path = "notebooks",
                    results_dir: str = "results", **parameters: Any) -> list[Job]:
    """The book's grid (`ddlib.grid.GRID`) as papermill jobs, in `_COST_RANK` order.

    Per dataset, one job per method, `notebooks/<method>.ipynb` -> `<out_dir>/<method>.ipynb`
    (`<method>-<dataset>.ipynb` after the first dataset), with the grid's increments and
    orders; then `notebooks/ablation.ipynb` for Figure 7 and, per method of the grid's
    `expert_init_methods`, its +DD runs with the expert started from scratch at the analysis
    increment (`<method>-expert-scratch.ipynb`), both not on ImageNet, which the paper does
    not ablate; and on CIFAR-100 the iCaRL runs of Figure 1's dedicated class order
    (`grid.figure1`, into `icarl-figure1.ipynb`). `parameters` (None = the grid's or the
    notebook's default) go to every job and win over the grid; all values are validated
    here through `ddlib.plan`."""
    from .grid import figure1, grid
    from .plan import plan
    from .results import result_path

    root = project_root() or Path.cwd()
    book_grid = grid(profile)
    given = {k: v for k, v in parameters.items() if v is not None}
    jobs = []

    def add(notebook: str, stem: str, method_list: Sequence[str], params: dict[str, Any]) -> None:
        planned = plan(**{k: v for k, v in params.items()
                          if k not in RUNTIME_PARAMETERS | {"methods"}}, method=list(method_list))
        jobs.append(Job(root / notebooks_dir / f"{notebook}.ipynb",
                        root / out_dir / f"{stem}.ipynb", params,
                        tuple(result_path(cfg) for cfg in planned)))

    for i, dataset in enumerate(datasets):
        suffix = "" if i == 0 else f"-{dataset}"
        imagenet = dataset in IMAGENET_DATASETS
        base = {"profile": profile, "dataset": dataset, "results_dir": results_dir,
                "orders": list(book_grid["orders"])}
        if not imagenet:
            base["increments"] = list(book_grid["increments"])
        names = list(methods)
        ablated = [m for m in book_grid["ablation_methods"] if m in methods]
        if ablation and ablated and not imagenet:
            names.append("ablation")
        scratch = ({} if imagenet else {f"{m}-expert-scratch": m
                                          for m in book_grid["expert_init_methods"]
                                          if m in methods})
        names += list(scratch)
        dedicated = figure1(profile, dataset)
        if dedicated["class_order_seed"] is not None and "icarl" in methods:
            names.append("figure1")
        rank = {**_COST_RANK, **dict.fromkeys(scratch, _COST_RANK["expert-scratch"])}
        for name in sorted(names, key=lambda n: rank.get(n, -1)):
            if name in scratch:
                add(scratch[name], name + suffix, [scratch[name]],
                    {**base, **given, "dd": [True], "expert_init": "scratch",
                     "increments": [book_grid["analysis_increment"]]})
                continue
            if name == "figure1":
                add("icarl", "icarl-figure1" + suffix, ["icarl"],
                    {**base, **given, "orders": [0], "dd": [False, True],
                     "increments": [dedicated["increment"]],
                     "class_order_seed": dedicated["class_order_seed"]})
                continue
            if name != "ablation":
                add(name, name + suffix, [name], {**base, **given})
                continue
            # +DD arms first: the baseline and k=1 are also in the method jobs (run.py's
            # lock makes a job that needs a run being trained elsewhere wait for it).
            ks = sorted(book_grid["similar_ks"], key=lambda k: (k == 1, k))
            add("ablation", "ablation" + suffix, ablated,
                {**base, **given, "methods": ablated,
                 "increments": [book_grid["analysis_increment"]], "similar_k": ks,
                 "dd": [True, False]})
    return jobs


# Start order, from the cpu book's job times on 2 cores (minutes, one core each): iCaRL 14.7,
# ablation 14.7, UCIR 14.8, BiC 13.6, LwF 0.2 (a 29.5-minute sweep). The ablation's baseline
# and k=1 runs come from iCaRL's job, which ends first. LwF goes last: it reads iCaRL's
# training (LwF.trained_as), which takes seconds once iCaRL's runs exist; before, it would
# wait on their locks. The expert-scratch jobs (one +DD run per order at the analysis
# increment) need no other job's runs and are short, so they follow the method jobs; Figure
# 1's two runs (CIFAR-100 only) are the shortest.
_COST_RANK = {"icarl": 0, "ablation": 1, "ucir": 2, "bic": 3, "lwf": 4, "expert-scratch": 5,
              "figure1": 6}


def in_place_jobs(notebooks: Iterable[str | Path]) -> list[Job]:
    """Re-execute committed notebooks in place with their own defaults (`make notebooks`):
    nothing injected, so the committed copy keeps its plain `parameters` cell."""
    return [Job(Path(p).resolve(), Path(p).resolve(), inject_threads=False) for p in notebooks]


def check_parameters(jobs: Iterable[Job]) -> None:
    """ValueError naming the notebook and the parameter when a job passes a name the
    notebook's `parameters` cell does not define."""
    import papermill

    known: dict[Path, set[str]] = {}
    for job in jobs:
        if not job.notebook.is_file():
            raise ValueError(f"notebook not found: {job.notebook}")
        if job.notebook not in known:
            known[job.notebook] = set(papermill.inspect_notebook(str(job.notebook)))
        unknown = sorted(set(job.parameters) - known[job.notebook])
        if unknown:
            raise ValueError(f"{job.notebook.name} has no parameter(s) {unknown}; "
                             f"its parameters: {sorted(known[job.notebook])}")


def is_current(job: Job) -> bool:
    """The executed notebook is there, error-free, made with these parameters, newer than
    its source and `ddlib`, and every result it plans exists."""
    import nbformat

    if not job.output.is_file() or job.output == job.notebook:
        return False
    if not all(Path(p).is_file() for p in job.expects):
        return False
    newest = max([job.notebook.stat().st_mtime]
                 + [p.stat().st_mtime for p in (Path(__file__).parent).rglob("*.py")])
    if job.output.stat().st_mtime < newest:
        return False
    nb = nbformat.read(job.output, as_version=4)
    recorded = nb.metadata.get("papermill", {}).get("parameters", {})
    if _results_parameters(recorded) != _results_parameters(job.parameters):
        return False
    return not any(out.get("output_type") == "error"
                   for cell in nb.cells for out in cell.get("outputs", []))


def visible_gpus() -> list[str]:
    """CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA is simply no GPU
        count = 0
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def gpu_slots(gpus: Sequence[str], jobs_per_gpu: int = JOBS_PER_GPU,
              workers: int | None = None) -> list[str]:
    """One entry per job that may run at once: each GPU `jobs_per_gpu` times, interleaved
    (0, 1, 0, 1) so that fewer jobs than slots still spread over the GPUs; at most
    `workers` entries when given."""
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu} must be >= 1")
    slots = [gpu for _ in range(jobs_per_gpu) for gpu in gpus]
    return slots[:workers] if workers else slots


def run_jobs(jobs: Sequence[Job], *, workers: int | None = None, threads: int | None = None,
             gpus: Sequence[str] | None = None, jobs_per_gpu: int = JOBS_PER_GPU,
             force: bool = False,
             log_dir: str | Path = "_build/logs", clean_output: bool = True,
             say: Callable[[str], None] = print) -> list[Outcome]:
    """Execute `jobs` (skipping current ones unless `force`), side by side; never raises
    for a failing job - its Outcome says "failed" and points at its log."""
    jobs = list(jobs)
    check_parameters(jobs)
    gpus = visible_gpus() if gpus is None else list(gpus)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    slots = (gpu_slots(gpus, jobs_per_gpu, workers)
             or [None] * max(1, min(workers or cores or 1, len(jobs) or 1)))
    # One thread per job on the CPU: faster on shared cores, and CPU results depend on the
    # thread count, so one fixed default (RunConfig's, the notebooks' too) keeps them equal.
    threads = threads or (max(1, (cores or 1) // len(slots)) if gpus else CPU_THREADS)
    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)
    log_dir = (project_root() or Path.cwd()) / log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    where = (f"GPUs {', '.join(dict.fromkeys(slots))}, up to {jobs_per_gpu} job(s) each"
             if gpus else f"CPU, {len(slots)} at once")
    say(f"sweep: {len(jobs)} job(s) on {where}, {threads} torch thread(s) each")

    def one(job: Job) -> Outcome:
        if not force and is_current(job):
            say(f"  skip  {job.name}: executed notebook and results are current")
            return Outcome(job, "skipped")
        slot = free.get()
        try:
            return _execute(job, slot=slot, sharing=slots.count(slot), threads=threads,
                            log=log_dir / f"{job.name}.log", clean_output=clean_output, say=say)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        return list(pool.map(one, jobs))


def report(outcomes: Sequence[Outcome], say: Callable[[str], None] = print) -> int:
    """Print one line per job and, for failures, the executed notebook, the log and the
    log's last lines; return the exit status (1 when any job failed)."""
    failed = [o for o in outcomes if o.status == "failed"]
    say(f"sweep: {sum(o.status == 'done' for o in outcomes)} done, "
        f"{sum(o.status == 'skipped' for o in outcomes)} skipped, {len(failed)} failed")
    for o in failed:
        say(f"FAILED {o.job.name}: executed notebook {display_path(o.job.output)}\n"
            f"       log {display_path(o.log)}\n"
            + "\n".join("       | " + line for line in o.tail.splitlines()))
    return 1 if failed else 0


def clean(path: str | Path, *, keep_parameters: bool = True) -> None:
    """Drop volatile metadata of an executed notebook (papermill's timings, widget state);
    keep tags, outputs, execution counts (nbval skips cells without one) and, if asked,
    the recorded parameters."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    recorded = nb.metadata.pop("papermill", {})
    if keep_parameters and recorded.get("parameters"):
        nb.metadata["papermill"] = {"parameters": recorded["parameters"]}
    for key in ("widgets", "execution"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:  # papermill adds empty tag lists
            del cell.metadata["tags"]
    nbformat.write(nb, path)


def _execute(job: Job, *, slot: str | None, sharing: int, threads: int, log: Path,
             clean_output: bool, say: Callable[[str], None]) -> Outcome:
    params = dict(job.parameters)
    if job.inject_threads and "threads" in _notebook_parameters(job.notebook):
        params.setdefault("threads", threads)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.pop("MPLBACKEND", None)  # Agg in the kernel would drop every figure
    # one inductor cache for every job: a compiled backbone is code-generated once per
    # shape, the other jobs (and later builds) load it
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str((project_root() or Path.cwd()) / INDUCTOR_CACHE))
    if slot is not None:
        env.update(CUDA_VISIBLE_DEVICES=slot, **{GPU_JOBS_ENV: str(sharing)})
    job.output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(job.notebook), str(job.output),
           "--cwd", str(job.notebook.parent), "-k", "python3", "--log-output",
           "--no-progress-bar"] + (["-y", json.dumps(params)] if params else [])
    say(f"  start {job.name}" + (f" on GPU {slot}" if slot is not None else "")
        + f" -> {display_path(job.output)}")
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        say(f"  FAIL  {job.name} after {seconds:.0f} s (log {display_path(log)})")
        return Outcome(job, "failed", seconds, log, tail)
    if clean_output:
        clean(job.output, keep_parameters=job.output != job.notebook)
    say(f"  done  {job.name} in {seconds:.0f} s")
    return Outcome(job, "done", seconds, log)


def _notebook_parameters(notebook: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def _results_parameters(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in RUNTIME_PARAMETERS}


def add_arguments(parser: Any) -> None:
    """Flags of `python -m ddlib sweep`."""
    parser.add_argument("--profile", default="smoke", metavar="{" + ",".join(PROFILES) + "}",
                        help="the profile of every job (default: smoke)")
    parser.add_argument("--datasets", default="synthetic",
                        help="comma-separated, of " + ", ".join(DATASETS) + " (default: synthetic)")
    parser.add_argument("--methods", default=",".join(METHOD_ORDER),
                        help="comma-separated (default: all, " + ",".join(METHOD_ORDER) + ")")
    parser.add_argument("--increments", default=None,
                        help="comma-separated (default: the book grid's, ddlib.grid.GRID)")
    parser.add_argument("--orders", default=None,
                        help="comma-separated class orders (default: the book grid's)")
    parser.add_argument("--no-ablation", dest="ablation", action="store_false",
                        help="leave out the Figure 7 ablation job")
    parser.add_argument("--dd", choices=("both", "off", "on"), default=None,
                        help="baseline and +DD (default), baseline only, +DD only")
    parser.add_argument("--similar-k", type=int, default=None,
                        help="similar old classes per new class of the +DD runs (default: the "
                             "profile's; the ablation job keeps its own list)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="classifier epochs, the expert's scaled along (default: the "
                             "profile's)")
    parser.add_argument("--device", default=None, metavar="{" + ",".join(DEVICES) + "}",
                        help="the runs' device (default: the notebooks', auto)")
    parser.add_argument("--data-dir", default=None,
                        help="dataset folder (CIFAR-100 root, ImageNet folder with train/ "
                             "and val/, or the .npz of `arrays`); default: the notebooks' data/")
    parser.add_argument("--results-dir", default="results",
                        help="the results store (default: results)")
    parser.add_argument("--out", default="book/runs",
                        help="folder of executed notebooks (default: book/runs)")
    parser.add_argument("--log-dir", default="_build/logs",
                        help="one log per job (default: _build/logs)")
    parser.add_argument("--workers", type=int, default=None,
                        help="jobs at once (default: --jobs-per-gpu per GPU, else one per core)")
    parser.add_argument("--jobs-per-gpu", type=int, default=JOBS_PER_GPU,
                        help=f"runs packed on each GPU at once (default {JOBS_PER_GPU})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per job (default: 1 on the CPU, as RunConfig and "
                             "the notebooks; with GPUs, the cores shared out among the jobs)")
    parser.add_argument("--force", action="store_true", help="re-execute current jobs too")
    parser.add_argument("--in-place", nargs="+", metavar="NOTEBOOK", default=None,
                        help="instead: re-execute these notebooks in place with their "
                             "defaults and clean them (make notebooks)")


def main(args: dict[str, Any]) -> int:
    """`python -m ddlib sweep`: build the grid, run it, report; exit status 1 on failure."""
    if args["in_place"]:
        jobs = in_place_jobs(args["in_place"])
    else:
        def ints(text: str | None) -> list[int] | None:
            return None if text is None else [int(t) for t in text.split(",") if t.strip()]

        dd = {None: None, "both": [False, True], "off": [False], "on": [True]}[args["dd"]]
        jobs = experiment_jobs(
            args["profile"], datasets=_names(args["datasets"]), methods=_names(args["methods"]),
            ablation=args["ablation"], out_dir=args["out"], results_dir=args["results_dir"],
            increments=ints(args["increments"]), orders=ints(args["orders"]), dd=dd,
            similar_k=args["similar_k"], epochs=args["epochs"], device=args["device"],
            data_dir=args["data_dir"])
    outcomes = run_jobs(jobs, workers=args["workers"], threads=args["threads"],
                        jobs_per_gpu=args["jobs_per_gpu"],
                        force=args["force"] or bool(args["in_place"]), log_dir=args["log_dir"])
    return report(outcomes)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
