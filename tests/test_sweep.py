"""The papermill sweep: parameter checks up front, side-by-side jobs, a failing job reported
with its notebook and log while the others finish, current jobs skipped."""

from __future__ import annotations

import ast
import functools
import subprocess
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

import ddlib
from ddlib import distributed, grid, results, sweep
from ddlib.__main__ import main


def _tiny_notebook(path):
    """Parameter `x`; the second cell fails for x == 2."""
    nb = new_notebook(cells=[
        new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        new_code_cell('assert x != 2, "x must not be 2"\nprint("x is", x)')])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_failing_job_is_reported_and_the_others_finish(tmp_path):
    notebook = _tiny_notebook(tmp_path / "tiny.ipynb")
    jobs = [sweep.Job(notebook, tmp_path / "out" / f"x{x}.ipynb", {"x": x}) for x in (1, 2, 3)]
    lines: list[str] = []
    outcomes = sweep.run_jobs(jobs, workers=2, gpus=[], log_dir=tmp_path / "logs",
                              say=lines.append)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "2 at once" in lines[0]
    assert sweep.report(outcomes, say=lines.append) == 1
    text = "\n".join(lines)
    assert "FAILED x2" in text and str(tmp_path / "out" / "x2.ipynb") in text
    assert str(tmp_path / "logs" / "x2.log") in text and "x must not be 2" in text
    done = nbformat.read(tmp_path / "out" / "x3.ipynb", as_version=4)
    assert done.metadata["papermill"] == {"parameters": {"x": 3}}  # timings cleaned away
    assert done.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "x is 3" in done.cells[2].outputs[0]["text"]
    assert [c.execution_count for c in done.cells] == [1, 2, 3]  # nbval needs them
    # Again: the finished jobs are current and skipped, the failed one runs (and fails) again.
    again = sweep.run_jobs(jobs, workers=2, gpus=[], log_dir=tmp_path / "logs", say=print)
    assert [o.status for o in again] == ["skipped", "failed", "skipped"]
    assert sweep.report(again, say=print) == 1


@pytest.mark.slow
def test_a_missing_result_makes_a_job_run_again(tmp_path):
    notebook = _tiny_notebook(tmp_path / "tiny.ipynb")
    result = tmp_path / "result.json"
    job = sweep.Job(notebook, tmp_path / "x1.ipynb", {"x": 1}, expects=(result,))
    assert [o.status for o in sweep.run_jobs([job], gpus=[], log_dir=tmp_path)] == ["done"]
    assert not sweep.is_current(job)
    result.write_text("{}")
    assert sweep.is_current(job)
    assert not sweep.is_current(sweep.Job(notebook, job.output, {"x": 4}, expects=(result,)))


@pytest.mark.slow
def test_unknown_parameter_fails_before_any_job_runs(tmp_path):
    notebook = _tiny_notebook(tmp_path / "tiny.ipynb")
    jobs = [sweep.Job(notebook, tmp_path / "a.ipynb", {"x": 1}),
            sweep.Job(notebook, tmp_path / "b.ipynb", {"y": 1})]
    with pytest.raises(ValueError, match=r"tiny.ipynb has no parameter\(s\) \['y'\]"):
        sweep.run_jobs(jobs, gpus=[], log_dir=tmp_path)
    assert not (tmp_path / "a.ipynb").exists()


@pytest.mark.slow
def test_in_place_job_injects_nothing(tmp_path):
    notebook = _tiny_notebook(tmp_path / "tiny.ipynb")
    (outcome,) = sweep.run_jobs(sweep.in_place_jobs([notebook]), gpus=[], force=True,
                                log_dir=tmp_path)
    assert outcome.status == "done"
    nb = nbformat.read(notebook, as_version=4)
    assert len(nb.cells) == 2 and "papermill" not in nb.metadata
    assert "x is 1" in nb.cells[1].outputs[0]["text"]


def test_bad_values_fail_in_the_grid_before_any_job(capsys):
    with pytest.raises(ValueError, match="orders"):
        sweep.experiment_jobs("smoke", orders=["a"])
    assert main(["sweep", "--profile", "fast"]) == 2
    assert "profile='fast' is unknown" in capsys.readouterr().err


def test_experiment_grid_names_and_expected_results(tmp_path):
    jobs = sweep.experiment_jobs("cpu", datasets=["synthetic", "cifar100"],
                                 methods=["icarl"], results_dir=str(tmp_path))
    assert [j.output.name for j in jobs] == [
        "icarl.ipynb", "ablation.ipynb", "icarl-cifar100.ipynb", "ablation-cifar100.ipynb",
        "icarl-figure1-cifar100.ipynb"]
    assert [j.notebook.name for j in jobs[:2]] == ["icarl.ipynb", "ablation.ipynb"]
    assert jobs[2].parameters == {"profile": "cpu", "dataset": "cifar100", "orders": [0],
                                  "increments": [20], "results_dir": str(tmp_path)}
    # baseline and +DD at 20 classes per round
    assert sorted((p.parent.parent.name, p.parent.name) for p in jobs[0].expects) == [
        ("icarl", "inc20"), ("icarl+dd", "inc20")]
    # the ablation: +DD with k = 0, then 1, then the baseline, at 20 per round
    assert [p.parent.parent.name for p in jobs[1].expects] == ["icarl+dd-k0", "icarl+dd", "icarl"]
    assert {p.parent.name for p in jobs[1].expects} == {"inc20"}


def test_expert_scratch_jobs_run_dd_from_scratch_at_the_analysis_increment(tmp_path):
    jobs = sweep.experiment_jobs("paper", methods=["icarl", "ucir", "bic"],
                                 datasets=["synthetic"], results_dir=str(tmp_path))
    scratch = [j for j in jobs if "expert-scratch" in j.name]
    assert [(j.name, j.notebook.name) for j in scratch] == [  # bic is not compared
        ("icarl-expert-scratch", "icarl.ipynb"), ("ucir-expert-scratch", "ucir.ipynb")]
    assert scratch[0].parameters == {"profile": "paper", "dataset": "synthetic",
                                     "results_dir": str(tmp_path), "orders": [0, 1, 2],
                                     "increments": [20], "dd": [True],
                                     "expert_init": "scratch"}
    for job, method in zip(scratch, ("icarl", "ucir")):
        runs = ddlib.plan("paper", method=method, dataset="synthetic", dd=True, increments=20,
                          orders=[0, 1, 2],
                          expert_init="scratch", results_dir=str(tmp_path))
        assert job.expects == tuple(results.result_path(c) for c in runs)
    # a run of its own, not the +DD run of the method's job (whose expert starts old)
    (icarl,) = [j for j in jobs if j.name == "icarl"]
    assert not set(scratch[0].expects) & set(icarl.expects)
    assert not [j for j in sweep.experiment_jobs("paper", datasets=["imagenet100"],
                                                 methods=["icarl"]) if "scratch" in j.name]


def test_expert_init_runs_are_each_methods_baseline_and_both_starts():
    runs = grid.expert_init_runs("paper")
    assert runs[:3] == ({"method": "icarl", "dd": False, "increment": 20},
                        {"method": "icarl", "dd": True, "similar_k": 1, "expert_init": "old",
                         "increment": 20},
                        {"method": "icarl", "dd": True, "similar_k": 1,
                         "expert_init": "scratch", "increment": 20})
    assert [r["method"] for r in runs] == ["icarl"] * 3 + ["ucir"] * 3


def test_cifar100_gets_figure1_runs_in_its_dedicated_order(tmp_path):
    jobs = sweep.experiment_jobs("paper", datasets=["cifar100"], results_dir=str(tmp_path))
    figure1 = [j for j in jobs if j.name == "icarl-figure1"]
    assert len(figure1) == 1 and jobs[-1] is figure1[0]
    assert figure1[0].notebook.name == "icarl.ipynb"
    params = figure1[0].parameters
    assert (params["class_order_seed"], params["increments"], params["orders"]) == (18, [20], [0])
    assert sorted(p.parent.parent.name for p in figure1[0].expects) == ["icarl", "icarl+dd"]
    assert all(p.stem.startswith("order0-") for p in figure1[0].expects)  # not order 0's file
    assert not [j for j in sweep.experiment_jobs("paper", datasets=["cifar100"],
                                                 methods=["ucir"]) if "figure1" in j.name]


def test_jobs_start_in_the_measured_order():
    names = [j.name for j in sweep.experiment_jobs("paper", datasets=["synthetic"])]
    assert names == ["icarl", "ablation", "ucir", "bic", "lwf", "icarl-expert-scratch",
                     "ucir-expert-scratch"]


def test_imagenet_jobs_take_the_datasets_increment_and_skip_the_ablation(tmp_path):
    jobs = sweep.experiment_jobs("paper", datasets=["imagenet100"], methods=["bic", "lwf"],
                                 results_dir=str(tmp_path))
    assert [j.output.name for j in jobs] == ["bic.ipynb", "lwf.ipynb"]
    assert "increments" not in jobs[0].parameters
    assert {p.parent.name for p in jobs[1].expects} == {"inc10"}
    assert {p.stem for p in jobs[1].expects} == {"order0", "order1", "order2"}


def test_similar_k_list_plans_each_arm_and_one_baseline():
    runs = ddlib.plan("smoke", method="ucir", dd=[True, False], similar_k=[0, 2, 1])
    assert [(c.dd, c.similar_k) for c in runs] == [(True, 0), (True, 2), (True, 1), (False, 1)]


def test_data_dir_reaches_every_job_and_its_runs(tmp_path):
    jobs = sweep.experiment_jobs("smoke", methods=["lwf"], data_dir=str(tmp_path / "imagenet"),
                                 results_dir=str(tmp_path))
    assert {j.parameters["data_dir"] for j in jobs} == {str(tmp_path / "imagenet")}
    assert [j.notebook.name for j in jobs] == ["lwf.ipynb"]  # lwf is not in the ablation


def test_plan_takes_a_list_of_methods_and_names_a_bad_one():
    runs = ddlib.plan("smoke", method=["icarl", "bic"], dd=False)
    assert [c.method for c in runs] == ["icarl", "bic"]
    with pytest.raises(ValueError, match="method"):
        ddlib.plan("smoke", method=["icarl", 3])


def test_figure1_takes_a_dedicated_order_on_cifar100_only():
    assert grid.figure1("paper", "cifar100") == {"increment": 20, "class_order_seed": 18,
                                                 "followed": "baby", "pick": None}
    assert grid.figure1("cpu", "synthetic") == {"increment": 20, "class_order_seed": None,
                                                "followed": None, "pick": "drop"}
    assert grid.figure1("smoke", "synthetic")["pick"] == "order"  # no trained number decides
    with pytest.raises(ValueError, match="profile='fast' is unknown"):
        grid.grid("fast")


def test_ablation_runs_are_each_methods_baseline_and_every_k():
    runs = grid.ablation_runs("smoke")
    assert len(runs) == 2 * 6 and runs[0] == {"method": "icarl", "dd": False}
    assert [r.get("similar_k") for r in runs[:6]] == [None, 0, 1, 2, 3, 4]
    assert {r["method"] for r in runs} == set(grid.GRID["smoke"]["ablation_methods"])


def test_the_sweep_and_its_grid_do_not_import_the_book():
    for module in (sweep, grid):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "book" not in imported and imported & {"grid", "config"}, module.__name__


# ------------------------------------------------------------------------- GPU packing

def test_gpu_slots_pack_each_gpu_interleaved():
    assert sweep.gpu_slots(["0", "1"], 2) == ["0", "1", "0", "1"]
    assert sweep.gpu_slots(["0", "1"], 3, workers=3) == ["0", "1", "0"]
    assert sweep.gpu_slots([], 4) == []  # no GPU: the CPU slots apply
    with pytest.raises(ValueError, match="jobs_per_gpu=0 must be >= 1"):
        sweep.gpu_slots(["0"], 0)


@pytest.mark.slow
def test_jobs_per_gpu_runs_that_many_at_once_on_one_gpu(tmp_path):
    """Three jobs on (fake) GPU 7 with --jobs-per-gpu 3: each waits until all three have
    started, so they pass only when packed side by side, all given CUDA_VISIBLE_DEVICES=7."""
    nb = new_notebook(cells=[
        new_code_cell("x = 0\nfolder = ''\nn = 1", metadata={"tags": ["parameters"]}),
        new_code_cell(
            "import os, pathlib, time\n"
            "d = pathlib.Path(folder)\n"
            "(d / str(x)).write_text(os.environ.get('CUDA_VISIBLE_DEVICES', ''))\n"
            "deadline = time.time() + 300\n"
            "while len(list(d.iterdir())) < n and time.time() < deadline:\n"
            "    time.sleep(0.2)\n"
            "assert len(list(d.iterdir())) == n, 'the jobs did not run at once'")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "wait.ipynb")
    (tmp_path / "started").mkdir()
    jobs = [sweep.Job(tmp_path / "wait.ipynb", tmp_path / "out" / f"j{x}.ipynb",
                      {"x": x, "folder": str(tmp_path / "started"), "n": 3}) for x in range(3)]
    lines: list[str] = []
    outcomes = sweep.run_jobs(jobs, gpus=["7"], jobs_per_gpu=3, log_dir=tmp_path / "logs",
                              say=lines.append)
    assert [o.status for o in outcomes] == ["done"] * 3, [o.tail for o in outcomes]
    assert "GPUs 7, up to 3 job(s) each" in lines[0]
    assert {p.read_text() for p in (tmp_path / "started").iterdir()} == {"7"}


def test_each_job_is_told_how_many_jobs_share_its_gpu(tmp_path, monkeypatch):
    notebook = _tiny_notebook(tmp_path / "nb.ipynb")
    started: list[dict[str, str]] = []

    def papermill(cmd, *, env, **kwargs):
        started.append(env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sweep.subprocess, "run", papermill)
    jobs = [sweep.Job(notebook, tmp_path / "out" / f"j{x}.ipynb", {"x": x}) for x in range(3)]
    # GPUs 0 and 1, 2 jobs each, but 3 workers: GPU 0 runs two jobs at once, GPU 1 one
    outcomes = sweep.run_jobs(jobs, gpus=["0", "1"], jobs_per_gpu=2, workers=3, force=True,
                              clean_output=False, log_dir=tmp_path / "logs", say=lambda _: None)
    assert [o.status for o in outcomes] == ["done"] * 3
    sharing = {env["CUDA_VISIBLE_DEVICES"]: env[distributed.GPU_JOBS_ENV] for env in started}
    assert sharing == {"0": "2", "1": "1"}


def test_jobs_share_one_inductor_cache_unless_the_user_set_one(tmp_path, monkeypatch):
    notebook = _tiny_notebook(tmp_path / "nb.ipynb")
    started: list[dict[str, str]] = []

    def papermill(cmd, *, env, **kwargs):
        started.append(env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sweep.subprocess, "run", papermill)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    jobs = [sweep.Job(notebook, tmp_path / "out" / f"j{x}.ipynb", {"x": x}) for x in range(2)]
    run = functools.partial(sweep.run_jobs, jobs, workers=2, force=True, clean_output=False,
                            log_dir=tmp_path / "logs", say=lambda _: None)
    run()
    caches = {env["TORCHINDUCTOR_CACHE_DIR"] for env in started}
    assert len(caches) == 1 and Path(caches.pop()).parts[-2:] == ("_build", "inductor-cache")
    started.clear()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    run()
    assert {env["TORCHINDUCTOR_CACHE_DIR"] for env in started} == {str(tmp_path / "mine")}


GiB = 2**30


@pytest.mark.parametrize("jobs, free, share", [
    (None, 80, 80),  # alone: all the free memory
    ("4", 80, 20),   # 4 packed jobs, each reading before any allocates: a quarter each
    ("4", 10, 10),   # never more than is free
])
def test_packed_jobs_plan_with_their_share_of_the_gpu(monkeypatch, jobs, free, share):
    if jobs is None:
        monkeypatch.delenv(distributed.GPU_JOBS_ENV, raising=False)
    else:
        monkeypatch.setenv(distributed.GPU_JOBS_ENV, jobs)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free * GiB, 80 * GiB))
    assert distributed.device_memory_share(torch.device("cuda")) == share * GiB


def test_a_bad_job_count_is_named(monkeypatch):
    monkeypatch.setenv(distributed.GPU_JOBS_ENV, "0")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (GiB, GiB))
    with pytest.raises(ValueError, match="DDLIB_JOBS_ON_GPU='0'"):
        distributed.device_memory_share(torch.device("cuda"))
