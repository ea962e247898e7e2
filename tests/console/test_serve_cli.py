"""`batchmove serve` refusals: one line on stderr, exit 2, nothing listening. The refusals
come before the console listens, so most are checked in-process (click's runner, ~0.01 s
each instead of a Python start); one runs as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchmove.cli import cli
from tests.support.sandboxes import REPO_ROOT


def serve(*args: str, **env: str) -> Result:
    """`batchmove serve --port 0 ARGS` in this process: for refusals only (a console that
    starts would listen until stopped)."""
    return CliRunner().invoke(cli, ["serve", "--port", "0", *args], env=env)


def test_a_refusal_as_a_process_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "batchmove", "serve", "--port", "0",
                           "--workspace", str(tmp_path / "runs"), "--host", "0.0.0.0"],
                          cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("batchmove: refusing to listen on non-loopback address 0.0.0.0 "
                           "(use --allow-non-loopback to expose the console)\n")
    assert done.stdout == ""


@pytest.mark.parametrize(("args", "env", "first_line"), [
    (["--host", "0.0.0.0"], {}, "batchmove: refusing to listen on non-loopback address 0.0.0.0"),
    (["--key-env", "NO_SUCH_VAR_FOR_TEST"], {},
     "batchmove: --key-env NO_SUCH_VAR_FOR_TEST: the variable must hold a key of at least 16"),
    (["--key-env", "SHORT_KEY"], {"SHORT_KEY": "abc"},
     "batchmove: --key-env SHORT_KEY: the variable must hold a key of at least 16"),
    (["--max-upload-mb", "0"], {}, "batchmove: --max-upload-mb must be >= 1, got 0"),
])
def test_refusals(tmp_path: Path, args: list[str], env: dict[str, str],
                  first_line: str) -> None:
    done = serve("--workspace", str(tmp_path / "runs"), *args, **env)
    assert done.exit_code == 2
    assert done.stderr.splitlines()[0].startswith(first_line)
    assert done.stdout == ""
    assert not (tmp_path / "runs").exists()  # refused before anything was made


@pytest.mark.parametrize(("defaults", "says"), [
    ('rate = "fast"\n', "rate must be a number"),
    ('appsecret = "s3cr3t-value"\n', "would put a secret in the job file")])
def test_a_bad_defaults_file_is_refused_before_listening(tmp_path: Path, defaults: str,
                                                         says: str) -> None:
    path = tmp_path / "defaults.toml"
    path.write_text(defaults)
    done = serve("--workspace", str(tmp_path / "runs"), "--defaults", str(path))
    assert done.exit_code == 2
    assert says in done.stderr.splitlines()[0]
    assert "s3cr3t-value" not in done.output
    assert done.stdout == ""
