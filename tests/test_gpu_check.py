"""The GPU check's parts on the CPU (dry run): each part in a process of its own, killed at its
budget; the JSON and the table on disk before each part starts, so a kill or a call's end
keeps what the earlier parts measured; a second call adds its parts to the first's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddlib import bench


def _report(out: Path) -> dict:
    return json.loads((out / "gpu-check.json").read_text())


@pytest.mark.slow
def test_a_part_killed_at_its_budget_keeps_the_others_and_a_second_call_adds_it(tmp_path):
    out = tmp_path / "out"
    on_disk: dict[str, dict] = {}

    def say(line: str) -> None:
        if line.startswith("== "):  # a part starts: what came before is already written
            on_disk[line.split()[1]] = _report(out)
            on_disk[line.split()[1]]["table"] = (out / "gpu-check.txt").read_text()

    # 1 s is not enough to import torch: step_rates is killed before it measures anything
    first = bench.gpu_check(out, dry_run=True, part_seconds={"step_rates": 1}, say=say)
    assert list(on_disk) == list(bench.GPU_PARTS)  # the projected paper run first
    before_steps = on_disk["step_rates"]
    assert len(before_steps["parts"]["paper_rounds"]["round_s"]) == 2
    assert "projected full run" in before_steps["table"]
    assert first["errors"] == {"step_rates": "killed after its 1 s budget; it measured nothing"}
    assert set(first["parts"]) == {"paper_rounds", "packed"}  # the part after it still ran
    assert _report(out) == first
    assert "step_rates: killed after its 1 s budget" in (out / "gpu-check.txt").read_text()

    second = bench.gpu_check(out, dry_run=True, parts=("step_rates",), say=lambda _: None)
    assert second["errors"] == {}
    assert set(second["parts"]) == set(bench.GPU_PARTS)
    assert second["parts"]["paper_rounds"] == first["parts"]["paper_rounds"]
    assert set(second["part_seconds"]) == set(bench.GPU_PARTS)


def test_a_part_that_does_not_fit_the_call_is_skipped_and_named(tmp_path):
    report = bench.gpu_check(tmp_path, dry_run=True, budget_s=100, parts=("packed",),
                             part_seconds={"packed": 150}, say=lambda _: None)
    assert report["parts"] == {}
    assert report["errors"]["packed"].startswith("skipped: 100 s of this call's 100 s left")
    assert "--parts packed" in (tmp_path / "gpu-check.txt").read_text()


def test_budgets_fit_the_device_calls():
    # One call of 600 s less the interpreter's start holds the first two parts; the last
    # fits a second call, and the two with a 2-minute machine start stay under 15 minutes.
    first_two = bench.PART_SECONDS["paper_rounds"] + bench.PART_SECONDS["step_rates"]
    assert first_two <= bench.CALL_SECONDS <= 600 - 20
    assert 120 + first_two + bench.PART_SECONDS["packed"] + 2 * 20 <= 15 * 60 - 60
    assert 120 + bench.CALL_SECONDS <= 15 * 60 - 60


def test_unknown_part_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--parts \['warp'\] unknown"):
        bench.gpu_check(tmp_path, dry_run=True, parts=("warp",))
