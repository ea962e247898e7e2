"""Live figures from a real ledger: exact counts from the cheap count, rate and ETA from the
counts' history, no count when nothing was committed, a fresh count once the run ended."""

from __future__ import annotations

from pathlib import Path

from batchmove.console.progress import COUNT_SHARE, Watcher
from batchmove.ledger.store import Ledger
from batchmove.models import InputRow, RowFailure
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


def _adds_up(figures: dict[str, object]) -> bool:
    targets = figures["targets"]
    counts = figures["counts"]
    assert isinstance(targets, list)
    assert isinstance(counts, dict)
    return all(sum(t[column] for t in targets) == counts[column]
               for column in ("moved", "already", "failed", "pending"))


async def test_the_headline_and_the_table_always_add_up(tmp_path: Path,
                                                       fake_clock: FakeClock) -> None:
    """Whatever the moment of a poll, the table is the headline's own count: never a
    headline of 100 moved beside a row of 0."""
    watcher = Watcher(clock=fake_clock)
    with _ledger(tmp_path, 200) as ledger:
        seen = []
        for step in range(40):
            rows = [2 + step * 5 + i for i in range(5)]
            if step % 7 == 3:  # now and then a row fails
                ledger.record_results({1: rows[:4]}, [RowFailure(rows[4], 40003, "x", 1)])
            else:
                ledger.record_moved(rows, 1)
            fake_clock.advance((0.3, 0.7, 1.1)[step % 3])
            figures = await watcher.poll(tmp_path, live=True)
            assert _adds_up(figures), figures
            task = watcher.watches[tmp_path].task
            if task is not None:
                await task
            seen.append(figures["moved"])
        assert seen[-1] > seen[0]  # the figures moved on meanwhile
        ended = await watcher.poll(tmp_path, live=False)
        assert _adds_up(ended)
        assert ended["moved"] + ended["failed"] == 200
        assert ended["counts"]["invalid"] == 1


async def test_a_dear_count_waits_and_still_adds_up(tmp_path: Path,
                                                   fake_clock: FakeClock) -> None:
    """A count that costs 2 s (a big ledger) is made at most COUNT_SHARE of the time: the
    page's figures wait, older (`age_s`) but whole."""
    watcher = Watcher(clock=fake_clock)
    with _ledger(tmp_path) as ledger:
        await watcher.poll(tmp_path, live=True)
        watcher.watches[tmp_path].count_cost = 2.0  # as measured on a million rows
        ledger.record_moved(list(range(2, 12)), 1)
        fake_clock.advance(5.0)
        figures = await watcher.poll(tmp_path, live=True)
        task = watcher.watches[tmp_path].task
        assert task is not None
        await task
        figures = await watcher.poll(tmp_path, live=True)
        assert (figures["moved"], figures["age_s"]) == (0, 5.0)  # not due: 2 s / 10% = 20 s
        assert _adds_up(figures)
        fake_clock.advance(2 / COUNT_SHARE - 5.0)
        await watcher.poll(tmp_path, live=True)
        task = watcher.watches[tmp_path].task
        assert task is not None
        await task
        figures = await watcher.poll(tmp_path, live=True)
        assert figures["moved"] == 10
        assert {t["target"]: t["moved"] for t in figures["targets"]} == {"A": 5, "B": 5}
        assert _adds_up(figures)
    watcher.close()
