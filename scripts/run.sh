#!/usr/bin/env bash
# Install (idempotent) and start the lab: dashboard and API on http://127.0.0.1:8000/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/lab serve --host "${LAB_HOST:-127.0.0.1}" --port "${LAB_PORT:-8000}" "$@"
