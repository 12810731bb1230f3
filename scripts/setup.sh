#!/usr/bin/env bash
# Create .venv in the repository root and install tinygpt with everything its tests use.
# Idempotent: a second run only checks.  `--browser` also installs Debian's Chromium for the
# browser test (needs root/apt; Playwright never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Installed = findable (importing them all, gradio and onnx included, took ~15 s on every run).
if ! .venv/bin/python -c "
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in
             ('tinygpt', 'torch', 'transformers', 'peft', 'gradio', 'prometheus_client', 'uvloop', 'openai', 'onnx',
              'onnxscript', 'onnxruntime', 'datasets')))
" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  # Pinned CPU build: an unpinned torch would resolve to a multi-GB CUDA wheel.  GPU/NPU users
  # install their own torch first (README "Install"); a torch already present is kept.
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e '.[serve,quant,dev,data]'
fi
if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: /usr/bin/chromium missing; run 'sudo apt-get install chromium' for the browser test" >&2
  fi
fi
