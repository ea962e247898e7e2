"""Live figures from a real ledger: exact counts from the cheap count, rate and ETA from the
counts' history, no count when nothing was committed, a fresh count once the run ended."""

from __future__ import annotations

from pathlib import Path

from batchmove.console.progress import Watcher
from batchmove.ledger.store import Ledger
from batchmove.models import InputRow
from tests.support.sandboxes import FakeClock


def _ledger(run_dir: Path, n: int = 100) -> Ledger:
    rows = [InputRow(i + 2, f"o{i}", "A" if i % 2 else "B", "pending", "", None)
            for i in range(n)]
    rows.append(InputRow(n + 2, "", "", "invalid", "missing openid", None))
    ledger = Ledger(run_dir).open()
    ledger.load_rows([rows], lambda _: [])
    return ledger


async def test_figures_follow_the_ledger(tmp_path: Path, fake_clock: FakeClock) -> None:
    watcher = Watcher(clock=fake_clock)
    with _ledger(tmp_path) as ledger:
        first = await watcher.poll(tmp_path, live=True)
        assert first["phase"] == "preparing"
        assert (first["pending"], first["total"]) == (100, 101)
        for step in range(1, 5):  # 10 users moved a second
            ledger.record_moved(list(range(step * 10 - 8, step * 10 + 2)), 1)
            fake_clock.advance(1.0)
            await watcher.poll(tmp_path, live=True)  # starts a count in the background...
            task = watcher.watches[tmp_path].task
            assert task is not None
            await task
            figures = await watcher.poll(tmp_path, live=True)  # ...whose figures come next
        assert figures["moved"] == 40
        assert figures["pending"] == 60
        assert figures["counts"]["invalid"] == 1
        assert figures["phase"] == "moving"
        assert figures["users_per_s"] == 10.0
        assert figures["eta_s"] == 6
        assert {t["target"]: t["moved"] for t in figures["targets"]} == {"A": 20, "B": 20}
        for column in ("moved", "already", "failed", "pending"):  # the columns add up
            assert sum(t[column] for t in figures["targets"]) == figures["counts"][column]
        ended = await watcher.poll(tmp_path, live=False)
        assert ended["phase"] == "stopped"
        assert ended["moved"] == 40
        assert sum(t["moved"] for t in ended["targets"]) == 40
        assert "" not in {t["target"] for t in ended["targets"]}  # the invalid row's
    assert tmp_path not in watcher.watches  # the run ended: its connection is closed


async def test_a_page_never_waits_for_a_count(tmp_path: Path, fake_clock: FakeClock) -> None:
    watcher = Watcher(clock=fake_clock)
    with _ledger(tmp_path) as ledger:
        await watcher.poll(tmp_path, live=True)
        ledger.record_moved([2, 3], 1)
        fake_clock.advance(0.5)  # not due yet: the figures are the last count's
        figures = await watcher.poll(tmp_path, live=True)
        assert figures["moved"] == 0
        assert figures["age_s"] == 0.5
    watcher.close()


async def test_no_ledger_yet_is_loading(tmp_path: Path, fake_clock: FakeClock) -> None:
    figures = await Watcher(clock=fake_clock).poll(tmp_path, live=True)
    assert figures["phase"] == "loading"
    assert figures["total"] == 0
