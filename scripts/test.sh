#!/usr/bin/env bash
# Install (idempotent, with test tools), lint, then run the tests (docs/testing.md).
#   bash scripts/test.sh            the whole suite: what CI runs
#   bash scripts/test.sh --fast     the fast tier (`make check`): without the tests marked slow, browser or compose
# Further arguments go to pytest (bash scripts/test.sh --fast -k probe).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=()
if [ "${1:-}" = "--fast" ]; then
  shift
  fast=(-m "not slow and not browser and not compose")
fi
scripts/install.sh --dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "${fast[@]}" "$@"
