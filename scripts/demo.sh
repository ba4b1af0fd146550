#!/usr/bin/env bash
# The README's first command: installs everything (scripts/setup.sh, idempotent), then
# opens the operator console on the built-in demo lab: clients, a load balancer and
# backends in network namespaces, real servers, background traffic. Nothing outside those
# namespaces is touched; quitting the console removes all of it.
# Usage: sudo scripts/demo.sh [lbtui demo options]     (e.g. --headless --duration 30)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[demo] lbtui demo $*"
# `python -m` runs this checkout's lbtui (the current directory comes first on sys.path),
# also when the venv is shared with another checkout.
exec .venv/bin/python -m lbtui demo "$@"
