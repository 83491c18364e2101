# Entry points for people and CI. `make test` and `make demo` build the virtual environment
# themselves, so a fresh clone needs nothing but Python 3.11 and the services it talks to.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: venv system-tools test lint format demo bench train airflow stack lock clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Binaries the tests drive for real (Debian packages): headless Chromium renders the HTML drift
# report; Prometheus with promtool and Alertmanager with amtool check and run the alerting;
# docker-compose (1.29) checks docker-compose.yml (`config`; the stack test needs an engine too,
# see tests/test_compose_stack.py). Installed only when missing; needs root and the apt mirror,
# as CI has.
SYSTEM_PACKAGES := chromium prometheus prometheus-alertmanager docker-compose
system-tools:
	command -v chromium >/dev/null && command -v promtool >/dev/null && \
	  command -v amtool >/dev/null && command -v docker-compose >/dev/null || \
	  (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  $(SYSTEM_PACKAGES))

test: lint system-tools
	$(PY) -m pytest

# The story on one machine, on embedded defaults (SQLite, a local MLflow store under var/):
# train and gate a model, serve it, send it normal then drifted traffic, and let the monitoring
# pass find the drift. DEMO_PORT must be free.
DEMO_PORT ?= 8000
DEMO_URL := http://127.0.0.1:$(DEMO_PORT)
demo: $(STAMP)
	@echo "== 1. generate 50,000 synthetic card transactions to train on"
	$(PY) -m data.synthetic --rows 50000 --seed 42 --out var/data/transactions.parquet
	@echo "== 2. train, register and gate a model version (promoted if it passes the gates)"
	$(PY) -m training.train --data var/data/transactions.parquet --auto-promote
	$(PY) -m training.register_model history
	@echo "== 3. live traffic: 3,000 ordinary transactions, then 3,000 with amounts one std. dev. higher"
	$(PY) -m data.synthetic --rows 6000 --seed 7 --out var/data/live.parquet
	$(PY) -m data.drift_injector --schema schemas/fraud.yaml --kind mean_shift --feature amount \
	  --intensity 0.5 --seed 7 --input var/data/live.parquet --output var/data/drifted.parquet
	@echo "== 4. serve @champion on $(DEMO_URL), replay the traffic and the labels into it"
	@$(PY) -m api.serve --workers 1 --port $(DEMO_PORT) > var/demo-api.log 2>&1 & api=$$!; \
	  trap 'kill $$api 2>/dev/null; wait $$api 2>/dev/null' EXIT; \
	  $(PY) -m data.replay --data var/data/live.parquet --url $(DEMO_URL) --wait 60 --labels \
	    --rows 0:3000 && \
	  $(PY) -m data.replay --data var/data/drifted.parquet --url $(DEMO_URL) --labels \
	    --rows 3000:6000 && \
	  curl -s $(DEMO_URL)/metrics/summary; echo
	@echo "== 5. the monitoring pass over the last hour: drift, quality, performance, saved"
	$(PY) -m monitoring.run_checks --hours 1 --html var/reports/drift.html
	@echo "== 6. what Prometheus would scrape from the exporter (python -m monitoring.prometheus_exporter)"
	@$(PY) -m monitoring.prometheus_exporter --once | grep -E \
	  '^ml_(drift_severity|drift_drifted_share|quality_hard|realized_performance|estimated_performance)' \
	  | grep -v 'severity.* 0.0$$'
	@echo "== open var/reports/drift.html for the drift report"

# Hot-path benchmarks (figures and machine in BENCHMARKS.md). Needs wrk and Postgres on 5432.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) benchmarks/bench_api.py
	$(PY) benchmarks/bench_journal.py
	$(PY) benchmarks/bench_drift.py
	$(PY) benchmarks/bench_drift_postgres.py
	$(PY) benchmarks/bench_quality.py
	$(PY) benchmarks/bench_retention.py

train: $(STAMP)
	$(PY) -m training.train

# Airflow 3 on this machine, against the project's DAGs (airflow/dags/) and the stack's settings
# (.env: DATABASE_URL, MLFLOW_TRACKING_URI, ...): api-server (UI on AIRFLOW_PORT), scheduler,
# dag-processor and triggerer in one `airflow standalone`, its metadata under var/airflow. This
# is the one place that puts the project on Airflow's path (PYTHONPATH); the DAG files import
# the project's packages inside their tasks. The admin password is printed at start.
AIRFLOW_PORT ?= 8080
airflow: $(STAMP)
	mkdir -p var/airflow
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)" AIRFLOW_HOME="$(CURDIR)/var/airflow" \
	  AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/airflow/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  AIRFLOW__CORE__DEFAULT_TASK_RETRIES=1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	  airflow standalone

# The services of docker-compose.yml as plain processes on this machine, under honcho
# (monitoring/stack.py): the API (API_PORT), the exporter (EXPORTER_PORT), the MLflow server,
# Prometheus, Alertmanager and Airflow's four components, all on 127.0.0.1, state under var/.
# Needs Debian's prometheus and prometheus-alertmanager (`make system-tools`); the stores come
# from .env (DATABASE_URL: the machine's Postgres or the embedded SQLite). Trains and promotes a
# first model when there is no @champion. Prints the URLs; Ctrl-C stops every process.
# STACK_AIRFLOW=no leaves Airflow out; STACK_ARGS passes more (`--var DIR`).
MLFLOW_PORT ?= 5000
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
STACK_AIRFLOW ?= yes
stack: $(STAMP)
	$(PY) -m monitoring.stack --mlflow-port $(MLFLOW_PORT) --prometheus-port $(PROMETHEUS_PORT) \
	  --alertmanager-port $(ALERTMANAGER_PORT) --airflow-port $(AIRFLOW_PORT) \
	  $(if $(filter no,$(STACK_AIRFLOW)),--no-airflow) $(STACK_ARGS)

# Re-resolve requirements.txt from scratch and pin everything it pulls in.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -r requirements.txt
	( echo '# Full pin set for requirements.txt, generated by `make lock`; do not edit by hand.'; \
	  .lock-venv/bin/pip freeze --exclude-editable ) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf var/ .pytest_cache
