#!/usr/bin/env bash
# The whole test suite, slow end-to-end tests included (README "Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
exec .venv/bin/python -m pytest -q "$@"
