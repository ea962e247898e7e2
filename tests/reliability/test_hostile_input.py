"""Hostile input: whatever the spreadsheet holds, a clear refusal or a per-row verdict.

Figures:
- 23 crafted files, each run by a real `batchmove run` process against the sandbox, with its
  peak RSS measured (VmHWM; limit 500 MB; a watchdog kills a child past 600 MB, and an
  address-space cap of 3 GB protects the machine), and every refusal within 10 s: a CSV whose
  header has 1,000,000 columns, data rows of 1,000,000 and 7,000,000 cells, a 1 GiB line (of
  29-byte cells), a 1 GiB cell, a quoted cell opened and never closed for 1 GiB (those three
  generated a MB at a time in the test's tmp dir, refused once 16 MB are read: 0.6-1.2 s, 47
  MB), a 15 MB cell, a 15 MB openid, a 12 MB unclosed quote, 16 MB of quote characters, 15 MB
  of doubled quotes, NUL bytes at the start and after the first MB, a UTF-8 file with one GBK
  line, formula cells (CSV and xlsx), an xlsx declaring A1:XFD1048576, an xlsx whose header
  has Excel's 16,384 columns (no cell references), xlsx files with a cell at ALL1048576 or
  A4294967295 and no (or a false) dimension, a 64 MB sheet deflated 1000:1 (zip bomb), a zip
  whose directory understates the sheet's size, and a 3 MB workbook whose sheet unpacks to
  2,000,000 rows.
- hypothesis, in-process (derandomized): 900 byte strings assembled from hostile pieces
  (quotes, delimiters, BOMs, NUL/ESC, GBK and UTF-8 fragments, 1,500-byte runs), 300 each as
  .csv/.tsv/.txt; 160 generated tables (80 CSV, 80 XLSX) through the loader; 60 generated
  tables end to end through `run_job` against the sandbox (formulas, blanks, NA/null, 黑名单,
  over-long names, 2,000-character cells).
Verdicts: exit 2 with one `batchmove: ` line (no traceback, no Rust backtrace), or exit 0/1
with every row in the report with a final status and every formula neutralised. Six
files once exposed six bugs, now regression tests (control characters, mixed encodings,
far-away cells, rows beyond Excel's, a 1 GiB line: 333 s and 19.7 GB, an xlsx header of
16,384 columns: 560 MB). About 40 s.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import openpyxl
import pytest
import xlsxwriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchmove.errors import BatchmoveError, InputError
from batchmove.flows.run import RunOptions, run_job
from batchmove.intake.loader import open_input
from batchmove.intake.rowcheck import BLANK, TRUNCATED
from batchmove.models import JobSpec
from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.engine import QuietEvents
from tests.support.processes import (
    FINAL_STATUSES,
    RSS_LIMIT_MB,
    SECRET,
    Child,
    ThreadedSandbox,
    assert_one_line_error,
    batchmove,
    group_names,
    leaks,
    report_rows,
    secrets_of,
)
from tests.support.xlsx_files import cell, declare_size, row, write_xlsx

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 4
FOLLOWERS = sandbox_openids(2_000, SEED)
HEADER = b"openid,group_name,note\n"
GOOD = b"".join(f"{o},G{i % 3},n{i}\n".encode() for i, o in enumerate(FOLLOWERS[:100]))
WATCHDOG_MB = 600
REFUSAL_S = 10  # a pathological file is refused within this, whatever its size
UNCLOSED = 12 << 10  # 1 KB lines after the unclosed quote: 12 MB
PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    config = SandboxConfig(users=len(FOLLOWERS), seed=SEED, secret=SECRET, max_groups=100_000)
    with ThreadedSandbox(config) as running:
        yield running


# --- crafted files, each through a real process -------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    verdict: str  # "refused": exit 2; "rows": exit 0/1 with a complete report; "either"
    error: str = ""  # a fragment of the one-line error when refused
    rows: int | None = None  # data rows in the report when accepted
    check: Callable[[Path, list[str]], None] | None = None  # (run_dir, groups created)


def _csv(name: str, data: Callable[[], bytes]) -> Callable[[Path], Path]:
    """Built when the case runs: some are tens of MB, not to be held at import."""

    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data())
        return path

    return build


def _openid_row(n: int, group: str, note: bytes) -> bytes:
    return FOLLOWERS[n].encode() + b"," + group.encode() + b"," + note + b"\n"


def _giant_note_truncated(run_dir: Path, _: list[str]) -> None:
    assert (run_dir / "report.csv").stat().st_size < 2 << 20
    giant = [r for r in report_rows(run_dir) if r["openid"] == FOLLOWERS[500]]
    assert giant[0]["note"].endswith(TRUNCATED)


def _row_verdict(number: int, reason: str) -> Callable[[Path, list[str]], None]:
    """Row `number` is invalid with `reason`; every other row has a verdict of its own."""

    def check(run_dir: Path, _: list[str]) -> None:
        rows = report_rows(run_dir)
        bad = [r for r in rows if r["row"] == str(number)]
        assert (bad[0]["status"], bad[0]["errmsg"]) == ("invalid", reason)
        assert sum(r["status"] in ("moved", "already") for r in rows) == 100

    return check


def _giant_openid_invalid(run_dir: Path, _: list[str]) -> None:
    rejected = [r for r in report_rows(run_dir) if r["row"] == "102"]
    assert rejected[0]["status"] == "invalid"
    assert "longer than 64" in rejected[0]["errmsg"]


def _no_control_characters_in_groups(_: Path, created: list[str]) -> None:
    bad = [n for n in created if any(unicodedata.category(c) == "Cc" for c in n)]
    assert not bad, f"groups created with control characters in their names: {bad!r}"


MIXED_NAMES = ["华东", "沉睡用户", "高价"]


def _mixed_encoding_names(_: Path, created: list[str]) -> None:
    assert set(created) <= set(MIXED_NAMES), f"mojibake group names created: {created}"


def _mixed_encodings() -> bytes:
    lines = [b"openid,group_name"]
    for i in range(30):
        line = f"{FOLLOWERS[700 + i]},{MIXED_NAMES[i % 3]}"
        lines.append(line.encode("gbk" if i == 10 else "utf-8"))
    return b"\r\n".join(lines) + b"\r\n"


FORMULA_ROWS = [
    (FOLLOWERS[600], '=HYPERLINK("http://evil.example","x")', "note"),
    ("=cmd|' /C calc'!A0", "G1", "note"),
    (FOLLOWERS[601], "G1", "=1+2"),
    (FOLLOWERS[602], "G1", "@SUM(A1:A9)"),
    (FOLLOWERS[603], "G1", "+33 1 23 45"),
    (FOLLOWERS[604], "G1", "-5"),
    (FOLLOWERS[605], "+cmd|'/C calc'!A0", "x"),
    (FOLLOWERS[606], "G1", "-2+3*cmd|' /C calc'!A0"),
]


def _formulas_csv(tmp: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["openid", "group_name", "note"])
    writer.writerows(FORMULA_ROWS)
    path = tmp / "formulas.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _formulas_xlsx(tmp: Path) -> Path:
    parts = [row(["openid", "group_name", "note"])]
    parts += [row(r) for r in FORMULA_ROWS]
    # formula cells with cached values, as Excel saves them
    parts.append(f'<row><c t="str"><f>CONCAT("o","x")</f><v>{FOLLOWERS[607]}</v></c>'
                 f'{cell("G2")}<c t="str"><f>HYPERLINK("http://evil.example")</f>'
                 "<v>=HYPERLINK(1)</v></c></row>")
    return write_xlsx(tmp / "formulas.xlsx", parts)


def _formulas_neutralised(run_dir: Path, _: list[str]) -> None:
    by_note = {r["note"]: r for r in report_rows(run_dir)}
    for note in ("'=1+2", "'@SUM(A1:A9)", "-5"):  # "already" when the csv case moved them
        assert by_note[note]["status"] in ("moved", "already")
    statuses = {r["openid"]: r["status"] for r in report_rows(run_dir)}
    assert statuses["'=cmd|' /C calc'!A0"] == "invalid"
    assert statuses[FOLLOWERS[600]] == "invalid"
    for name in ("report.csv", "failed.csv"):
        with (run_dir / name).open(encoding="utf-8-sig", newline="") as f:
            for cells in csv.reader(f):
                for value in cells:
                    assert not _is_live_formula(value), (name, value)
    book = openpyxl.load_workbook(run_dir / "report.xlsx", read_only=True)
    for cells in book.active.iter_rows():
        for c in cells:
            assert c.data_type != "f", c.value
            assert not (isinstance(c.value, str) and _is_live_formula(c.value)), c.value


def _is_live_formula(value: str) -> bool:
    """What Excel would evaluate: the README's triggers, except plain numbers like -5 or +1."""
    return value[:1] in ("=", "+", "-", "@", "\t", "\r") and not PLAIN_NUMBER.fullmatch(value)


def _far_cell(ref: str, dimension: str | None) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        parts = [row(["openid", "group_name"])]
        parts += [row([o, "G1"]) for o in FOLLOWERS[800:900]]
        parts.append(f'<row>{cell("x", ref)}</row>')
        return write_xlsx(tmp / f"far_{ref}.xlsx", parts, dimension=dimension)

    return build


def _declared_huge(tmp: Path) -> Path:
    parts = [row(["openid", "group_name"])] + [row([o, "G1"]) for o in FOLLOWERS[:10]]
    return write_xlsx(tmp / "huge_dimension.xlsx", parts, dimension="A1:XFD1048576")


def _ratio_bomb(tmp: Path) -> Path:
    same = row([FOLLOWERS[0], "G1"])
    parts = [row(["openid", "group_name"]), *[same] * 600_000]  # 64 MB of XML
    return write_xlsx(tmp / "bomb.xlsx", parts)


def _lying_sizes(tmp: Path) -> Path:
    same = row([FOLLOWERS[0], "G1"])
    path = write_xlsx(tmp / "lying.xlsx", [row(["openid", "group_name"]), *[same] * 300_000])
    declare_size(path, "xl/worksheets/sheet1.xml", 5_000_000)
    return path


def _beyond_excel_rows(tmp: Path) -> Path:
    """2,000,000 rows (Excel stops at 1,048,576), with a little entropy so the sheet deflates
    about 100:1, under the 200:1 zip-bomb cap."""
    rng = random.Random(SEED)

    def parts() -> Iterator[str]:
        yield row(["openid", "group_name", "note"])
        for i in range(1, 2_000_000):
            yield row([FOLLOWERS[0], "G", rng.randbytes(6).hex() if i % 12 == 0 else "x"])

    return write_xlsx(tmp / "beyond_excel.xlsx", parts())


def _tail(n: int, tail: bytes) -> bytes:
    """HEADER, the 100 good rows, then one row for follower n followed by `tail`."""
    return HEADER + GOOD + FOLLOWERS[n].encode() + tail


def _huge(name: str, n: int, start: bytes, piece: bytes, size: int) -> Callable[[Path], Path]:
    """HEADER, the 100 good rows, then follower n's row: `start`, then `piece` repeated to
    `size` bytes, then a newline; written a MB at a time (the 1 GiB files never sit in
    memory, here or in batchmove)."""

    def build(tmp: Path) -> Path:
        path = tmp / name
        per_block = max(1, (1 << 20) // len(piece))
        blocks, rest = divmod(size // len(piece), per_block)
        with path.open("wb") as f:
            f.write(HEADER + GOOD + FOLLOWERS[n].encode() + start)
            for _ in range(blocks):
                f.write(piece * per_block)
            f.write(piece * rest + b"\n")
        return path

    return build


def _wide_header_xlsx(tmp: Path) -> Path:
    """16,384 header cells (Excel's every column) without references, then 1,000 rows of two."""
    parts = [row(["openid", "group_name", *(f"c{i}" for i in range(16_382))])]
    parts += [row([o, "G1"]) for o in FOLLOWERS[:1_000]]
    return write_xlsx(tmp / "xfd_columns.xlsx", parts)


CASES = [
    Case("header_1m_columns",
         _csv("wide.csv", lambda: b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n"
              + GOOD), "refused", "columns"),
    Case("row_1m_cells", _csv("row.csv", lambda: HEADER + GOOD + b"x," * 999_999 + b"x\n"),
         "rows", rows=101, check=_row_verdict(102, "row has 1000000 cells, the header has 3")),
    Case("giant_15mb_cell", _csv("giant.csv", lambda: _tail(500, b",G1," + b"y" * (15 << 20)
                                                            + b"\n")),
         "rows", rows=101, check=_giant_note_truncated),
    Case("giant_15mb_openid",
         _csv("giant_openid.csv", lambda: HEADER + GOOD + b"o" * (15 << 20) + b",G1,n\n"),
         "rows", rows=101, check=_giant_openid_invalid),
    # the lines after an unclosed quote are rows of their own: 1 KB lines keep them few
    Case("unclosed_quote_12mb",
         _csv("unclosed.csv", lambda: _tail(501, b',G1,"' + (b"z" * 1000 + b",\n") * UNCLOSED)),
         "rows", rows=100 + UNCLOSED,  # its first 1 KB line is row 102
         check=_row_verdict(102, "a quoted cell is not closed on its line")),
    # what no row of a spreadsheet is: refused once 16 MB of it are read
    Case("line_1gib", _huge("line.csv", 510, b",G1,", b"abcdefghijklmnopqrstuvwxyz01,",
                            1 << 30), "refused", "line 102 is longer than 16 MB"),
    Case("cell_1gib", _huge("cell.csv", 511, b",G1,", b"y", 1 << 30), "refused",
         "line 102 is longer than 16 MB"),
    Case("quoted_cell_1gib", _huge("quoted.csv", 512, b',G1,"', b"z" * 1000 + b"\n", 1 << 30),
         "refused", "line 102 opens a quoted cell that is not closed within 16 MB"),
    Case("row_7m_cells", _huge("cells.csv", 513, b",G1,", b"x,", 7_000_000 * 2), "rows",
         rows=101, check=_row_verdict(102, "row has 7000003 cells, the header has 3")),
    Case("xlsx_16384_columns", _wide_header_xlsx, "refused",
         "has a row of about 16384 cells; at most 1000 columns"),
    Case("quote_storm_16mb",
         _csv("quotes.csv", lambda: _tail(502, b",G1," + b'"' * (16 << 20) + b"\n")), "either"),
    Case("doubled_quotes_15mb",
         _csv("doubled.csv", lambda: _tail(503, b',G1,"' + b'a""' * (5 << 20) + b'"\n')),
         "rows", rows=101),
    Case("nul_in_first_mb",
         _csv("nul.csv", lambda: HEADER + _openid_row(504, "A\x00B", b"n") + GOOD),
         "refused", "NUL"),
    pytest.param(Case("nul_after_first_mb",
                      _csv("nul_late.csv",
                           lambda: HEADER + GOOD * 300 + _openid_row(505, "A\x00B", b"n")),
                      "either", check=_no_control_characters_in_groups)),
    pytest.param(Case("mixed_utf8_gbk", _csv("mixed.csv", _mixed_encodings), "either",
                      check=_mixed_encoding_names)),
    Case("formula_cells_csv", _formulas_csv, "rows", rows=len(FORMULA_ROWS),
         check=_formulas_neutralised),
    Case("formula_cells_xlsx", _formulas_xlsx, "rows", rows=len(FORMULA_ROWS) + 1,
         check=_formulas_neutralised),
    Case("xlsx_declares_A1_XFD1048576", _declared_huge, "refused", "columns"),
    pytest.param(Case("xlsx_cell_at_ALL1048576", _far_cell("ALL1048576", "A1:B101"),
                      "refused")),
    pytest.param(Case("xlsx_cell_at_A4294967295", _far_cell("A4294967295", None), "refused")),
    Case("xlsx_zip_bomb_1000_to_1", _ratio_bomb, "refused", "zip bomb"),
    Case("xlsx_zip_understates_size", _lying_sizes, "refused", "declared"),
    pytest.param(Case("xlsx_2m_rows_in_3mb", _beyond_excel_rows, "either")),
]


def _run(sandbox: ThreadedSandbox, path: Path, run_dir: Path, logs: Path) -> Child:
    return batchmove("run", str(path), "--api-base", sandbox.base_url, "--out", str(run_dir),
                     "--yes", "--create-groups", "--rate", "0", logs=logs,
                     rss_watch_mb=WATCHDOG_MB, timeout=300)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_file_gets_a_clear_verdict(case: Case, sandbox: ThreadedSandbox,
                                           tmp_path: Path) -> None:
    path = case.build(tmp_path)
    before = group_names(sandbox.state)
    run_dir = tmp_path / "run"
    child = _run(sandbox, path, run_dir, tmp_path / "logs")
    path.unlink()  # some are large: free the disk before the next case
    print(f"\n{case.name}: exit {child.returncode}, {child.peak_rss_mb:.0f} MB peak RSS, "
          f"{child.seconds:.1f} s")
    assert not child.killed_by_watchdog, f"grew past {WATCHDOG_MB} MB"
    assert child.peak_rss_mb < RSS_LIMIT_MB
    if case.verdict == "refused":
        assert child.seconds < REFUSAL_S, f"refused after {child.seconds:.1f} s"
    assert "Traceback" not in child.output
    assert "stack backtrace" not in child.output
    assert child.returncode in (0, 1, 2), child.stderr[-2000:]
    if case.verdict == "refused" or child.returncode == 2:
        assert case.verdict != "rows", child.stderr[-2000:]
        line = assert_one_line_error(child)
        assert case.error.casefold() in line.casefold(), line
        assert not (run_dir / "report.csv").exists()
    else:
        report = report_rows(run_dir)
        assert {r["status"] for r in report} <= FINAL_STATUSES
        if case.rows is not None:
            assert len(report) == case.rows
    created = [n for n in group_names(sandbox.state) if n not in before]
    if case.check is not None:
        case.check(run_dir, created)
    found = leaks(secrets_of(sandbox.state), {"stdout": child.stdout, "stderr": child.stderr},
                  [run_dir])
    assert not found, found


# --- hypothesis, in-process ---------------------------------------------------------------
PIECES = [b'"', b'""', b",", b";", b"\t", b"\r\n", b"\n", b"\r", b"=", b"@", b"+", b"-",
          b" ", "\xa0".encode(), "\u3000".encode(), "华东".encode(), "华东".encode("gbk"),
          b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\x1b", b"openid", b"group_name",
          b"to_groupid", b"note", FOLLOWERS[0].encode(), b"x" * 1_500, b"\xe4\xb8", b"\\",
          b"'", b"NA", b"0108", b"1", b"108.0", b"=HYPERLINK(\"x\")", b"\xff", b"\x85"]
HEADS = [b"openid,group_name,note\n", b"openid;to_groupid\r\n", b"\xef\xbb\xbfopenid\tgroup\n",
         b"", b"\n\n ,,\n openid , group_name \n", b'"openid","group_name"\n']
SETTINGS = settings(deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
OPENID = re.compile(r"[A-Za-z0-9_-]{10,64}")
CELL_LIMIT = 1_000 + len(TRUNCATED)


def _load(path: Path) -> list[tuple[int, str, str, str, tuple[str, ...]]]:
    source = open_input(JobSpec(input=path))
    return [(r.row, r.openid, r.target, r.status, r.extra or ())
            for chunk in source.rows(7) for r in chunk]


def _check_rows(rows: list[tuple[int, str, str, str, tuple[str, ...]]]) -> None:
    numbers = [r[0] for r in rows]
    assert numbers == sorted(set(numbers))
    assert all(n >= 2 for n in numbers)
    for number, openid, target, status, extra in rows:
        assert status in ("pending", "invalid", "duplicate"), status
        assert all(len(c) <= CELL_LIMIT for c in (openid, target, *extra)), number
        if status == "pending":
            assert OPENID.fullmatch(openid), openid
            assert target
            assert not target.startswith("=")
            assert not any(unicodedata.category(c) == "Cc" for c in target), repr(target)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt"])
@settings(SETTINGS, max_examples=300)
@given(head=st.sampled_from(HEADS), body=st.lists(st.sampled_from(PIECES), max_size=80))
def test_hostile_bytes_give_rows_or_one_clear_error(tmp_path: Path, suffix: str, head: bytes,
                                                   body: list[bytes]) -> None:
    path = tmp_path / f"in{suffix}"
    path.write_bytes(head + b"".join(body))
    try:
        rows, refusal = _load(path), ""
    except InputError as exc:
        rows, refusal = [], exc.message
    if refusal:
        assert "\n" not in refusal
        assert refusal.startswith(str(path))
    _check_rows(rows)


HOSTILE_CELLS = st.one_of(
    st.sampled_from(FOLLOWERS[:40]),
    st.sampled_from(["", " ", "\u3000", "NA", "null", "None", "007", "0108", "108.0", "=1+1",
                     "+1", "-1", "@x", "=HYPERLINK(\"http://evil\")", "名" * 31, "名" * 30,
                     "黑名单", "G1", "G2", "高价值客户", "x" * 2_000, "'", '"', '""', ",;"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff"),
            max_size=40),
)
TABLES = st.lists(st.tuples(HOSTILE_CELLS, HOSTILE_CELLS, HOSTILE_CELLS), max_size=20)


def _write_table(path: Path, table: list[tuple[str, str, str]]) -> Path:
    if path.suffix == ".xlsx":
        book = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False,
                                               "strings_to_numbers": False})
        sheet = book.add_worksheet()
        for r, cells in enumerate([("openid", "group_name", "note"), *table]):
            for c, value in enumerate(cells):
                sheet.write_string(r, c, value)
        book.close()
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\r\n")
            writer.writerow(["openid", "group_name", "note"])
            writer.writerows(table)
    return path


def _non_blank(table: list[tuple[str, str, str]]) -> list[int]:
    return [i + 2 for i, cells in enumerate(table) if any(c.strip(BLANK) for c in cells)]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
@settings(SETTINGS, max_examples=80)
@given(table=TABLES)
def test_generated_tables_give_one_verdict_per_row(tmp_path: Path, suffix: str,
                                                   table: list[tuple[str, str, str]]) -> None:
    path = _write_table(tmp_path / f"in{suffix}", table)
    if not _non_blank(table):  # no data row at all: refused as a whole (exit 2), one line
        with pytest.raises(InputError, match=r": no data rows \(a header"):
            _load(path)
        return
    rows = _load(path)
    _check_rows(rows)
    assert [r[0] for r in rows] == _non_blank(table)


_runs = count()


@settings(SETTINGS, max_examples=60)
@given(table=TABLES, suffix=st.sampled_from([".csv", ".xlsx"]))
def test_generated_tables_end_to_end(sandbox: ThreadedSandbox, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     table: list[tuple[str, str, str]], suffix: str) -> None:
    """Every non-blank row is reported once with a final status, every moved user is in its
    group, no report cell is a live formula; or the whole job is refused in one line."""
    monkeypatch.setenv("WECHAT_APPID", "wxsandbox0000000001")
    monkeypatch.setenv("WECHAT_APPSECRET", SECRET)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)
    n = next(_runs)
    path = _write_table(tmp_path / f"e2e{n}{suffix}", table)
    run_dir = tmp_path / f"run{n}"
    spec = JobSpec(input=path, name="e2e", api_base=sandbox.base_url, out=run_dir, rate=0.0,
                   create_groups=True, timeout=5.0)
    try:
        result, refusal = asyncio.run(run_job(spec, RunOptions(), QuietEvents())), ""
    except BatchmoveError as exc:
        result, refusal = None, exc.message
    if result is None:
        assert "\n" not in refusal
        assert SECRET not in refusal
        return
    assert result.exit_code in (0, 1), result.message
    report = report_rows(run_dir)
    assert [int(r["row"]) for r in report] == _non_blank(table)
    assert {r["status"] for r in report} <= FINAL_STATUSES
    ids = {g.name: g.id for g in list(sandbox.state.groups.values())}
    for r in report:
        assert not any(_is_live_formula(v) for v in r.values() if v), r
        if r["status"] == "moved":
            openid, target = (c.strip(BLANK) for c in table[int(r["row"]) - 2][:2])
            assert sandbox.state.members[openid] == ids[target]
