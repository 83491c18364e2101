"""`make demo`: four simulated weeks through the real API, told as a story and drawn as a report.

`demo.run` replays the traffic and drives the checks, the policy and the retrains; `demo.alerts`
evaluates the alert rules of `prometheus/alerts.yml` on each window; `demo.report` draws the page.
"""
