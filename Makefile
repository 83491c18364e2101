# Entry points for people and CI. `make test` and `make demo` build the virtual environment
# themselves, so a fresh clone needs nothing but Python 3.11 and the services it talks to.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: help venv system-tools test check lint format demo bench train airflow stack env up lock clean
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)$$/  \1\t\2/' | expand -t 16

venv: $(STAMP) ## build the virtual environment .venv from requirements.txt and constraints.txt

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	touch $(STAMP)

lint: $(STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## fix what ruff can and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Binaries the tests drive for real (Debian packages): headless Chromium renders the HTML drift
# report; Prometheus with promtool and Alertmanager with amtool check and run the alerting;
# docker-compose (1.29) checks docker-compose.yml (`config`; the stack test needs an engine too,
# see tests/test_compose_stack.py). Installed only when missing; needs root and the apt mirror,
# as CI has.
SYSTEM_PACKAGES := chromium prometheus prometheus-alertmanager docker-compose
system-tools: ## install the Debian packages the tests drive (Chromium, Prometheus, Alertmanager, docker-compose)
	command -v chromium >/dev/null && command -v promtool >/dev/null && \
	  command -v amtool >/dev/null && command -v docker-compose >/dev/null || \
	  (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  $(SYSTEM_PACKAGES))

# Three workers on two cores: most of the suite waits on servers, Airflow and Docker builds.
TEST_WORKERS ?= 3
test: lint system-tools ## lint, then the whole suite against the real components
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

# Unit tests only: what starts nothing real (tests/conftest.py marks the rest `integration`).
check: lint ## the quick tier while you work: lint and the unit tests (under two minutes)
	$(PY) -m pytest -m "not integration" -n 2 -q

# The whole story on one machine, on embedded defaults (SQLite, a local MLflow store, all under
# var/demo): four simulated weeks of traffic through the real API; drift from week 2 (a
# covariate shift, then a change in the fraud pattern), the drift check and the retrain policy
# every simulated six hours, a gated retrain, the hot reload, the recovery. It prints the
# timeline as it goes and a summary at the end, and writes var/demo/report.html. About 100 s
# on two idle cores (up to 5 minutes on a busy machine). DEMO_PORT must be free.
DEMO_PORT ?= 8000
demo: $(STAMP) ## four simulated weeks: drift caught, a gated retrain, the recovery (var/demo/report.html)
	$(PY) -m demo.run --port $(DEMO_PORT) --out var/demo

# Hot-path benchmarks (figures and machine in BENCHMARKS.md). Needs wrk and Postgres on 5432.
bench: $(STAMP) ## the hot-path benchmarks (figures in BENCHMARKS.md)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m benchmarks.bench_api
	$(PY) -m benchmarks.bench_server_start
	$(PY) -m benchmarks.bench_journal
	$(PY) -m benchmarks.bench_drift
	$(PY) -m benchmarks.bench_drift_postgres
	$(PY) -m benchmarks.bench_quality
	$(PY) -m benchmarks.bench_retention
	$(PY) -m benchmarks.bench_label_maturity

train: $(STAMP) ## train a model and register it in MLflow (gated)
	$(PY) -m training.train

# Airflow 3 on this machine, against the project's DAGs (airflow/dags/) and the stack's settings
# (.env: DATABASE_URL, MLFLOW_TRACKING_URI, ...): api-server (UI on AIRFLOW_PORT), scheduler,
# dag-processor and triggerer in one `airflow standalone`, its metadata under var/airflow. This
# is the one place that puts the project on Airflow's path (PYTHONPATH); the DAG files import
# the project's packages inside their tasks. The admin password is printed at start.
AIRFLOW_PORT ?= 8080
airflow: $(STAMP) ## Airflow 3 standalone on this machine with the project's DAGs
	mkdir -p var/airflow
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)" AIRFLOW_HOME="$(CURDIR)/var/airflow" \
	  AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/airflow/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  AIRFLOW__CORE__DEFAULT_TASK_RETRIES=1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	  AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
	  airflow standalone

# The services of docker-compose.yml as plain processes on this machine, under honcho
# (tools/stack.py): the API (API_PORT), the exporter (EXPORTER_PORT), the MLflow server,
# Prometheus, Alertmanager and Airflow's four components, all on 127.0.0.1, state under var/.
# Needs Debian's prometheus and prometheus-alertmanager (`make system-tools`); the stores come
# from .env (DATABASE_URL: the machine's Postgres or the embedded SQLite). Trains and promotes a
# first model when there is no @champion. Prints the URLs; Ctrl-C stops every process.
# STACK_AIRFLOW=no leaves Airflow out; STACK_ARGS passes more (`--var DIR`).
MLFLOW_PORT ?= 5000
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
STACK_AIRFLOW ?= yes
stack: $(STAMP) ## the services of docker-compose.yml as local processes (Ctrl-C stops them)
	$(PY) -m tools.stack --mlflow-port $(MLFLOW_PORT) --prometheus-port $(PROMETHEUS_PORT) \
	  --alertmanager-port $(ALERTMANAGER_PORT) --airflow-port $(AIRFLOW_PORT) \
	  $(if $(filter no,$(STACK_AIRFLOW)),--no-airflow) $(STACK_ARGS)

# The compose stack's .env: .env.example with every secret generated (tools/env.py; Python's
# standard library only, no venv needed). Never replaces an existing .env unless FORCE=1 (the
# old one is kept as .env.bak). Then `docker compose up -d --build`.
FORCE ?=
env: ## write .env for docker compose, every secret generated (FORCE=1 replaces yours)
	$(PYTHON) -m tools.env write $(if $(FORCE),--force)

# `docker compose up -d --build`; when it fails, the preflight's log too (which secrets it
# refused): compose itself only says that a container exited with code 1.
up: ## docker compose up -d --build, and the refused secrets if any
	docker compose up -d --build || { docker compose logs --no-color preflight >&2; exit 1; }

# Re-resolve requirements.txt from scratch and pin everything it pulls in.
lock: ## re-resolve requirements.txt and pin everything in constraints.txt
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -r requirements.txt
	( echo '# Full pin set for requirements.txt, generated by `make lock`; do not edit by hand.'; \
	  .lock-venv/bin/pip freeze --exclude-editable ) > constraints.txt
	rm -rf .lock-venv

clean: ## remove var/ (local databases, models, reports) and caches
	rm -rf var/ .pytest_cache
