# budgetflow: the CLI and the HTTP API, on Python 3.11 (compose.yaml's `api` and `demo`).
FROM python:3.11-slim
WORKDIR /app
ENV LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir uv
COPY pyproject.toml uv.lock README.md ./
COPY budgetflow budgetflow
COPY orchestrator orchestrator
COPY agents agents
COPY policies policies
COPY storage storage
COPY web web
COPY examples examples
COPY deploy/entrypoint.sh deploy/submit_run.py deploy/
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
# `budgetflow "$@"`, pointed at the stack's vLLM server when one runs.
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
