#!/usr/bin/env bash
# Type checks (run by scripts/test.sh): the package at the level pyproject.toml's [tool.mypy] sets (strict for the
# observability modules), and a user's program importing the public API under `mypy --strict`.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
"$py" -m mypy --no-error-summary
"$py" -m mypy --no-error-summary --config-file tests/typecheck/mypy-user.ini tests/typecheck/user_program.py
echo "typecheck: ok"
