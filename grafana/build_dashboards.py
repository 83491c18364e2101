"""The Grafana dashboards as code: writes grafana/dashboards/*.json, which are committed.

Three dashboards, fixed uids, provisioned from /var/lib/grafana/dashboards
(grafana/provisioning/dashboards/dashboards.yml):

- `ml-overview`, for whoever is on call, in six rows: service health, with what the stack
  stands on (Postgres, Airflow, the spool's disk); the error budgets of single-row /predict's
  SLOs; model performance, realized against estimated, with label coverage; late labels
  (coverage by window age, the label lag, the most recent mature window's accuracy beside its
  estimate, their gap); drift and data quality; retraining and the registry, with the report
  and audit tables from Postgres.
- `ml-business`, for the people who own the model's outcome: the positive (flagged) rate, the
  false-positive rate and the amount at risk.
- `ml-host`, the machine under the stack and its containers by the USE method (utilisation,
  saturation, errors of CPU, memory, disks, network; per container CPU, memory against the
  limit, restarts, OOM kills), from node-exporter and cAdvisor.

Every panel has a unit. Where prometheus/alerts.yml compares a series with a threshold, the
panel draws that threshold's `ml:threshold:*` series as a line (so it moves when the rule file
is retuned) and carries the same value in its field thresholds (read from alerts.yml when this
runs); PSI, Wasserstein and quality-share lines come from the settings' and the quality
check's defaults.

The building blocks are `grafana.panels`; the panels of each dashboard, `grafana.overview`,
`grafana.business` and `grafana.host`. What the queries may contain, so that tests can run each
one for real: PromQL targets (`expr`) use the template variables only as regex matchers,
`environment=~"$environment"` and `model_name=~"$model"` (on `ml-host`, `instance=~"$node"` and
`name=~"$container"`), and `$__rate_interval` only inside range selectors; SQL targets
(`rawSql`) are plain SQL over the project's tables with `$__timeFilter(column)` at most.

    python -m grafana.build_dashboards           # write the JSON files
    python -m grafana.build_dashboards --check   # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from grafana.business import business
from grafana.host import host, host_variables
from grafana.overview import (
    dependencies,
    drift_and_quality,
    error_budgets,
    late_labels,
    model_performance,
    retraining_and_registry,
    service_health,
)
from grafana.panels import DASHBOARDS, annotations, dashboard


def build() -> dict[str, dict[str, Any]]:
    """{file name: dashboard}."""
    overview = dashboard(
        "ml-overview",
        "ML model monitoring: overview",
        "Service health, error budgets, model performance, late labels, drift and quality, "
        "retraining and the registry.",
        [
            *service_health(),
            *dependencies(),
            *error_budgets(),
            *model_performance(),
            *late_labels(),
            *drift_and_quality(),
            *retraining_and_registry(),
        ],
    )
    business_view = dashboard(
        "ml-business",
        "ML model monitoring: business view",
        "Positive rate, false-positive rate and amount at risk.",
        business(),
    )
    host_view = dashboard(
        "ml-host",
        "ML model monitoring: host and containers",
        "The machine under the stack and its containers: CPU, memory, disks, network (USE).",
        host(),
        variables=host_variables(),
        annotations=annotations(by_environment=False),
    )
    return {
        "ml-overview.json": overview,
        "ml-business.json": business_view,
        "ml-host.json": host_view,
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.build_dashboards")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, board in build().items():
        path = DASHBOARDS / name
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m grafana.build_dashboards")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
