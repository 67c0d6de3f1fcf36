"""The benchmark's moving parts, on tiny sizes (no timing is asserted): the reference loop,
the end-to-end comparison, and the GPU check's dry run from benchmarks/gpu-check.sh with
only what the GPU machine has (no papermill or Jupyter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddlib import bench, engine

ROOT = Path(__file__).resolve().parents[1]
# Not on the GPU machine's image: importing any of them on the run/bench paths fails there.
NOTEBOOK_ONLY = ("papermill", "nbformat", "nbclient", "jupyter_core", "jupyter_client",
                 "ipykernel", "IPython", "jupyter_book", "myst_nb")


def _gpu_machine_env(tmp_path: Path) -> dict[str, str]:
    """Environment whose Pythons refuse to import the notebook-only packages."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {set(NOTEBOOK_ONLY)!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not on the GPU machine')\n"
        "sys.meta_path.insert(0, Block())\n")
    return {**os.environ, "PYTHONPATH": str(block), "PYTHON": sys.executable,
            "OMP_NUM_THREADS": "1", "OUT": str(tmp_path / "out")}


@pytest.mark.slow
def test_the_blocker_blocks(tmp_path):
    env = _gpu_machine_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import papermill"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "not on the GPU machine" in probe.stderr


@pytest.mark.slow
def test_run_works_without_notebook_packages(tmp_path):
    env = _gpu_machine_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "ddlib", "run", "--profile", "smoke", "--increment", "10",
         "--epochs", "1", "--milestones", "", "--results-dir", str(tmp_path / "results"),
         "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fp32" in done.stdout + done.stderr  # the log says which precision ran
    (result,) = (tmp_path / "results").rglob("*.json")
    assert json.loads(result.read_text())["config"]["precision"] == "fp32"


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_json_and_table(tmp_path):
    env = _gpu_machine_env(tmp_path)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu-check.sh"), "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert report["dry_run"] and report["errors"] == {}
    assert set(report["parts"]) == {"step_rates", "paper_rounds", "packed"}
    assert {"ours fp32", "premade fp32", "toolbox fp32"} <= set(report["parts"]["step_rates"])
    rounds = report["parts"]["paper_rounds"]
    assert len(rounds["round_s"]) == 2
    assert rounds["projected_full_run_s"] == pytest.approx(
        rounds["round_s"][0] + 9 * rounds["round_s"][1], abs=0.1)
    packed = report["parts"]["packed"]
    assert set(packed) == {"1", "2", "best_jobs_per_gpu"}
    assert all(len(packed[n]["per_run_img_per_s"]) == int(n) for n in ("1", "2"))
    table = (tmp_path / "out" / "gpu-check.txt").read_text()
    assert "projected full run" in table and "best --jobs-per-gpu" in table


@pytest.mark.slow
def test_end_to_end_runs_both_loops_and_accounts_for_the_difference(monkeypatch):
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()  # dynamo without code generation: the plumbing, in seconds
    monkeypatch.setattr(engine, "compiled", lambda fn, device: torch.compile(
        fn, backend=counter, dynamic=False))
    own_train = engine.train
    out = bench.end_to_end(profile="smoke", quick=True, device="cpu", increment=10,
                           compiled=True, say=lambda _: None)
    assert counter.frame_count == 2  # only "ours compiled" compiled: training and frozen
    assert out["compile_speedup"] == round(out["ours"]["seconds"]
                                           / out["ours compiled"]["seconds"], 3)
    assert engine.train is own_train  # the reference loop is undone
    assert out["clock"] == "cpu" and out["quick"]  # one thread, loader in-process: CPU seconds
    ours, ref = out["ours"], out["reference"]
    assert ref["load_s"] > 0 and ref["logging_s"] > 0  # the reference did its extra work
    assert out["saved_s"] == round(ref["seconds"] - ours["seconds"], 2)
    # the parts are rounded to 0.01 s each: their sum may differ by up to 0.015 s
    assert sum(out["saved_by"].values()) == pytest.approx(out["saved_s"], abs=0.02)
    assert 0 <= ours["avg_inc_acc"] <= 100 and 0 <= ref["avg_inc_acc"] <= 100


def test_a_compiled_step_compiles_the_backbone_as_the_engine_does(monkeypatch):
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    compiled_fns = []

    def compile_with_counter(fn, device):
        compiled_fns.append(fn)
        return torch.compile(fn, backend=counter, dynamic=False)

    monkeypatch.setattr(engine, "compiled", compile_with_counter)
    torch._dynamo.reset()
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    weights = []
    for compiled in (False, True):
        net, opt = bench._model(False, torch.device("cpu"), width=0.25)
        step = bench._stepper(net, opt, torch.device("cpu"), "fp32", compiled)
        step(x, y)
        step(x, y)
        weights.append(net.head.weight.detach().clone())
    assert compiled_fns == [engine.run_backbone] and counter.frame_count == 1
    torch.testing.assert_close(weights[0], weights[1])  # the same step, compiled


def test_a_cold_compile_uses_an_empty_cache_in_this_process(tmp_path, monkeypatch):
    import torch._inductor.config as inductor
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "shared"))
    with bench._cold_compile(tmp_path / "cold"):
        assert cache_dir() == str(tmp_path / "cold") and inductor.compile_threads == 1
    assert cache_dir() == str(tmp_path / "shared")
