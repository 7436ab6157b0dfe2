#!/usr/bin/env bash
# Run the prior art's own tests (voice-runtime 0.1.15 sdist) against this package and count how many of the
# public-API subset listed in tests/compat/public-tests.txt pass. Fails when fewer than COMPAT_TARGET pass.
#
# Why: 0.1.x users must be able to upgrade without edits; the prior art's suite is the most honest statement
# of what 0.1.x promised. Procedure (tests/compat/README.md): download the sdist, keep tests/, drop the four
# files that import the unshipped tests.twilio_http_fakes, add the missing conftest, link the package, stub
# ffplay, run pytest with a 10 s per-test timeout, count the listed ids that passed.
#
# Usage: scripts/compat.sh [-v]      (-v also prints every failing id)
# Env:   COMPAT_TARGET (default 212), COMPAT_CACHE (default .cache/compat), PYTHON (default .venv/bin/python),
#        COMPAT_SCRATCH=dir keeps the prepared test folder there instead of a deleted temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
target="${COMPAT_TARGET:-212}"
cache="${COMPAT_CACHE:-$root/.cache/compat}"
version="0.1.15"
ids_file="$root/tests/compat/public-tests.txt"
known_file="$root/tests/compat/known-failures.txt"
verbose=0
[ "${1:-}" = "-v" ] && verbose=1

mkdir -p "$cache"
sdist="$(ls "$cache"/voice_runtime-"$version".tar.gz 2>/dev/null || true)"
if [ -z "$sdist" ]; then
  if ! "$python" -m pip download --quiet --timeout 10 --retries 1 --no-deps --no-binary :all: "voice-runtime==$version" -d "$cache" \
      >"$cache/download.log" 2>&1; then
    echo "compat: SKIPPED - voice-runtime $version sdist not cached in $cache and pip could not download it (offline?)"
    exit 0
  fi
  sdist="$cache/voice_runtime-$version.tar.gz"
fi

if [ -n "${COMPAT_SCRATCH:-}" ]; then   # keep the prepared folder (to rerun single tests while developing)
  scratch="$COMPAT_SCRATCH"; rm -rf "$scratch"; mkdir -p "$scratch"
else
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/vr-compat.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
fi

# 1. only tests/ from the archive
tar -xzf "$sdist" -C "$scratch" --strip-components=1 "voice_runtime-$version/tests"
# 2. the four files that import tests.twilio_http_fakes, which the sdist does not ship
rm -f "$scratch"/tests/test_vr004_migration_example.py "$scratch"/tests/test_vr004_region_hangup.py \
      "$scratch"/tests/test_vr006_migration_example.py "$scratch"/tests/test_vr006_region_cdr.py
# 3. the conftest the sdist lacks (plus one line of ours: vendor URLs go to a closed loopback port)
cat >"$scratch/tests/conftest.py" <<'PY'
import importlib.util
import os

import pytest

_PREFIXES = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICE_", "STT_")
for _name in list(os.environ):
    if _name.startswith(_PREFIXES) or _name in ("TRANSPORT", "NGROK_URL"):
        del os.environ[_name]


# No network: the run is offline by rule. Providers that would call a vendor (a test that passes a fake key)
# are pointed at a closed loopback port, so they fail at once instead of reaching out.
os.environ["ELEVENLABS_BASE_URL"] = "http://127.0.0.1:9"


def _azure_importable() -> bool:
    try:
        return importlib.util.find_spec("azure.cognitiveservices.speech") is not None
    except ModuleNotFoundError:
        return False


requires_azure = pytest.mark.skipif(not _azure_importable(), reason="azure-cognitiveservices-speech not installed")


def pytest_configure(config):
    config.addinivalue_line("markers", "req(id): requirement id")
PY
touch "$scratch/tests/__init__.py"
# 4. the package under test, a stub ffplay, pytest.ini
ln -s "$root/voice_runtime" "$scratch/voice_runtime"
mkdir -p "$scratch/bin"
printf '#!/bin/sh\nexec cat >/dev/null\n' >"$scratch/bin/ffplay"
chmod +x "$scratch/bin/ffplay"
printf '[pytest]\nasyncio_default_fixture_loop_scope = function\n' >"$scratch/pytest.ini"

# 5. run, record every outcome
(
  cd "$scratch"
  PATH="$scratch/bin:$PATH" "$python" -m pytest -p no:cacheprovider -q --continue-on-collection-errors \
    --timeout=10 -rA tests >"$scratch/run.log" 2>&1 || true
)
cp "$scratch/run.log" "$cache/last-run.log"

"$python" - "$ids_file" "$scratch/run.log" "$target" "$verbose" "$known_file" <<'PY'
import re
import sys
from pathlib import Path

ids_file, log_file, target, verbose, known_file = sys.argv[1:6]
wanted = [ln.strip() for ln in Path(ids_file).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
passed = set()
for line in Path(log_file).read_text(errors="replace").splitlines():
    m = re.match(r"^PASSED (\S+)", line)
    if m:
        passed.add(m.group(1))
known = {}
if Path(known_file).exists():
    for line in Path(known_file).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test_id, _, reason = line.partition("  ")
            known[test_id.strip()] = reason.strip()
failed = [t for t in wanted if t not in passed]
count = len(wanted) - len(failed)
unexplained = [t for t in failed if t not in known]
print(f"compat: {count}/{len(wanted)} prior-art (0.1.15) public tests pass (target {target})")
for t in failed:
    if int(verbose) or t in unexplained:
        print(f"  FAILED {t}" + (f"  -- {known[t]}" if t in known else "  -- not in known-failures.txt"))
if count < int(target):
    print(f"compat: FAILED - fewer than {target} pass; full log in .cache/compat/last-run.log")
    sys.exit(1)
PY
