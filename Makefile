# budgetflow — every target installs what it needs first.
UV ?= uv
PY := .venv/bin/python
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install services format lint typecheck test test-fast test-workers test-vllm test-phoenix test-browser bench bench-planners bench-executor bench-vllm demo clean

install:
	@bash scripts/ensure_uv.sh
	@$(UV) sync --frozen --quiet

services:
	@bash scripts/ensure_services.sh

format: install
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

lint: install
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .

typecheck: install
	$(UV) run --frozen mypy
	$(UV) run --frozen mypy --strict --explicit-package-bases tests benchmarks

# The whole suite: lint, types, unit + integration tests on real Redis and PostgreSQL,
# then the browser tests (Debian's chromium driving the dashboard), the real-vLLM tests
# (they build a tiny model and start vLLM CPU replicas) and the end-to-end trace tests
# (a real Arize Phoenix receiving OTLP).
test: install services lint typecheck
	$(UV) run --frozen pytest -m "not vllm and not isolated and not phoenix and not browser and not workers" -q
	$(UV) run --frozen pytest -m isolated -q
	$(MAKE) test-workers
	$(MAKE) test-browser
	$(MAKE) test-vllm
	$(MAKE) test-phoenix

test-fast: install services
	$(UV) run --frozen pytest -m "not vllm and not isolated and not phoenix and not browser and not workers" -q -x

# `budgetflow worker` processes on DBOS: enqueue, share, cancel, take over a dead worker's runs.
test-workers: install
	$(UV) run --frozen pytest -m workers -q

test-vllm: install
	bash scripts/setup_vllm.sh
	BUDGETFLOW_REQUIRE_VLLM=1 $(UV) run --frozen pytest -m vllm -q

test-phoenix: install
	bash scripts/setup_phoenix.sh
	BUDGETFLOW_REQUIRE_PHOENIX=1 $(UV) run --frozen pytest -m phoenix -q

# Debian's chromium (installed by apt when missing) driven by Playwright; screenshots of the
# dashboard's pages land in tests/browser/artifacts/ (or BUDGETFLOW_SCREENSHOTS).
test-browser: install
	bash scripts/setup_browser.sh
	BUDGETFLOW_REQUIRE_BROWSER=1 $(UV) run --frozen pytest -m browser -q

bench: bench-executor bench-planners

bench-executor: install
	$(PY) benchmarks/bench_executor.py

# The 40-DAG dev pool ships in benchmarks/data/; pass POOL=FILE for another.
POOL ?= benchmarks/data/pool_dev.jsonl
bench-planners: install
	$(PY) benchmarks/bench_planners.py --pool $(POOL)

bench-vllm: install
	bash scripts/setup_vllm.sh
	$(PY) benchmarks/bench_vllm_pool.py

# A real workflow on the embedded defaults: SQLite, in-process ledger, and the simulated
# backend unless provider keys (e.g. OPENAI_API_KEY) or BUDGETFLOW_VLLM_URL are set.
demo: install
	$(UV) run --frozen budgetflow run examples/code_pipeline.py --budget 0.05 --deadline 45
	$(UV) run --frozen budgetflow runs list --limit 5

clean:
	rm -rf .budgetflow .pytest_cache .mypy_cache .ruff_cache
