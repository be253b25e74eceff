#!/usr/bin/env bash
# README command 1: set up (idempotent) and open Transfer Studio at http://127.0.0.1:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/transfer-studio app "$@"
