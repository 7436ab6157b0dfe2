#!/usr/bin/env bash
# The main job: an offline simulated phone call with real speech (Piper TTS + Whisper STT), no credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "local,report"
exec .venv/bin/voice-runtime demo "$@"
