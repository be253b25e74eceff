#!/usr/bin/env bash
# README command 2: set up (idempotent, with test tools and chromium) and run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests - that is a failure" >&2; exit 1; fi
exit "$rc"
