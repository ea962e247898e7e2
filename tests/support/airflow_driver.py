"""Run by `tests/test_airflow.py` under the Airflow test venv's Python (not collected by
pytest): the DAG of docs/examples through `dag.test()`, with a watcher that, once the account
named by $STOP_APPID has stopped on its quota (its summary.json says exit 3), moves this
process to another working directory ($SECOND_CWD) and lifts that account's quota in the
sandbox ($SANDBOX_URL), so the task's retry runs from elsewhere. Prints one JSON line: every
task instance's task id, map index, state and try number."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

EXAMPLE = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "batchmove_dag.py"


def watch(summary: Path, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if json.loads(summary.read_text())["exit_code"] == 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    else:
        return
    os.chdir(os.environ["SECOND_CWD"])
    body = json.dumps({"daily_quota": {"groups/members/batchupdate": 100_000}}).encode()
    url = f"{os.environ['SANDBOX_URL']}/sandbox/faults?appid={os.environ['STOP_APPID']}"
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30):  # 127.0.0.1 only
        pass


def main() -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("batchmove", 2, "WeChat accounts moved at once",
                               include_deferred=False)
    spec = importlib.util.spec_from_file_location("batchmove_dag", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = Path(os.environ["STOP_SUMMARY"])
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(summary, stop), daemon=True)
    watcher.start()
    started = time.monotonic()
    run = module.nightly.test()
    stop.set()
    tis = [{"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
            "try_number": ti.try_number, "pool": ti.pool} for ti in run.get_task_instances()]
    print(json.dumps({"state": str(run.state), "tis": tis, "cwd": os.getcwd(),
                      "seconds": round(time.monotonic() - started, 1)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
