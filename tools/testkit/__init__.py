"""What the tests and the benchmarks both start and talk to: scratch Postgres databases, the API
as a real server process, client traffic, an HTTP sink for notifications, a private Postgres
server, Airflow and Alertmanager on loopback. Importable from both (`tools.testkit.*`), so
`benchmarks/` never imports `tests/`."""
