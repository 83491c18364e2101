"""Real Airflow for the tests, each call in its own process, as a scheduler would run it.

Airflow configures logging and its ORM when imported, and the stack's settings are read once
per process, so every Airflow step of a test runs in a fresh interpreter with the environment
it is given: `AirflowHome.run_dag` is `dag.test()` of one DAG (the DAG files parsed from
`airflow/dags/` by a DagBag, tasks run in-process, the metadata database a SQLite file in the
test's folder), and prints what the test asserts on as one JSON line.

    python -m tools.testkit.airflow_run DAG_ID LOGICAL_DATE [CONF_JSON]
    python -m tools.testkit.airflow_run --describe
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from data.settings import PROJECT_ROOT

DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"
MARKER = "AIRFLOW-RESULT "


class AirflowHome:
    """An AIRFLOW_HOME with a migrated metadata database, and the stack's settings to run with."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            **env,
            "AIRFLOW_HOME": str(folder),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "0",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        folder.mkdir(parents=True, exist_ok=True)
        self._call([sys.executable, "-m", "airflow", "db", "migrate"])

    def _call(self, command: list[str], **env: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            command,
            env={**self.env, **env},
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:4])} failed:\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-5000:]}")  # fmt: skip
        return done

    def _result(self, command: list[str], **env: str) -> dict[str, Any]:
        done = self._call(command, **env)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
        if not lines:
            raise RuntimeError(f"no result printed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        result = json.loads(lines[-1].removeprefix(MARKER))
        result["log"] = done.stdout + done.stderr
        return result

    def run_dag(
        self, dag_id: str, logical_date: datetime, conf: dict | None = None, **env: str
    ) -> dict[str, Any]:
        """`dag.test()` of `dag_id`: {"state", "tasks": {task: state}, "xcom": {task: value},
        "triggered": [{"dag_id", "run_id", "conf"}], "log"}."""
        command = [
            sys.executable,
            "-m",
            "tools.testkit.airflow_run",
            dag_id,
            logical_date.isoformat(),
        ]
        return self._result(command + [json.dumps(conf or {})], **env)

    def describe(self) -> dict[str, Any]:
        """Every DAG the DagBag loads: import errors, schedule, tasks and their downstreams."""
        return self._result([sys.executable, "-m", "tools.testkit.airflow_run", "--describe"])


def _describe() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    return {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": {
            dag.dag_id: {
                "timetable": type(dag.timetable).__name__,
                "schedule": getattr(dag.timetable, "_expression", None),
                "catchup": dag.catchup,
                "tags": sorted(dag.tags),
                "doc": bool(dag.doc_md or dag.description),
                "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
            }
            for dag in bag.dags.values()
        },
    }


def _run(dag_id: str, logical_date: str, conf: dict) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(str(DAGS_FOLDER))
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    run = bag.dags[dag_id].test(logical_date=datetime.fromisoformat(logical_date), run_conf=conf)
    with create_session() as session:
        tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        xcoms = session.query(XComModel).filter(
            XComModel.dag_id == dag_id, XComModel.run_id == run.run_id
        )
        values = {
            x.task_id: XComModel.deserialize_value(x) for x in xcoms if x.key == "return_value"
        }
        triggered = [
            {"dag_id": other.dag_id, "run_id": other.run_id, "conf": other.conf}
            for other in session.query(DagRun).filter(DagRun.run_type == "operator_triggered")
        ]
    return {"state": str(run.state), "run_id": run.run_id, "tasks": tasks, "xcom": values,
            "triggered": triggered}  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "--describe":
        outcome = _describe()
    else:
        outcome = _run(
            sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
        )
    print(MARKER + json.dumps(outcome, default=str))
