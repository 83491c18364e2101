"""The compose stack, brought up for real, once: build, every healthcheck green, a model trained
and promoted inside the containers, a prediction through the published port found in the
containerized Postgres, every Prometheus target up, drift metrics from the exporter after a
monitoring pass, two API replicas scraped after `--scale api=2`, no acknowledged prediction
lost or doubled when an API container is SIGKILLed and restarted or one of three replicas sharing
the spool volume is killed. Then the same stack is switched to the `celery` profile as an
operator would (AIRFLOW_EXECUTOR=CeleryExecutor, `--profile celery up -d --scale
airflow-worker=2`): every Airflow service on the CeleryExecutor, both workers answer Celery's
ping through Redis, a DAG run triggered through the Airflow REST API succeeds with its task on a
worker. Nothing is left after `docker compose down -v`.

One stack for both: two Airflow stacks starting beside the rest of `make test` on two cores did
not get healthy in 15 minutes, and one after the other they were the suite's longest path.
Grafana, node-exporter and cadvisor have no local stand-in on machines without an image
registry: they are left out when their image is not here, and so are their Prometheus jobs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.compose_stacks import (
    CELERY_APP,
    ONE_SHOTS,
    REQUEST,
    AirflowApi,
    Stack,
    containers_of,
    engine_problem,
    ensure_redis_image,
    env_file,
    env_value,
    get,
    wait,
    wait_healthy,
)
from tools.testkit.api_server import Load

pytestmark = pytest.mark.slow

# The celery profile's workers, and the services an executor switch recreates or starts.
WORKERS = 2
CELERY_SERVICES = [
    "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker",
]  # fmt: skip
# The lightest DAG: one task that deletes old prediction-log rows (none here) in the
# monitoring database, so it needs no model, no data and no MLflow run.
DAG_ID = "maintenance_dag"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    env = env_file(tmp_path_factory.mktemp("compose") / "env")
    stack = Stack(f"mlmon-test-{uuid.uuid4().hex[:8]}", env)
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
    wait(lambda: json.loads(get(f"{api}/ready"))["status"] == "ready", 60, "the API ready")
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

    row = wait(logged, 30, "the prediction in the containerized Postgres")
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
        text = get(f"{exporter}/metrics").decode()
        return [line for line in text.splitlines() if line.startswith("ml_drift_psi{")]

    series = wait(drift_series, 60, "ml_drift_psi from the exporter")
    assert any('feature="amount"' in line for line in series)


def _targets(stack: Stack) -> list[dict]:
    prometheus = stack.url("prometheus", 9090)
    return json.loads(get(f"{prometheus}/api/v1/targets"))["data"]["activeTargets"]


def test_every_prometheus_target_is_up(stack):
    for job, reason in stack.skipped_jobs.items():
        print(f"not checked: Prometheus job {job!r} ({reason})")

    def all_up():
        targets = [t for t in _targets(stack) if t["labels"]["job"] not in stack.skipped_jobs]
        down = [(t["labels"]["job"], t["lastError"]) for t in targets if t["health"] != "up"]
        return targets if not down else None

    targets = wait(all_up, 120, "every Prometheus target up")
    assert {t["labels"]["job"] for t in targets} >= {"api", "exporter", "prometheus",
                                                     "alertmanager", "postgres"}  # fmt: skip
    # postgres-exporter reached Postgres with the read-only role (MLPostgresDown reads pg_up).
    prometheus = stack.url("prometheus", 9090)
    answer = json.loads(get(f"{prometheus}/api/v1/query?query=pg_up"))["data"]["result"]
    assert [sample["value"][1] for sample in answer] == ["1"], answer


def test_scale_api_to_two_replicas_and_prometheus_scrapes_both(stack):
    stack.run("up", "-d", "--no-recreate", "--scale", "api=2", "api", timeout=300)

    def two_api_targets():
        up = [t for t in _targets(stack) if t["labels"]["job"] == "api" and t["health"] == "up"]
        return up if len(up) == 2 else None

    targets = wait(two_api_targets, 180, "two api targets up", interval=5)
    assert len({t["labels"]["instance"] for t in targets}) == 2
    # and the second replica answers on its own published port
    second = stack.url("api", 8000, index=2)
    assert json.loads(get(f"{second}/health"))


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
    wait(lambda: json.loads(get(f"{url}/ready", timeout=3))["status"] == "ready", 240,
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
    containers = wait(lambda: (c := _api_containers(stack)) and len(c) == 3 and c, 120,
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


@pytest.fixture(scope="module")
def celery_stack(stack) -> Stack:
    """The same stack switched to the CeleryExecutor: the Airflow services are recreated with
    the new executor, Redis and two workers start; Postgres, MLflow, the API and the rest stay
    as they are."""
    ensure_redis_image()
    text = stack.env_file.read_text()
    stack.env_file.write_text(re.sub(r"^AIRFLOW_EXECUTOR=.*$", "AIRFLOW_EXECUTOR=CeleryExecutor",
                                     text, flags=re.M))  # fmt: skip
    stack.base += ["--profile", "celery"]
    started = time.monotonic()
    stack.run("up", "-d", "--scale", f"airflow-worker={WORKERS}", *CELERY_SERVICES, timeout=900)
    wanted = {service: ["healthy"] for service in CELERY_SERVICES}
    wanted["airflow-init"] = ["exited 0"]
    wanted["airflow-worker"] = ["healthy"] * WORKERS
    wait_healthy(stack, wanted, "every healthcheck of the celery profile", interval=3)
    print(f"\ncompose --profile celery: the Airflow services recreated and {WORKERS} workers "
          f"healthy {time.monotonic() - started:.0f} s after `up -d`")  # fmt: skip
    return stack


def test_every_airflow_service_runs_on_the_celery_executor(celery_stack):
    for service in ("airflow-scheduler", "airflow-worker"):
        out = celery_stack.run("exec", "-T", "--index", "1", service, "airflow", "config",
                               "get-value", "core", "executor", timeout=120)  # fmt: skip
        assert out.strip().splitlines()[-1] == "CeleryExecutor", (service, out)


def test_both_workers_answer_celery_through_redis(celery_stack):
    out = celery_stack.run("exec", "-T", "--index", "1", "airflow-worker", "celery", "--app",
                           CELERY_APP, "inspect", "ping", timeout=120)  # fmt: skip
    hostnames = {c["Config"]["Hostname"] for c in containers_of(celery_stack, "airflow-worker")}
    assert len(hostnames) == WORKERS
    for hostname in hostnames:
        assert f"celery@{hostname}: OK" in out, out
    assert f"{WORKERS} nodes online" in out, out


def test_a_triggered_dag_run_succeeds_with_its_task_on_a_celery_worker(celery_stack):
    env_file = celery_stack.env_file
    api = AirflowApi(
        celery_stack.url("airflow-apiserver", 8080),
        env_value(env_file, "AIRFLOW_ADMIN_USER"),
        env_value(env_file, "AIRFLOW_ADMIN_PASSWORD"),
    )
    # The dag-processor serializes the DAG files some seconds after it starts.
    wait(lambda: api.get(f"/api/v2/dags/{DAG_ID}"), 180, f"{DAG_ID} parsed", interval=5)
    api.patch(f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    run_id = f"celery-test-{uuid.uuid4().hex[:8]}"
    api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None})

    def finished():
        state = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    state = wait(finished, 300, f"dag run {run_id} finished", interval=5)
    instances = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert state == "success", (instances, celery_stack.logs())
    workers = {c["Config"]["Hostname"] for c in containers_of(celery_stack, "airflow-worker")}
    (scheduler,) = [
        c["Config"]["Hostname"] for c in containers_of(celery_stack, "airflow-scheduler")
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


def test_down_v_leaves_nothing(stack, celery_stack):
    """Last: the default services and the celery profile's all go."""
    stack.run("down", "-v", "--remove-orphans", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        left = subprocess.run(["docker", *kind, "--filter", label], capture_output=True,
                              text=True, check=True).stdout.split()  # fmt: skip
        assert left == [], (kind, left)
