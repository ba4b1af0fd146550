#!/usr/bin/env bash
# Installs what lbtui needs (scripts/setup.sh), then runs the linter, the type checker
# (mypy, strict on lbtui/; settings in pyproject.toml) and the whole test suite, datapath
# and namespace tests included (they need root and BPF and never skip).
# Usage: sudo scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check lbtui tests bench
echo "[test] mypy"
.venv/bin/mypy
echo "[test] pytest"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
