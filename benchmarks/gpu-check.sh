#!/usr/bin/env bash
# The GPU check (issue 12) for a GPU machine as it comes: Python 3.12 with torch,
# torchvision, numpy, pandas - nothing to install, no papermill. From the repository:
#
#     bash benchmarks/gpu-check.sh             # $OUT/gpu-check.{json,txt}, else benchmarks/
#
# It measures, within 8 minutes (a 450 s budget inside, `timeout` at 480 s), in this order:
# step rates on CUDA (ours vs a DataLoader + PIL loop with 8 workers, fp32 and bf16,
# compiled and not), 1/2/4/8 runs packed on the GPU, and 2 rounds of a paper-profile
# iCaRL+DD on CIFAR-100-shaped synthetic data with the projected 10-round time. The JSON is
# rewritten after each part (and paper round). A part skipped for time is named in the
# JSON's "errors"; a second call with `--parts paper_rounds` (say) adds it to the same JSON.
# `--dry-run`: tiny, on the CPU (tests/test_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
exec timeout 480 "${PYTHON:-python3}" -m ddlib bench --gpu-check --out "${OUT:-benchmarks}" "$@"
