#!/usr/bin/env bash
# The GPU check for a GPU machine as it comes: Python 3 with torch, torchvision, numpy,
# pandas - nothing to install, no papermill, no pytest. From the repository:
#
#     bash benchmarks/gpu-check.sh [--parts paper_rounds,step_rates,packed]
#
# writes $OUT/gpu-check.{json,txt} (else benchmarks/), both rewritten as the numbers come.
# Parts, in this order, each in a process of its own killed (with its children) when it
# overruns its budget, so a kill keeps what was measured before:
#   paper_rounds  360 s  2 rounds of a paper-profile iCaRL+DD (CIFAR-100-shaped synthetic
#                        data) and the projected 10-round time: the main number
#   step_rates    120 s  ours vs a DataLoader + PIL loop, fp32 and bf16, compiled and not
#   packed        150 s  1/2/4/8 runs packed on one GPU: the sweep's --jobs-per-gpu
# A part starts only when its whole budget fits in what is left of the call's 570 s
# (`--budget`); a skipped one is named in the JSON's "errors".
#
# Order of device calls for a 15-minute device budget (a machine start takes 1-2 minutes,
# and a warm machine's idle time counts too, so make the second call at once):
#   1. bash benchmarks/gpu-check.sh
#        paper_rounds, then step_rates (at most 480 s); packed is skipped if the first two
#        left it under 150 s
#   2. on the same warm machine (name the kind the first call got), only if 1 skipped one:
#        mkdir -p "$OUT" && cp benchmarks/gpu-check.json "$OUT"/ &&
#        bash benchmarks/gpu-check.sh --parts packed
#      after copying call 1's gpu-check.json into benchmarks/: call 2 adds to it
# At worst 2 + 8 + 2.5 minutes and the transfers; then give the machine back, and commit
# benchmarks/gpu-check.{json,txt}.
# `--dry-run`: tiny, on the CPU (tests/test_bench.py, tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
exec "${PYTHON:-python3}" -m ddlib bench --gpu-check --out "${OUT:-benchmarks}" "$@"
