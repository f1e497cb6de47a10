# Shared by scripts/serve and scripts/test: make the virtualenv $VENV
# (.venv, or AUTOCONFIG_VENV) with Python 3.11+, install the given
# requirements file into it, and the project itself in editable mode, which
# gives $VENV/bin/autoconfig (quietly, only when the requirements or
# pyproject.toml changed).  The Debian 13 userland (scripts/debian13) keeps
# its own outside the clone, since a virtualenv belongs to one Python.
VENV=${AUTOCONFIG_VENV:-.venv}

ensure_venv() {
  local requirements=$1
  local python=${PYTHON:-python3}
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "autoconfig needs Python 3.11 or newer as '$python' (set PYTHON=...)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      # Debian splits venv out of python3.
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
      rm -rf "$VENV"
      "$python" -m venv "$VENV"
    fi
  fi
  local stamp=$VENV/.installed-$(basename "$requirements")
  if [ ! -f "$stamp" ] || [ -n "$(find requirements*.txt pyproject.toml -newer "$stamp")" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    # The pins above are the dependencies; this adds only the package and its command.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --editable .
    touch "$stamp"
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
