"""The business dashboard `ml-business`, for the people who own the model's outcome: the
positive (flagged) rate, the false-positive rate and the amount at risk."""

from __future__ import annotations

from typing import Any

from grafana.panels import (
    BLUE,
    ENV,
    GREEN,
    ORANGE,
    RED,
    SEL,
    _rate,
    alert_steps,
    panel,
    prom,
    sql,
    stat,
    steps,
    table,
    threshold_line,
    timeseries,
)

POSITIVE_RATE_LIVE = (
    f'sum by (environment) (rate(ml_predictions_total{{prediction="1", {ENV}}}[$__rate_interval]))'
    f" / {_rate('ml_predictions_total', 'environment')}"
)
POSITIVE_RATE_1H = f"ml:predictions:positive_ratio_rate1h{{{ENV}}}"
FALSE_POSITIVE_RATE = (
    f'sum by (environment, model_name) (ml_realized_confusion{{cell="fp", {SEL}}}) / '
    f'sum by (environment, model_name) (ml_realized_confusion{{cell=~"fp|tn", {SEL}}})'
)
# The amount is a feature of the fraud schema, not something the schema-agnostic API counts:
# it is read from the prediction log (features->>'amount'), for the dashboard's time range.
AMOUNT = "(p.features->>'amount')::float"


def business() -> list[dict[str, Any]]:
    return [
        stat(
            "Positive rate (last hour)",
            "percentunit",
            prom(POSITIVE_RATE_1H, "{{environment}}"),
            description="Share of predictions flagged positive (fraud) over the last hour.",
            thresholds=steps(BLUE),
        ),
        stat(
            "False-positive rate (latest window)",
            "percentunit",
            prom(FALSE_POSITIVE_RATE, "{{model_name}}"),
            description=(
                "Of the labelled legitimate cases of the latest monitoring window, the share the "
                "model flagged: fp / (fp + tn), from ml_realized_confusion."
            ),
            thresholds=steps(GREEN, (0.01, ORANGE), (0.05, RED)),
        ),
        stat(
            "Precision and recall (latest window)",
            "percentunit",
            prom(f'ml_realized_performance{{metric=~"precision|recall", {SEL}}}', "{{metric}}"),
            description="Of the flagged, how many were fraud; of the fraud, how many were flagged.",
            thresholds=steps(RED, (0.5, ORANGE), (0.8, GREEN)),
        ),
        panel(
            "stat",
            "Amount at risk (flagged, time range)",
            "short",
            [
                sql(f"""
                    SELECT COALESCE(SUM({AMOUNT}), 0) AS amount_at_risk
                    FROM prediction_logs p
                    WHERE p.predicted_class = 1 AND $__timeFilter(p.predicted_at)
                    """)
            ],
            description=(
                "Sum of the amounts (card currency) of the transactions predicted fraud in the "
                "dashboard's time range, from prediction_logs."
            ),
            thresholds=steps(BLUE),
        ),
        timeseries(
            "Positive rate: now and a day earlier",
            "percentunit",
            prom(POSITIVE_RATE_LIVE, "live {{environment}}"),
            prom(POSITIVE_RATE_1H, "last hour {{environment}}"),
            prom(f"{POSITIVE_RATE_1H} offset 1d", "a day earlier {{environment}}"),
            description="The flagged share moving is the first sign of drift or an attack.",
        ),
        timeseries(
            "Positive rate change against a day earlier",
            "percentunit",
            prom(f"abs({POSITIVE_RATE_1H} - {POSITIVE_RATE_1H} offset 1d)", "{{environment}}"),
            threshold_line("positive_rate_change", "alert threshold"),
            description=(
                "Points between the last hour and the same hour a day earlier "
                "(MLPositiveRateShift; empty until Prometheus holds a day of data)."
            ),
            thresholds=alert_steps("positive_rate_change", low_is_bad=False, color=ORANGE),
        ),
        timeseries(
            "False-positive rate and recall",
            "percentunit",
            prom(FALSE_POSITIVE_RATE, "false-positive rate"),
            prom(f'ml_realized_performance{{metric="recall", {SEL}}}', "recall"),
            description="Per monitoring window: legitimate cases flagged, and fraud caught.",
        ),
        timeseries(
            "Labelled outcomes of the latest window",
            "short",
            prom(f"ml_realized_confusion{{{SEL}}}", "{{cell}}"),
            description="tp: fraud caught, fp: legitimate flagged, fn: fraud missed, tn.",
        ),
        timeseries(
            "Amount at risk per hour",
            "short",
            sql(
                f"""
                SELECT date_trunc('hour', p.predicted_at) AS time,
                       SUM({AMOUNT}) AS amount_at_risk
                FROM prediction_logs p
                WHERE p.predicted_class = 1 AND $__timeFilter(p.predicted_at)
                GROUP BY 1
                ORDER BY 1
                """,
                fmt="time_series",
            ),
            description="Amounts (card currency) of the transactions flagged, per hour.",
        ),
        table(
            "Amounts by labelled outcome",
            f"""
            SELECT COUNT(*) FILTER (WHERE p.predicted_class = 1) AS flagged,
                   COALESCE(SUM({AMOUNT}) FILTER (WHERE p.predicted_class = 1), 0)
                       AS amount_flagged,
                   COALESCE(SUM({AMOUNT}) FILTER (WHERE p.predicted_class = 1 AND l.label = 1), 0)
                       AS fraud_caught,
                   COALESCE(SUM({AMOUNT}) FILTER (WHERE p.predicted_class = 0 AND l.label = 1), 0)
                       AS fraud_missed,
                   COALESCE(SUM({AMOUNT}) FILTER (WHERE p.predicted_class = 1 AND l.label = 0), 0)
                       AS legitimate_flagged
            FROM prediction_logs p
            LEFT JOIN labels l ON l.request_id = p.request_id
            WHERE $__timeFilter(p.predicted_at)
            """,
            description=(
                "In the time range: what was flagged, and, where labels arrived, the fraud "
                "caught, the fraud missed and the legitimate amount flagged."
            ),
        ),
        timeseries(
            "Predictions per hour by class",
            "short",
            prom(
                f"sum by (environment, prediction) (increase(ml_predictions_total{{{ENV}}}[1h]))",
                "class {{prediction}}",
            ),
            description="Volume: predictions over the last hour, by predicted class.",
            width=24,
        ),
    ]
