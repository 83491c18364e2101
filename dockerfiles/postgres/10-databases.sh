#!/bin/bash
# Postgres first start (mounted into /docker-entrypoint-initdb.d/ by docker-compose.yml; the
# official image and the local stand-in source or run it once, on an empty data volume).
#
# One database and one owner per store, so that no service holds another's password:
#   monitoring  owner MONITORING_DB_USER  prediction logs, labels, reports, audit (init_db.sql)
#   mlflow      owner MLFLOW_DB_USER      MLflow's tracking and registry tables (it migrates them)
#   airflow     owner AIRFLOW_DB_USER     Airflow's metadata (`airflow db migrate` in airflow-init)
# and GRAFANA_DB_USER, a read-only login on monitoring for the Grafana datasource.
# init_db.sql (generated from data/db.py) runs as the monitoring owner, so its tables are his.
set -euo pipefail

mlmon_psql() { psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" "$@"; }

create_store() {  # create_store USER PASSWORD DATABASE
  echo "creating database $3 owned by $1"
  mlmon_psql --dbname postgres --set=u="$1" --set=p="$2" --set=d="$3" <<'SQL'
CREATE ROLE :"u" LOGIN PASSWORD :'p';
CREATE DATABASE :"d" OWNER :"u";
REVOKE ALL ON DATABASE :"d" FROM PUBLIC;
SQL
}
create_store "$MONITORING_DB_USER" "$MONITORING_DB_PASSWORD" "$MONITORING_DB_NAME"
create_store "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" "$MLFLOW_DB_NAME"
create_store "$AIRFLOW_DB_USER" "$AIRFLOW_DB_PASSWORD" "$AIRFLOW_DB_NAME"

echo "creating the monitoring tables (init_db.sql) as $MONITORING_DB_USER"
mlmon_psql --dbname "$MONITORING_DB_NAME" -c "SET ROLE \"$MONITORING_DB_USER\"" \
  -f /opt/mlmon/init_db.sql

echo "creating the read-only role $GRAFANA_DB_USER"
mlmon_psql --dbname "$MONITORING_DB_NAME" --set=u="$GRAFANA_DB_USER" \
  --set=p="$GRAFANA_DB_PASSWORD" --set=d="$MONITORING_DB_NAME" --set=o="$MONITORING_DB_USER" <<'SQL'
CREATE ROLE :"u" LOGIN PASSWORD :'p';
GRANT CONNECT ON DATABASE :"d" TO :"u";
GRANT USAGE ON SCHEMA public TO :"u";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"u";
ALTER DEFAULT PRIVILEGES FOR ROLE :"o" IN SCHEMA public GRANT SELECT ON TABLES TO :"u";
SQL
