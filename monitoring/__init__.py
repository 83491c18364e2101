"""Watching the model in production: the checks of a live window and what publishes them.

- the checks: `drift_report` (the entry point and command line; its parts `drift_results`,
  `drift_stats`, `drift_accumulator`), `quality_checks` and `quality_report`, `performance`
  (realized and estimated);
- one pass over a window, saved: `window_checks` (what the six-hourly DAG runs) and
  `report_store` (the report tables);
- publishing: `prometheus_exporter` (the `ml_*` metrics) and `html_report` (a page for people);
- `retrain/`: the retrain loop that acts on what the checks found.
"""
