"""Debian's Alertmanager on a loopback port with a test rendering of alerting/.

alerting/entrypoint.sh renders the project's files as every deployment does; the test's copy
differs only where a test must: the secrets hold a local HTTP sink's URL and key, PagerDuty's URL
(and the dead-man's switch's, when given) is the sink's, and groups wait one second instead of
thirty. Used by tests/test_alertmanager.py and tests/test_monitoring_live.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from data.settings import PROJECT_ROOT
from tools.testkit.api_server import free_port

CONFIG = PROJECT_ROOT / "alerting" / "alertmanager.yml"
ENTRYPOINT = PROJECT_ROOT / "alerting" / "entrypoint.sh"
SLACK, PAGERDUTY, DEADMANSSWITCH = "/slack/T9/B9/Z", "/pagerduty/v2/enqueue", "/ping/dms-uuid"
ROUTING_KEY = "test-routing-key-abcdef0123456789"
RUNBOOK_BASE_URL = "https://git.example.com/ml/stack/blob/main/"


def run_entrypoint(run_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """`alerting/entrypoint.sh --render-only` into `run_dir`, with only these variables set."""
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), "--render-only"],
        env={"PATH": os.environ["PATH"], "ALERTMANAGER_RUN_DIR": str(run_dir), **env},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def render(run_dir: Path, **env: str) -> Path:
    """alerting/ rendered by its entrypoint into `run_dir` with these variables; the config."""
    run_entrypoint(run_dir, **env)
    return run_dir / "alertmanager.yml"


def loopback_copy(tmp_path: Path, sink_url: str, *, deadmansswitch: bool = False) -> Path:
    """The project's files rendered for a loopback run: every destination is the sink."""
    env = {
        "SLACK_WEBHOOK_URL": sink_url + SLACK,
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PAGERDUTY_EVENTS_URL": sink_url + PAGERDUTY,
        "RUNBOOK_BASE_URL": RUNBOOK_BASE_URL,
    }
    if deadmansswitch:
        env["DEADMANSSWITCH_URL"] = sink_url + DEADMANSSWITCH
    path = render(tmp_path, **env)
    config = yaml.safe_load(path.read_text())
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
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
