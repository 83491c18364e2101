"""docs/runbooks.md: one section per alert (the rules' and the notifications'), where each alert's
runbook_url points, and each section says what the alert means, how to confirm it, what to do and
when to escalate."""

from __future__ import annotations

import re

from alerting.events import ALERTNAMES
from alerting.notify import AlertmanagerConfig, Notifier, NotifierConfig
from data.settings import PROJECT_ROOT
from tests.test_alert_rules import alerts, metric_names

RUNBOOKS = PROJECT_ROOT / "docs" / "runbooks.md"
PARTS = ("**What it means.**", "**Confirm.**", "**What to do.**", "**Escalate.**")


def sections() -> dict[str, str]:
    """`## <title>` -> its text up to the next `## ` heading."""
    found = {}
    for block in re.split(r"^## ", RUNBOOKS.read_text(), flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        found[title.strip()] = body
    return found


def anchor(title: str) -> str:
    """The anchor GitHub and most renderers give a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_every_alert_has_its_section_and_its_runbook_url_points_there():
    titles = sections()
    anchors = {anchor(title) for title in titles}
    names = {rule["alert"] for rule in alerts()} | set(ALERTNAMES.values())
    assert names - set(titles) == set(), "alerts without a runbook section"
    assert set(titles) - names == set(), "runbook sections for alerts that do not exist"
    for rule in alerts():
        path, _, fragment = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/runbooks.md" and fragment in anchors, rule["alert"]


def test_every_notification_alert_points_at_its_section():
    """The alerts the notifier sends to Alertmanager link their runbook as the rules do."""
    from tests.test_notify import every_kind_of_event

    anchors = {anchor(title) for title in sections()}
    notifier = Notifier(NotifierConfig(alertmanager=AlertmanagerConfig("http://am:9093")))
    events = every_kind_of_event()
    assert {event.name for event in events} == set(ALERTNAMES)
    for event in events:
        url = notifier.alertmanager_alert(event)["annotations"]["runbook_url"]
        path, _, fragment = url.partition("#")
        assert path == "docs/runbooks.md" and fragment in anchors, event.name


def test_every_section_has_the_four_parts_in_order_and_a_way_to_confirm():
    for title, body in sections().items():
        positions = [body.find(part) for part in PARTS]
        assert all(p >= 0 for p in positions), f"{title}: missing {PARTS[positions.index(-1)]}"
        assert positions == sorted(positions), f"{title}: parts out of order"
        confirm = body[positions[1] : positions[2]]
        assert "```" in confirm, f"{title}: confirm with a query or a command"


def test_runbook_queries_name_series_the_alert_rules_know():
    """PromQL blocks use exported or recorded series only (the rule tests' own check)."""
    from tests.test_alert_rules import (
        PROMETHEUS_OWN,
        WATCHERS_OWN,
        compose_only_names,
        exported_names,
        rules,
    )

    known = (
        exported_names()
        | PROMETHEUS_OWN
        | WATCHERS_OWN
        | compose_only_names()  # node-exporter's, cAdvisor's, postgres-exporter's
        | {r["record"] for r in rules() if "record" in r}
    )
    text = RUNBOOKS.read_text()
    blocks = re.findall(r"```promql\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 15
    unknown = {line: metric_names(line) - known for b in blocks for line in b.splitlines() if line}
    assert {line: names for line, names in unknown.items() if names} == {}


def test_the_intro_says_how_to_silence_roll_back_and_retrain():
    intro = RUNBOOKS.read_text().split("\n## ", 1)[0]
    assert "amtool" in intro and "silence add alertname=" in intro and "--duration=" in intro
    assert "python -m training.register_model rollback --to-version" in intro
    assert (
        "airflow dags trigger training_dag --conf" in intro and "python -m training.train" in intro
    )


def test_the_readme_links_the_runbooks_and_the_dashboards():
    readme = (PROJECT_ROOT / "README.md").read_text()
    where = readme.split("## Where to look when an alert fires", 1)[1]
    assert "docs/runbooks.md" in where and "silence add alertname=" in where
    assert "ml-overview" in where and "ml-business" in where and "grafana/" in where
