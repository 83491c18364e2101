"""The compose stack, brought up for real: build, every healthcheck green, a model trained and
promoted inside the containers, a prediction through the published port found in the
containerized Postgres, every Prometheus target up, drift metrics from the exporter after a
monitoring pass, two API replicas scraped after `--scale api=2`, no acknowledged prediction
lost or doubled when an API container is SIGKILLed and restarted or one of three replicas sharing
the spool volume is killed, and nothing left after `docker compose down -v`.

Needs a Docker engine and the base images locally or from a registry; on machines without an
image registry `../shared/containers/prepare.sh` provides both (`.ci/run` calls it). Grafana,
node-exporter and cadvisor have no local stand-in there: they are left out when their image is
not on the machine, and so are their Prometheus jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from data.settings import PROJECT_ROOT
from tests.test_compose import COMPOSE_FILE, ENV_EXAMPLE, compose_command
from tools.env import generate as generate_env
from tools.testkit.api_server import Load

pytestmark = pytest.mark.slow

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
# One lock per machine and user, outside any test's tmp folder: pytest's workers share it.
BUILD_LOCK = (
    Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"mlmon-compose-build-{os.getuid()}.lock"
)
# Held while a stack is up (this module's and the celery profile's): two Airflow stacks starting
# beside the rest of `make test` on two cores did not get healthy in 15 minutes (CI failed on
# it); one after the other, each is healthy in one or two.
STACK_LOCK = BUILD_LOCK.with_name(f"mlmon-compose-stack-{os.getuid()}.lock")
HEALTHY_TIMEOUT = 900  # seconds; the Airflow services start slowly on 2 shared cores


@contextlib.contextmanager
def one_stack_at_a_time() -> Iterator[None]:
    """Wait for any other test's compose stack to come down (pytest's workers share the lock)."""
    STACK_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with STACK_LOCK.open("w") as lock:
        started = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        waited = time.monotonic() - started
        if waited > 1:
            print(f"\ncompose: waited {waited:.0f} s for another test's stack to come down")
        yield


REQUEST = {
    "amount": 950.0, "avg_amount_30d": 42.5, "hour_of_day": 3, "customer_age": None,
    "account_age_days": 12, "distance_from_home_km": 850.0, "transactions_24h": 7,
    "failed_logins_24h": 2, "merchant_category": "electronics", "entry_mode": "online",
    "device_type": "mobile", "is_foreign": True, "card_present": False,
}  # fmt: skip


def _engine_problem() -> str | None:
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


def _image_present(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_range(size: int) -> str:
    for _ in range(200):
        start = secrets.randbelow(20_000) + 30_000
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


def _env_file(path: Path) -> Path:
    """What `make env` writes (tools/env.py: `.env.example` with generated secrets), with free
    host ports and quick polling."""
    text = generate_env(ENV_EXAMPLE.read_text())

    def put(name: str, value: str) -> None:
        nonlocal text
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert count == 1, name

    assert not re.search(r"^[A-Z_]+=.*changeme", text, flags=re.M)
    put("API_PUBLISHED_PORTS", _free_range(6))
    for name in ("EXPORTER", "AIRFLOW", "PROMETHEUS", "ALERTMANAGER", "GRAFANA"):
        put(f"{name}_PUBLISHED_PORT", str(_free_port()))
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
            if _image_present(image):
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
        """The two project images (the API's also runs MLflow; one Airflow image serves every
        Airflow service), built by one test at a time: the compose and the celery modules run
        on different pytest workers, and two concurrent builds of one Dockerfile both miss the
        layer cache and install every package twice. Behind the lock, the second is all cache
        hits."""
        BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with BUILD_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
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


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _wait(predicate, timeout: float, what: str, interval: float = 3.0):
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

    _wait(all_healthy, HEALTHY_TIMEOUT, what, interval=interval)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    env_file = _env_file(tmp_path_factory.mktemp("compose") / "env")
    stack = Stack(f"mlmon-test-{uuid.uuid4().hex[:8]}", env_file)
    with one_stack_at_a_time():
        yield from _up(stack)


def _up(stack: Stack) -> Iterator[Stack]:
    try:
        stack.build_images()
        started = time.monotonic()
        stack.run("up", "-d", *stack.services, timeout=900)

        wanted = {s: ["exited 0" if s in ONE_SHOTS else "healthy"] for s in stack.services}
        wait_healthy(stack, wanted, "every healthcheck", interval=2)
        stack.healthy_seconds = time.monotonic() - started
        print(f"\ncompose: all {len(stack.services)} services healthy "
              f"{stack.healthy_seconds:.0f} s after `up -d`")  # fmt: skip
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", timeout=300, check=False)


def test_every_service_is_healthy(stack):
    states = stack.containers()
    assert set(states) == set(stack.services)
    assert stack.healthy_seconds is not None


def test_train_and_promote_inside_the_containers_then_predict_through_the_published_port(stack):
    out = stack.run("exec", "-T", "api", "python", "-m", "training.train", "--auto-promote",
                    "--rows", "20000", timeout=600)  # fmt: skip
    assert "it is now @champion" in out, out
    version = re.search(r"trained models:/fraud-detector/(\d+)", out).group(1)
    api = stack.url("api", 8000)
    _wait(lambda: json.loads(_get(f"{api}/ready"))["status"] == "ready", 60, "the API ready")
    request = urllib.request.Request(
        f"{api}/predict",
        data=json.dumps({"request_id": "compose-stack-1", "features": REQUEST}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["request_id"] == "compose-stack-1" and answer["model_version"] == version

    def logged():
        return stack.run("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "monitoring",
                         "-tAc", "SELECT model_version, predicted_class FROM prediction_logs "
                         "WHERE request_id = 'compose-stack-1'").strip()  # fmt: skip

    row = _wait(logged, 30, "the prediction in the containerized Postgres")
    assert row.splitlines()[-1] == f"{version}|{answer['predicted_class']}"


def test_the_dags_are_parsed_by_the_airflow_containers(stack):
    out = stack.run("exec", "-T", "airflow-scheduler", "airflow", "dags", "list", "-o", "json",
                    timeout=120)  # fmt: skip
    listed = set(re.findall(r'"dag_id": "(\w+)"', out))  # Airflow logs warnings beside it
    assert listed >= {"drift_check_dag", "training_dag", "maintenance_dag"}, out


def test_drift_metrics_after_a_monitoring_pass(stack):
    stack.run("exec", "-T", "api", "sh", "-c",
              "python -m data.synthetic --rows 1500 --seed 7 --out /var/lib/mlmon/data/live.parquet"
              " && python -m data.replay --data /var/lib/mlmon/data/live.parquet"
              " --url http://127.0.0.1:8000 --labels", timeout=300)  # fmt: skip
    out = stack.run("exec", "-T", "exporter", "python", "-m", "monitoring.window_checks",
                    "--hours", "1", timeout=300)  # fmt: skip
    assert "drift:" in out, out
    exporter = stack.url("exporter", 9100)

    def drift_series():
        text = _get(f"{exporter}/metrics").decode()
        return [line for line in text.splitlines() if line.startswith("ml_drift_psi{")]

    series = _wait(drift_series, 60, "ml_drift_psi from the exporter")
    assert any('feature="amount"' in line for line in series)


def _targets(stack: Stack) -> list[dict]:
    prometheus = stack.url("prometheus", 9090)
    return json.loads(_get(f"{prometheus}/api/v1/targets"))["data"]["activeTargets"]


def test_every_prometheus_target_is_up(stack):
    for job, reason in stack.skipped_jobs.items():
        print(f"not checked: Prometheus job {job!r} ({reason})")

    def all_up():
        targets = [t for t in _targets(stack) if t["labels"]["job"] not in stack.skipped_jobs]
        down = [(t["labels"]["job"], t["lastError"]) for t in targets if t["health"] != "up"]
        return targets if not down else None

    targets = _wait(all_up, 120, "every Prometheus target up")
    assert {t["labels"]["job"] for t in targets} >= {"api", "exporter", "prometheus",
                                                     "alertmanager", "postgres"}  # fmt: skip
    # postgres-exporter reached Postgres with the read-only role (MLPostgresDown reads pg_up).
    prometheus = stack.url("prometheus", 9090)
    answer = json.loads(_get(f"{prometheus}/api/v1/query?query=pg_up"))["data"]["result"]
    assert [sample["value"][1] for sample in answer] == ["1"], answer


def test_scale_api_to_two_replicas_and_prometheus_scrapes_both(stack):
    stack.run("up", "-d", "--no-recreate", "--scale", "api=2", "api", timeout=300)

    def two_api_targets():
        up = [t for t in _targets(stack) if t["labels"]["job"] == "api" and t["health"] == "up"]
        return up if len(up) == 2 else None

    targets = _wait(two_api_targets, 180, "two api targets up", interval=5)
    assert len({t["labels"]["instance"] for t in targets}) == 2
    # and the second replica answers on its own published port
    second = stack.url("api", 8000, index=2)
    assert json.loads(_get(f"{second}/health"))


def _api_containers(stack: Stack) -> list[str]:
    """The running api replicas' container ids, in the order compose numbered them."""
    out = subprocess.run(
        ["docker", "ps", "--filter", f"label=com.docker.compose.project={stack.project}",
         "--filter", "label=com.docker.compose.service=api",
         "--format", '{{.Label "com.docker.compose.container-number"}} {{.ID}}'],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        cid for _, cid in sorted((int(n), cid) for n, cid in map(str.split, out.split("\n")[:-1]))
    ]


def _ip_url(container: str) -> str:
    """The replica's own address, from the host: the published port reaches only one."""
    ip = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
         container], capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    return f"http://{ip}:8000"


def _ready(url: str) -> None:
    _wait(lambda: json.loads(_get(f"{url}/ready", timeout=3))["status"] == "ready", 240,
          f"{url} ready", interval=1)  # fmt: skip


def _logged(stack: Stack, prefix: str) -> Counter:
    out = stack.run("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "monitoring", "-tAc",
                    "SELECT request_id, count(*) FROM prediction_logs "
                    f"WHERE request_id LIKE '{prefix}%' GROUP BY 1", timeout=60)  # fmt: skip
    return Counter(
        {rid: int(n) for rid, _, n in (line.partition("|") for line in out.splitlines()) if n}
    )


def _all_logged(stack: Stack, prefix: str, acknowledged: list[str], timeout: float) -> Counter:
    """Until every acknowledged id is in the containerized Postgres (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        logged = _logged(stack, prefix)
        if set(acknowledged) <= set(logged) or time.monotonic() > deadline:
            return logged
        time.sleep(2)


def test_a_killed_api_container_loses_no_acknowledged_prediction(stack):
    """`docker kill -s KILL` of an API container under load, then `docker start` (an operator,
    a host reboot): the restarted container's processes get the same PIDs as the killed ones,
    which used to make the dead workers' journals "their own" and never replayed. Every
    acknowledged prediction is in Postgres exactly once."""
    victim = _api_containers(stack)[0]
    url = _ip_url(victim)
    _ready(url)
    with Load(url, [REQUEST], threads=4, prefix="ckill-") as load:
        time.sleep(4)
        subprocess.run(["docker", "kill", "-s", "KILL", victim], check=True, capture_output=True)
        time.sleep(0.5)
    assert len(load.acknowledged) > 100, load.failures[:5]
    subprocess.run(["docker", "start", victim], check=True, capture_output=True)
    _ready(_ip_url(victim))
    logged = _all_logged(stack, "ckill-", load.acknowledged, timeout=90)
    missing = set(load.acknowledged) - set(logged)
    assert not missing, f"{len(missing)} of {len(load.acknowledged)} acknowledged rows lost"
    assert max(logged.values()) == 1


def test_three_replicas_sharing_the_spool_volume_one_killed_lose_nothing(stack):
    """`--scale api=3`, load on each replica by its own address, one replica SIGKILLed and
    left down: the others (same PIDs in their own namespaces, one `api-spool` volume) never
    take each other's live files, and one of them claims the dead one's within seconds: every
    acknowledged prediction is in Postgres once, none lost, none doubled."""
    stack.run("up", "-d", "--no-recreate", "--scale", "api=3", "api", timeout=300)
    containers = _wait(lambda: (c := _api_containers(stack)) and len(c) == 3 and c, 120,
                       "three api containers")  # fmt: skip
    urls = [_ip_url(c) for c in containers]
    for url in urls:
        _ready(url)
    loads = [Load(url, [REQUEST], threads=2, prefix=f"cscale{n}-") for n, url in enumerate(urls)]
    for load in loads:
        load.__enter__()
    try:
        time.sleep(4)
        subprocess.run(["docker", "kill", "-s", "KILL", containers[1]], check=True,
                       capture_output=True)  # fmt: skip
        time.sleep(4)
    finally:
        for load in loads:
            load.stop()
    acknowledged = [rid for load in loads for rid in load.acknowledged]
    assert all(len(load.acknowledged) > 50 for load in loads), [len(x.acknowledged) for x in loads]
    logged = _all_logged(stack, "cscale", acknowledged, timeout=90)
    missing = set(acknowledged) - set(logged)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged rows lost"
    assert max(logged.values()) == 1
    subprocess.run(["docker", "start", containers[1]], check=True, capture_output=True)


def test_down_v_leaves_nothing(stack):
    stack.run("down", "-v", "--remove-orphans", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        left = subprocess.run(["docker", *kind, "--filter", label], capture_output=True,
                              text=True, check=True).stdout.split()  # fmt: skip
        assert left == [], (kind, left)
