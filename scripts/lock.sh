#!/usr/bin/env bash
# Re-resolve the dependency pins: install streamrec from pyproject.toml's version ranges into a
# scratch virtualenv (no constraints) and write every resolved version to constraints.txt,
# which scripts/setup.sh installs with. Run the test suite on the result before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip uv
"$scratch/venv/bin/uv" pip install -q --python "$scratch/venv/bin/python" -e '.[dev]'
{
  echo "# Versions every install uses (scripts/setup.sh passes this file as constraints), so a"
  echo "# fresh machine gets what the test suite last passed with. Regenerate: make lock"
  echo "# (resolves pyproject.toml's ranges afresh), then run make test before committing."
  "$scratch/venv/bin/uv" pip freeze --python "$scratch/venv/bin/python" --exclude-editable \
    | grep -v -E '^(pip|uv|setuptools)=='
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
