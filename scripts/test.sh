#!/usr/bin/env bash
# Install (idempotent, with test tools) and run the whole test suite, lint first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
