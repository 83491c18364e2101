#!/bin/sh
# The project's Airflow image honours the official apache/airflow image's command contract, so
# that the official Helm chart (dockerfiles/kubernetes/airflow-values.yaml) runs it unchanged:
# the chart starts its containers as `bash -c "exec airflow scheduler"`, and its init containers
# as `airflow db check-migrations ...`. Compose passes bare subcommands (`api-server`).
#   bash|sh|python ARGS   run as given
#   airflow ARGS          airflow ARGS
#   ARGS                  airflow ARGS
set -e
case "${1:-}" in
  bash | sh | python | python3 | /*) exec "$@" ;;
  airflow) shift ;;
esac
exec airflow "$@"
