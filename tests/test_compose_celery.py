"""The compose `celery` profile, brought up for real: Redis, two Celery workers (`--scale
airflow-worker=2`) and the Airflow services on the CeleryExecutor; a DAG run triggered through
the Airflow REST API succeeds, its task ran in a worker container (not the scheduler's), both
workers answer Celery's ping, and `docker compose down -v` leaves nothing behind.

Needs what tests/test_compose_stack.py needs (a Docker engine, the base images) plus the Redis
image compose names. Where no image registry is reachable, `../shared/containers/prepare.sh` has
no stand-in for Redis: this module builds one (tests/containers/redis, Debian's redis-server
under the same name) when the image is missing; with a registry (COMPOSE_STACK_PULL=1, or the
image already pulled) nothing is built and compose uses the official image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from data.settings import PROJECT_ROOT
from tests.test_compose import raw
from tests.test_compose_stack import (
    Stack,
    _engine_problem,
    _env_file,
    _image_present,
    _wait,
    one_stack_at_a_time,
    wait_healthy,
)

pytestmark = pytest.mark.slow

WORKERS = 2
# Only what a DAG run on Celery needs: no API, exporter, Prometheus or triggerer.
SERVICES = [
    "postgres", "redis", "mlflow", "airflow-init", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-worker",
]  # fmt: skip
# The lightest DAG: one task that deletes old prediction-log rows (none here) in the
# monitoring database, so it needs no model, no data and no MLflow run.
DAG_ID = "maintenance_dag"
REDIS_STAND_IN = PROJECT_ROOT / "tests" / "containers" / "redis"
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


def _redis_image() -> str:
    return raw()["services"]["redis"]["image"]


def _ensure_redis_image() -> None:
    """The stand-in only where the image is neither here nor to be pulled (see the docstring)."""
    image = _redis_image()
    if _image_present(image) or os.environ.get("COMPOSE_STACK_PULL"):
        return
    build = subprocess.run(
        ["docker", "build", "-q", "-t", image, str(REDIS_STAND_IN)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, f"building the Redis stand-in failed:\n{build.stderr[-3000:]}"


def _env_value(env_file: Path, name: str) -> str:
    match = re.search(rf"^{name}=(.*)$", env_file.read_text(), flags=re.M)
    assert match, name
    return match.group(1)


class AirflowApi:
    """The Airflow 3 REST API of the apiserver container, as an operator would call it."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        self.user = user
        self.password = password
        self.token: str | None = None

    def _send(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        headers = {"content-type": "application/json"}
        if auth:
            if self.token is None:
                self.token = self._send(
                    "POST", "/auth/token", {"username": self.user, "password": self.password},
                    auth=False,
                )["access_token"]  # fmt: skip
            headers["authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc

    def get(self, path: str):
        return self._send("GET", path)

    def patch(self, path: str, body: dict):
        return self._send("PATCH", path, body)

    def post(self, path: str, body: dict):
        return self._send("POST", path, body)


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory) -> Iterator[Stack]:
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    _ensure_redis_image()
    env_file = _env_file(tmp_path_factory.mktemp("celery") / "env")
    text = env_file.read_text()
    env_file.write_text(re.sub(r"^AIRFLOW_EXECUTOR=.*$", "AIRFLOW_EXECUTOR=CeleryExecutor", text,
                               flags=re.M))  # fmt: skip
    stack = Stack(f"mlmon-celery-{uuid.uuid4().hex[:8]}", env_file)
    stack.base += ["--profile", "celery"]
    stack.services = list(SERVICES)
    with one_stack_at_a_time():
        yield from _up(stack)


def _up(stack: Stack) -> Iterator[Stack]:
    try:
        stack.build_images()
        started = time.monotonic()
        stack.run("up", "-d", "--scale", f"airflow-worker={WORKERS}", *SERVICES, timeout=900)
        wanted = {service: ["healthy"] for service in SERVICES}
        wanted["airflow-init"] = ["exited 0"]
        wanted["airflow-worker"] = ["healthy"] * WORKERS

        wait_healthy(stack, wanted, "every healthcheck of the celery profile", interval=3)
        stack.healthy_seconds = time.monotonic() - started
        print(f"\ncompose --profile celery: {len(SERVICES)} services and {WORKERS} workers "
              f"healthy {stack.healthy_seconds:.0f} s after `up -d`")  # fmt: skip
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", timeout=300, check=False)


def _containers_of(stack: Stack, service: str) -> list[dict]:
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stack.project}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert ids, f"no running {service} container"
    return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                     check=True).stdout)  # fmt: skip


def test_every_airflow_service_runs_on_the_celery_executor(celery_stack):
    for service in ("airflow-scheduler", "airflow-worker"):
        out = celery_stack.run("exec", "-T", "--index", "1", service, "airflow", "config",
                               "get-value", "core", "executor", timeout=120)  # fmt: skip
        assert out.strip().splitlines()[-1] == "CeleryExecutor", (service, out)


def test_both_workers_answer_celery_through_redis(celery_stack):
    out = celery_stack.run("exec", "-T", "--index", "1", "airflow-worker", "celery", "--app",
                           CELERY_APP, "inspect", "ping", timeout=120)  # fmt: skip
    hostnames = {c["Config"]["Hostname"] for c in _containers_of(celery_stack, "airflow-worker")}
    assert len(hostnames) == WORKERS
    for hostname in hostnames:
        assert f"celery@{hostname}: OK" in out, out
    assert f"{WORKERS} nodes online" in out, out


def test_a_triggered_dag_run_succeeds_with_its_task_on_a_celery_worker(celery_stack):
    env_file = celery_stack.env_file
    api = AirflowApi(
        celery_stack.url("airflow-apiserver", 8080),
        _env_value(env_file, "AIRFLOW_ADMIN_USER"),
        _env_value(env_file, "AIRFLOW_ADMIN_PASSWORD"),
    )
    # The dag-processor serializes the DAG files some seconds after it starts.
    _wait(lambda: api.get(f"/api/v2/dags/{DAG_ID}"), 180, f"{DAG_ID} parsed", interval=5)
    api.patch(f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    run_id = f"celery-test-{uuid.uuid4().hex[:8]}"
    api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None})

    def finished():
        state = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    state = _wait(finished, 300, f"dag run {run_id} finished", interval=5)
    instances = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert state == "success", (instances, celery_stack.logs())
    workers = {c["Config"]["Hostname"] for c in _containers_of(celery_stack, "airflow-worker")}
    (scheduler,) = [
        c["Config"]["Hostname"] for c in _containers_of(celery_stack, "airflow-scheduler")
    ]
    assert [ti["task_id"] for ti in instances] == ["purge_old_predictions"]
    (instance,) = instances
    assert instance["state"] == "success"
    assert instance["hostname"] in workers and instance["hostname"] != scheduler, (
        instance["hostname"], workers, scheduler
    )  # fmt: skip
    assert instance["executor"] in (None, "CeleryExecutor"), instance["executor"]
    # The task's return value (how many rows it purged) came back through the result path.
    xcom = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/"
                   "purge_old_predictions/xcomEntries/return_value")["value"]  # fmt: skip
    assert xcom is not None, xcom


def test_down_v_leaves_nothing(celery_stack):
    celery_stack.run("down", "-v", "--remove-orphans", timeout=300)
    label = f"label=com.docker.compose.project={celery_stack.project}"
    for kind in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        left = subprocess.run(["docker", *kind, "--filter", label], capture_output=True,
                              text=True, check=True).stdout.split()  # fmt: skip
        assert left == [], (kind, left)
