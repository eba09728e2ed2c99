#!/usr/bin/env bash
# Install (idempotent, with test tools), lint, then run the tests (docs/testing.md).
#   bash scripts/test.sh            the whole suite: what CI runs
#   bash scripts/test.sh --fast     the fast tier (`make check`): without the tests marked slow, browser or compose
# Further arguments go to pytest (bash scripts/test.sh --fast -k probe).
#
# The fast tier runs in three pytest workers (pytest-xdist, a test file to a worker: its tests are
# small real runs, mostly waiting on their servers' delays); the whole suite adds the slow tests marked
# shared to them (tests/conftest.py: they judge behaviour, not time). What else is marked slow, browser
# or compose runs one test at a time after it: full-size rows, audits and browsers judge time and CPU,
# and must not share the machine with other tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tier=whole
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=fast
fi
scripts/install.sh --dev
.venv/bin/ruff check .
workers=(-n 3 --dist loadfile)
if [ "$tier" = fast ]; then
  exec .venv/bin/python -m pytest -m "not slow and not browser and not compose" "${workers[@]}" "$@"
fi
# The whole suite: the fast tier and the slow tests marked shared (they judge no time) in parallel, then
# the rest one at a time. pytest's exit code 5 is "no test selected" (a -k that matches only one part):
# not a failure here.
rc=0
.venv/bin/python -m pytest -m "not browser and not compose and (not slow or shared)" "${workers[@]}" "$@" || rc=$?
[ "$rc" = 5 ] && rc=0
rc2=0
# --durations: the one-at-a-time part is most of the whole suite's time; every log says where it went
.venv/bin/python -m pytest -m "(slow and not shared) or browser or compose" --durations=25 "$@" || rc2=$?
[ "$rc2" = 5 ] && rc2=0
exit $(( rc || rc2 ))
