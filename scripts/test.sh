#!/usr/bin/env bash
# The whole test suite, with every optional provider installed so nothing is skipped for lack of an SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "dev,local,plivo,elevenlabs,azure,fast"
exec .venv/bin/python -m pytest -q "$@"
