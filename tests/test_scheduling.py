"""The scheduler examples of docs/scheduling.md: they parse, verify, and their callable runs."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from batchmove.sandbox import SandboxConfig
from tests.support.notify import write_job
from tests.support.sandboxes import REPO_ROOT, SandboxFactory

EXAMPLES = REPO_ROOT / "docs" / "examples"


def test_cronjob_yaml_forbids_overlap_and_keeps_runs_on_a_volume() -> None:
    claim, cronjob = yaml.safe_load_all((EXAMPLES / "cronjob.yaml").read_text())
    assert (claim["kind"], cronjob["kind"]) == ("PersistentVolumeClaim", "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:1] == ["run"]
    assert "--log-format" in container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts["runs"] == container["workingDir"]


def test_cronjob_yaml_is_valid_against_the_kubernetes_schemas() -> None:
    """kubernetes-validate (PyPI) carries the API's JSON schemas: strict mode refuses unknown
    fields too. 1.27 is the first release with CronJob's timeZone as stable."""
    import kubernetes_validate

    documents = list(yaml.safe_load_all((EXAMPLES / "cronjob.yaml").read_text()))
    for version in ("1.27.0", kubernetes_validate.latest_version()):
        for document in documents:
            kubernetes_validate.validate(document, version, strict=True)
    cronjob = documents[1]
    env = {e["name"]: e["value"] for e in
           cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"BATCHMOVE_RUNS_DIR": "/data/runs", "BATCHMOVE_STATE_DIR": "/data/state"}
    cronjob["spec"]["concurencyPolicy"] = cronjob["spec"].pop("concurrencyPolicy")  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, kubernetes_validate.latest_version(), strict=True)


def test_cronjob_image_names_the_release_it_needs() -> None:
    """The tag is this version's release (0.3.0 while pyproject says 0.3.0.dev0): the example
    uses platform jobs and BATCHMOVE_STATE_DIR, which no earlier release has."""
    import re
    import tomllib

    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    release = re.match(r"\d+\.\d+\.\d+", version)
    assert release is not None, version
    _, cronjob = yaml.safe_load_all((EXAMPLES / "cronjob.yaml").read_text())
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].rsplit(":", 1)[1] == release.group()


def test_crontab_line_is_five_fields_and_a_batchmove_run() -> None:
    [line] = [s for s in (EXAMPLES / "crontab").read_text().splitlines()
              if s.strip() and not s.startswith("#")]
    fields = line.split(None, 5)
    assert fields[:5] == ["0", "2", "*", "*", "*"]
    assert "batchmove run " in fields[5]
    assert "--parallel" in fields[5]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    batchmove_bin = Path(sys.executable).with_name("batchmove")
    for name in ("batchmove-nightly.service", "batchmove-nightly.timer"):
        text = (EXAMPLES / name).read_text()
        text = text.replace("/srv/batchmove/.venv/bin/batchmove", str(batchmove_bin))
        (tmp_path / name).write_text(text.replace("/srv/batchmove", str(tmp_path)))
    done = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.iterdir()))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _dag_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("batchmove_dag", EXAMPLES / "batchmove_dag.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_airflow_callable_runs_an_account_against_the_sandbox(
        tmp_path: Path, sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _dag_module()
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    monkeypatch.setenv("WECHAT_APPID", sb.state.appid)
    monkeypatch.setenv("WECHAT_APPSECRET", sb.state.secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)
    job = write_job(tmp_path, sb, "acct-a", notify="")
    outcome = await asyncio.to_thread(dag.move_account, str(job))
    assert (outcome["exit_code"], outcome["counts"]["moved"]) == (0, 100)
    monkeypatch.setenv("WECHAT_APPSECRET", "wrong")
    other = write_job(tmp_path, sb, "acct-b", notify="")
    with pytest.raises(dag.AccountStopped, match="40001"):
        await asyncio.to_thread(dag.move_account, str(other))
