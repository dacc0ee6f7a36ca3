#!/usr/bin/env bash
# Create the isolated Arize Phoenix virtual environment used by the OTLP trace tests.
#
# Phoenix is a trace receiver (an OTLP endpoint with a UI and a REST API), not a library
# dependency of budgetflow: it lives in its own venv, outside the repository, and is
# reached over HTTP, as any OTLP backend would be. Idempotent: an existing venv whose
# Phoenix imports is re-used.
#
# Environment:
#   BUDGETFLOW_PHOENIX_VENV   where to create the venv (default: ~/.cache/budgetflow/phoenix-venv)
#   BUDGETFLOW_PHOENIX_SPEC   pip requirement for Phoenix (default: arize-phoenix==20.26.1)
#   PYTHON                    interpreter for the venv (default: python3.11)
set -euo pipefail

VENV="${BUDGETFLOW_PHOENIX_VENV:-$HOME/.cache/budgetflow/phoenix-venv}"
SPEC="${BUDGETFLOW_PHOENIX_SPEC:-arize-phoenix==20.26.1}"
PY="${PYTHON:-python3.11}"

if [[ -x "$VENV/bin/phoenix" ]] && "$VENV/bin/python" -c "import phoenix.server.main" >/dev/null 2>&1; then
    echo "Phoenix venv already present: $VENV ($("$VENV/bin/python" -c 'import phoenix; print(phoenix.__version__)'))"
    exit 0
fi

echo "creating Phoenix venv at $VENV with $SPEC (takes a minute or two)"
mkdir -p "$(dirname "$VENV")"
rm -rf "$VENV"
if command -v uv >/dev/null 2>&1 || [[ -x "$HOME/.local/bin/uv" ]]; then
    UV_BIN="$(command -v uv || echo "$HOME/.local/bin/uv")"
    "$UV_BIN" venv --quiet --python "$PY" "$VENV"
    VIRTUAL_ENV="$VENV" "$UV_BIN" pip install --quiet "$SPEC"
else
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "$SPEC"
fi
"$VENV/bin/python" -c "import phoenix.server.main, phoenix; print('Phoenix', phoenix.__version__, 'ready in', '$VENV')"
