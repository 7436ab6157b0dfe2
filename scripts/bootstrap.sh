#!/usr/bin/env bash
# Create (or reuse) the project virtualenv and install the package with the given extras.
# Usage: scripts/bootstrap.sh "local,dev"    -> prints nothing but pip errors; the venv is .venv/
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"voice_runtime needs Python >= 3.11, found {sys.version.split()[0]}")
PY
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
