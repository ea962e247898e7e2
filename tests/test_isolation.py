"""The suite never touches the user's account registry (~/.local/state/batchmove): the crash
campaign's module fixture once started its runs there, before any test's own `state_dir`,
leaving stale registrations and a lock file per run in the developer's registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchmove.registry.store import state_dir as registry_dir
from tests.support.sandboxes import ENV


@pytest.fixture(scope="module")
def seen_by_a_module_fixture() -> tuple[str | None, str | None]:
    return os.environ.get("BATCHMOVE_STATE_DIR"), ENV.get("BATCHMOVE_STATE_DIR")


def test_module_fixtures_get_the_sessions_registry_not_the_users(
        seen_by_a_module_fixture: tuple[str | None, str | None],
        session_state_dir: Path) -> None:
    assert seen_by_a_module_fixture == (str(session_state_dir), str(session_state_dir))


def test_each_test_gets_its_own_registry(state_dir: Path, session_state_dir: Path) -> None:
    assert registry_dir() == state_dir != session_state_dir
    assert ENV["BATCHMOVE_STATE_DIR"] == str(state_dir)
