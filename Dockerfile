# budgetflow: the CLI and (later) the API and workers, on Python 3.11.
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
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
ENTRYPOINT ["budgetflow"]
