"""Scenario "hostile": what a pathological input costs before it is refused (issue 19's
bound: peak RSS <= 500 MB and a refusal within 10 s, whatever the file's size).

Each file is generated once in the bench's data directory, a MB at a time, then given to
`batchmove run` against the bench sandbox (it is refused before any call): a CSV whose one
data line is 1 GiB of 29-byte cells (it took 333 s and 19.7 GB before), a 1 GiB quoted cell
left open over short lines, and an xlsx whose header has Excel's 16,384 columns (560 MB
before). The wall time and peak RSS are the batchmove process's own (`bench/launch.py`).
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness
from bench.harness import Row, batchmove_env, fresh_dir, median, openids, run_child

if TYPE_CHECKING:
    from bench.scenarios import Context

MB = 1 << 20
GIB = 1 << 30  # the size of the files (--quick: 32 MB, still refused)
HEAD = "openid,group_name,note\n"


def _big_csv(name: str, start: bytes, piece: bytes, size: int) -> Path:
    """HEAD, 100 good rows, then one row: `start` and `piece` repeated to `size` bytes."""
    path = harness.DATA_DIR / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    users = openids(101)
    per_block = max(1, MB // len(piece))
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write((HEAD + "".join(f"{o},G1,n\n" for o in users[:100])).encode())
        f.write(users[100].encode() + start)
        for _ in range(size // len(piece) // per_block):
            f.write(piece * per_block)
        f.write(b"\n")
    tmp.replace(path)
    return path


def _wide_xlsx(name: str) -> Path:
    """A one-sheet workbook: a header of 16,384 cells without references, 1,000 rows of two."""
    path = harness.DATA_DIR / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(harness.REPO_ROOT))
    from tests.support.xlsx_files import row, write_xlsx

    parts = [row(["openid", "group_name", *(f"c{i}" for i in range(16_382))])]
    parts += [row([o, "G1"]) for o in openids(1_000)]
    write_xlsx(path, parts)
    with zipfile.ZipFile(path) as book:  # a real workbook, not a bomb the ratio check takes
        assert book.testzip() is None
    return path


def _files(size: int) -> dict[str, Callable[[], Path]]:
    mb = f"{size >> 20} MB" if size < GIB else f"{size >> 30} GiB"
    return {
        f"a {mb} line": lambda: _big_csv(f"hostile-line-{size}.csv", b",G1,",
                                          b"abcdefghijklmnopqrstuvwxyz01,", size),
        f"a quoted cell open for {mb}": lambda: _big_csv(
            f"hostile-quoted-{size}.csv", b',G1,"', b"z" * 1000 + b"\n", size),
        "an xlsx header of 16,384 columns": lambda: _wide_xlsx("hostile-columns.xlsx"),
    }


def hostile(ctx: Context) -> list[Row]:
    box = ctx.sandbox(1_000)
    rows: list[Row] = []
    for what, build in _files(ctx.sizes.hostile).items():
        ctx.log(f"  hostile: {what}")
        path = build()
        walls, rss = [], []
        for i in range(ctx.repeats):
            argv = [sys.executable, "-m", "batchmove", "run", str(path), "--api-base",
                    box.base_url, "--yes", "--out", str(fresh_dir(f"hostile-{i}"))]
            child = run_child(argv, env=batchmove_env(), check=False)
            if child.returncode != 2 or "Traceback" in child.stderr:
                raise RuntimeError(f"{what}: exit {child.returncode}: {child.stderr[-2000:]}")
            walls.append(child.wall)
            rss.append(child.max_rss / MB)
        name = "13. Hostile input"
        rows += [Row(name, f"{what}: refused after (whole process)", tuple(walls), "s",
                     "< 10 s", median(walls) < 10),
                 Row(name, f"{what}: peak RSS", tuple(rss), "MB", "<= 500 MB",
                     median(rss) <= 500, 0)]
    return rows
