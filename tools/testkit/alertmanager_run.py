"""Debian's Alertmanager on a loopback port with a test copy of alerting/alertmanager.yml.

The copy differs from the project's file only where a test must: the secret files hold a local
HTTP sink's URL and key, PagerDuty's URL is the sink's, and groups wait one second instead of
thirty. Used by tests/test_alertmanager.py and tests/test_monitoring_live.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from data.settings import PROJECT_ROOT
from tools.testkit.api_server import free_port

CONFIG = PROJECT_ROOT / "alerting" / "alertmanager.yml"
TEMPLATES = PROJECT_ROOT / "alerting" / "templates"
SLACK, PAGERDUTY = "/slack/T9/B9/Z", "/pagerduty/v2/enqueue"
ROUTING_KEY = "test-routing-key-abcdef0123456789"


def loopback_copy(tmp_path: Path, sink_url: str) -> Path:
    """The project's file, its secrets and timings replaced for a loopback run."""
    (tmp_path / "slack_webhook_url").write_text(sink_url + SLACK + "\n")
    (tmp_path / "pagerduty_routing_key").write_text(ROUTING_KEY + "\n")
    text = CONFIG.read_text().replace("/etc/alertmanager/secrets", str(tmp_path))
    text = text.replace("/etc/alertmanager/templates", str(TEMPLATES))
    config = yaml.safe_load(text)
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    for receiver in config["receivers"]:
        for page in receiver.get("pagerduty_configs", []):
            page["url"] = sink_url + PAGERDUTY
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class RunningAlertmanager:
    def __init__(self, config: Path, folder: Path) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        assert binary, "Alertmanager is not installed: `make system-tools` installs it"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "alertmanager.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={folder / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}",
             "--cluster.listen-address="],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(self.log.read_text())

    def fire(self, *alerts: dict) -> None:
        answer = httpx.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5)
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def wait_for(predicate, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
