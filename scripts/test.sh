#!/usr/bin/env bash
# The whole test suite, with every optional provider installed so nothing is skipped for lack of an SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages that tests use for real (campaigns on a real redis-server, the reverse-proxy recipe on a real
# nginx, the live calls page in a real headless chromium, the console in a real terminal under tmux): installed as root when missing; elsewhere those
# tests skip with one line saying what to install.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$missing nginx-light"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"
if [ "$(id -u)" = 0 ] && [ -n "$missing" ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
scripts/bootstrap.sh "dev,local,plivo,elevenlabs,azure,fast,redis,audio,report,examples"
scripts/typecheck.sh  # mypy: the package, and a user's program under --strict
# Four worker processes (pytest-xdist), also on 2 cores: most tests wait on real-time audio (a simulated call runs
# at the speed of speech), so the CPU is mostly idle and 4 workers cut the wall time by ~3x. The few tests marked
# `serial` (a tight wall-clock bound) then run alone. TEST_WORKERS=0 runs the first pass in one process too.
.venv/bin/python -m pytest -q -n "${TEST_WORKERS:-4}" --dist load -m "not serial" "$@"
status=0
.venv/bin/python -m pytest -q -m serial "$@" || status=$?
[ "$status" = 0 ] || [ "$status" = 5 ] || exit "$status"  # 5: the arguments selected no serial test
# The prior art's (voice-runtime 0.1.15) own public tests against this package; skips with one line offline.
scripts/compat.sh
