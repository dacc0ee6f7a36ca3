#!/bin/sh
# The image's entrypoint: `budgetflow "$@"`, on the stack's vLLM server when one runs.
#
# compose.yaml gives every budgetflow service `STACK_VLLM_URL` (http://vllm:8000/v1). The
# `vllm` host exists only under `--profile cpu` or `--profile gpu`, and those services
# start first (their healthcheck gates the API), so the name resolves exactly when the
# profile is on. Then `hosted_vllm/...` models (examples/local_model.py's `local`) go to
# it through `BUDGETFLOW_VLLM_URL`, and examples/local_model.py declares it as a one-replica
# vLLM pool (`LOCAL_MODEL_REPLICAS`: the router, its health checks and pool metrics, and the
# dashboard's pool page); otherwise they stay on the simulated backend.
# A `BUDGETFLOW_VLLM_URL` set by hand wins.
set -eu
if [ -z "${BUDGETFLOW_VLLM_URL:-}" ] && [ -n "${STACK_VLLM_URL:-}" ]; then
    host=$(printf '%s\n' "$STACK_VLLM_URL" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
    if getent hosts "$host" >/dev/null 2>&1; then
        export BUDGETFLOW_VLLM_URL="$STACK_VLLM_URL"
        export LOCAL_MODEL_REPLICAS="${LOCAL_MODEL_REPLICAS:-${STACK_VLLM_URL%/v1}}"
        echo "vLLM server found: hosted_vllm models go to $BUDGETFLOW_VLLM_URL" >&2
    fi
fi
exec budgetflow "$@"
