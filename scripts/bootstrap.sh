#!/usr/bin/env bash
# Create (or reuse) the project virtualenv and install the package with the given extras — only when needed.
# Usage: scripts/bootstrap.sh "local,dev"    -> quiet; the venv is .venv/
#
# An install is skipped when .venv/.voice-runtime-install.json records the SHA-256 of this pyproject.toml and
# extras that include the requested ones (scripts/install_stamp.py). So once installed, the run commands need
# no network and no package index. VOICE_RUNTIME_REINSTALL=1 forces a reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"voice_runtime needs Python >= 3.11, found {sys.version.split()[0]}")
PY
if [ "${VOICE_RUNTIME_REINSTALL:-0}" != 1 ] && "$python" scripts/install_stamp.py check .venv pyproject.toml "$extras"; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
rm -f .venv/.voice-runtime-install.json  # no stamp until this install has succeeded
all_extras="$("$python" scripts/install_stamp.py extras .venv "$extras")"
if [ -n "$all_extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[${all_extras}]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
"$python" scripts/install_stamp.py record .venv pyproject.toml "$all_extras"
