"""The compose stack as the tests bring it up: the project's `docker-compose.yml` with what
`make env` writes (free host ports, quick polling), waited on until every healthcheck is green,
inspected and taken down by project name. tests/test_compose_stack.py starts one and runs the
default stack's tests and then the Celery profile's on it.

Needs a Docker engine and the base images locally or from a registry; on machines without an
image registry `../shared/containers/prepare.sh` provides both (`.ci/run` calls it), except
Redis, for which `ensure_redis_image` builds a stand-in (tests/containers/redis).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from data.settings import PROJECT_ROOT
from tools.env import generate as generate_env

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


def compose_command() -> list[str]:
    """`docker compose` (v2, or 1.29 through a CLI plugin), else `docker-compose` (1.29)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip(
        "neither `docker compose` nor `docker-compose` is installed "
        "(`make system-tools` installs Debian's docker-compose)"
    )


# Images the stack pulls (the app images are built from dockerfiles/ on python:3.11-slim).
BASE_IMAGES = ["python:3.11-slim", "postgres:16", "prom/prometheus:v2.53.4",
               "prom/alertmanager:v0.27.0",
               "prometheuscommunity/postgres-exporter:v0.15.0"]  # fmt: skip
# Optional services: started only when their image is on this machine.
OPTIONAL = {
    "grafana": ("grafana/grafana:11.6.0", None),
    "node-exporter": ("prom/node-exporter:v1.8.2", "node"),
    "cadvisor": ("gcr.io/cadvisor/cadvisor:v0.49.1", "cadvisor"),
}
CORE_SERVICES = [
    "postgres", "mlflow", "api", "exporter", "prometheus", "alertmanager", "airflow-init",
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "postgres-exporter", "preflight",
]  # fmt: skip
ONE_SHOTS = {"airflow-init", "preflight"}  # exit 0 once done (the preflight: the secrets pass)
HEALTHY_TIMEOUT = 900  # seconds; the Airflow services start slowly on 2 shared cores


REQUEST = {
    "amount": 950.0, "avg_amount_30d": 42.5, "hour_of_day": 3, "customer_age": None,
    "account_age_days": 12, "distance_from_home_km": 850.0, "transactions_24h": 7,
    "failed_logins_24h": 2, "merchant_category": "electronics", "entry_mode": "online",
    "device_type": "mobile", "is_foreign": True, "card_present": False,
}  # fmt: skip


def engine_problem() -> str | None:
    if not shutil.which("docker"):
        return "no docker binary on this machine (../shared/containers/prepare.sh installs one)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers (`docker info` fails; prepare.sh starts one)"
    missing = [
        image
        for image in BASE_IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    if missing and not os.environ.get("COMPOSE_STACK_PULL"):
        return (
            f"base images not on this machine: {', '.join(missing)} (run "
            "../shared/containers/prepare.sh with them, or set COMPOSE_STACK_PULL=1 to pull)"
        )
    return None


def image_present(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def free_port() -> int:
    """A host port for a published service, free now and outside the ephemeral range (see
    `free_range`): the stack binds it after the images are built."""
    return int(free_range(1).split("-")[0])


def free_range(size: int) -> str:
    """`size` ports free now, below the kernel's ephemeral range: the API's replicas bind the
    later ones only when scaled, minutes on, and a port the kernel handed another test's server
    or client (`bind(0)`, an outgoing connection) in between failed `--scale api=3` once."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        start = secrets.randbelow(max(ephemeral_low - size - 20_000, 1)) + 20_000
        socks = []
        try:
            for port in range(start, start + size):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return f"{start}-{start + size - 1}"
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


def env_file(path: Path) -> Path:
    """What `make env` writes (tools/env.py: `.env.example` with generated secrets), with free
    host ports and quick polling."""
    text = generate_env(ENV_EXAMPLE.read_text())

    def put(name: str, value: str) -> None:
        nonlocal text
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert count == 1, name

    assert not re.search(r"^[A-Z_]+=.*changeme", text, flags=re.M)
    put("API_PUBLISHED_PORTS", free_range(6))
    for name in ("EXPORTER", "AIRFLOW", "PROMETHEUS", "ALERTMANAGER", "GRAFANA"):
        put(f"{name}_PUBLISHED_PORT", str(free_port()))
    put("MODEL_POLL_SECONDS", "2")
    put("EXPORTER_CACHE_SECONDS", "1")
    # The DAGs parse but wait: the scheduled training_dag would otherwise register and promote
    # a version of its own while the test trains one (seen: the API then served version 2).
    put("AIRFLOW_DAGS_PAUSED", "true")
    path.write_text(text)
    return path


class Stack:
    def __init__(self, project: str, env_file: Path) -> None:
        self.project = project
        self.env_file = env_file
        self.base = [
            *compose_command(), "-p", project, "-f", str(COMPOSE_FILE),
            "--project-directory", str(PROJECT_ROOT), "--env-file", str(env_file),
        ]  # fmt: skip
        self.services = list(CORE_SERVICES)
        self.skipped_jobs: dict[str, str] = {}
        for service, (image, job) in OPTIONAL.items():
            if image_present(image):
                self.services.append(service)
            elif job:
                self.skipped_jobs[job] = f"{service}: no image {image} on this machine"
        self.healthy_seconds: float | None = None

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        result = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def build_images(self) -> None:
        """The two project images: the API's (it also runs MLflow and the exporter) and the
        Airflow image every Airflow service runs."""
        self.run("build", "api", "airflow-apiserver", timeout=1800)

    def url(self, service: str, port: int, index: int = 1) -> str:
        out = self.run("port", "--index", str(index), service, str(port)).strip()
        return "http://" + out.splitlines()[-1].strip()

    def containers(self) -> dict[str, list[str]]:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        by_service: dict[str, list[str]] = {}
        if not ids:
            return by_service
        inspected = json.loads(
            subprocess.run(["docker", "inspect", *ids], capture_output=True, check=True).stdout
        )
        for container in inspected:
            service = container["Config"]["Labels"]["com.docker.compose.service"]
            state = container["State"]
            status = state.get("Health", {}).get("Status") or (
                f"exited {state['ExitCode']}" if state["Status"] == "exited" else state["Status"]
            )
            by_service.setdefault(service, []).append(status)
        return by_service

    def logs(self) -> str:
        return self.run("logs", "--tail", "40", check=False)[-20_000:]


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait(predicate, timeout: float, what: str, interval: float = 3.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {last!r}")


def wait_healthy(stack: Stack, wanted: dict[str, list[str]], what: str, interval: float) -> None:
    """Until each service's containers are in the wanted states (one per container, any order);
    a container that crashed or turned unhealthy fails at once, with the stack's logs."""

    def all_healthy():
        states = stack.containers()
        for service, want in wanted.items():
            got = states.get(service, ["missing"])
            bad = [s for s in got if s in ("unhealthy", "restarting") or s.startswith("exited")]
            if bad and bad != ["exited 0"]:
                raise AssertionError(f"{service}: {got}\n{stack.logs()}")
            if sorted(got) != sorted(want):
                return None
        return states

    wait(all_healthy, HEALTHY_TIMEOUT, what, interval=interval)


# --- The Celery profile: Redis, Celery workers, the Airflow services on the CeleryExecutor.
REDIS_STAND_IN = PROJECT_ROOT / "tests" / "containers" / "redis"
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


def ensure_redis_image() -> None:
    """Debian's redis-server under the compose file's image name, only where that image is
    neither here nor to be pulled (COMPOSE_STACK_PULL=1): with a registry compose uses the
    official image."""
    image = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["redis"]["image"]
    if image_present(image) or os.environ.get("COMPOSE_STACK_PULL"):
        return
    build = subprocess.run(
        ["docker", "build", "-q", "-t", image, str(REDIS_STAND_IN)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, f"building the Redis stand-in failed:\n{build.stderr[-3000:]}"


def env_value(env_file: Path, name: str) -> str:
    match = re.search(rf"^{name}=(.*)$", env_file.read_text(), flags=re.M)
    assert match, name
    return match.group(1)


def containers_of(stack: Stack, service: str) -> list[dict]:
    """`docker inspect` of the service's running containers."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stack.project}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert ids, f"no running {service} container"
    return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                     check=True).stdout)  # fmt: skip


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
