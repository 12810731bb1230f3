#!/usr/bin/env bash
# One command that says whether tinygpt's device path works on this machine (docs/hardware.md):
#   bash scripts/accelerator_check.sh [--device cpu|cuda|npu] [--steps 300] [--no-tests] [--out PATH]
# records `python -m tinygpt.doctor`, runs the device-path tests, trains the tiny recipe's stage 1
# under bf16 autocast and in CPU fp32 and compares the loss curves, compares greedy captions and
# logits with the CPU, and prints throughput rows; writes benchmarks/results/accelerator_<device>.json
# and .md (benchmarks/accelerator_check.py says what passes).  Budget: well under 8 minutes on one
# GPU/NPU; run it from the repository root with the project's Python first on PATH (or set PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
exec "$PYTHON" -m benchmarks.accelerator_check "$@"
