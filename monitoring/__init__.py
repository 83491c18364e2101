"""Watching the model in production: the checks of a live window and what publishes them.

- the checks: `drift_report` (the entry point and command line; its parts `drift_results`,
  `drift_stats`, `drift_accumulator`), `quality_checks` and `quality_report`, `performance`
  (realized and estimated);
- one pass over a window, saved: `window_checks` (what the six-hourly DAG runs) and
  `report_store` (the report tables);
- publishing: `prometheus_exporter` (the `ml_*` metrics) and `html/` (pages for people: the HTML
  kit every page is built with, and `html.drift_page`, the drift report's page);
- `retrain/`: the retrain loop that acts on what the checks found.
"""
