"""Files opened by spreadsheets: what batchmove writes, opened in LibreOffice Calc itself.

Figures: a run of 300 users whose input carries formulas everywhere a spreadsheet might run
one: a header `=HYPERLINK("http://evil.example","x")`, cells `=1+2`, `@SUM(A1:A9)`,
`+cmd|' /C calc'!A0`, `-2+3*cmd|' /C calc'!A0`, a target group `-负号组`, and invalid rows (an
openid `=cmd|' /C calc'!A0`, two openids of no follower) so that failed.csv has rows. Its
report.csv, report.xlsx, failed.csv and rollback.csv, and an export of the account (CSV and
XLSX), are converted by `soffice --headless --convert-to xlsx` (CSV read as UTF-8 with
formulas evaluated and special numbers detected, the strictest import), and the converted
workbooks read with openpyxl: no cell is a formula, and every openid reads back as the text
batchmove wrote (not a number, not a date). Skipped, saying why, where `soffice` is missing
(CI installs Debian's `libreoffice-calc-nogui`). About 30 s, most of it LibreOffice starting.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import SECRET, ThreadedSandbox, batchmove, write_csv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 51
FOLLOWERS = sandbox_openids(400, SEED)
EVIL_HEADER = '=HYPERLINK("http://evil.example","x")'
FORMULAS = ["=1+2", "@SUM(A1:A9)", "+cmd|' /C calc'!A0", "-2+3*cmd|' /C calc'!A0", "-5"]
INVALID_OPENID = "=cmd|' /C calc'!A0"
STRANGERS = ["oNotAFollowerOfThisAccount01", "oNotAFollowerOfThisAccount02"]
OPENID = re.compile(r"o[A-Za-z0-9_-]{27}")
#: UTF-8, comma, double quotes, from line 1, standard columns, quoted fields as text off,
#: detect special numbers on, ..., evaluate formulas on: as eager as Calc can be
CSV_IMPORT = "Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1,true"


@pytest.fixture(scope="module")
def soffice() -> str:
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        pytest.skip("LibreOffice (soffice) is not installed: .ci/run installs Debian's "
                    "libreoffice-calc-nogui")
    return found


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    config = SandboxConfig(users=len(FOLLOWERS), seed=SEED, secret=SECRET, groups=["老客户"])
    with ThreadedSandbox(config) as running:
        yield running


def _input(tmp: Path) -> Path:
    rows = []
    for i, openid in enumerate(FOLLOWERS[:300]):
        group = "-负号组" if i % 3 == 0 else "老客户"
        rows.append([openid, group, FORMULAS[i % len(FORMULAS)], f"note {i}"])
    rows += [[INVALID_OPENID, "老客户", "=1+2", "bad"]]  # refused: invalid
    rows += [[o, "老客户", "=1+2", "not a follower"] for o in STRANGERS]  # refused by WeChat
    return write_csv(tmp / "in.csv", ["openid", "group_name", EVIL_HEADER, "note"], rows)


@pytest.fixture(scope="module")
def written(sandbox: ThreadedSandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.csv, report.xlsx, failed.csv, rollback.csv and two exports, in one folder."""
    tmp = tmp_path_factory.mktemp("sheets")
    run_dir = tmp / "run"
    done = batchmove("run", str(_input(tmp)), "--api-base", sandbox.base_url, "--out",
                     str(run_dir), "--yes", "--create-groups", "--rate", "0")
    assert done.returncode == 1, done.output[-2000:]  # the invalid rows
    undo = batchmove("rollback", str(run_dir))
    assert undo.returncode == 0, undo.output
    files = tmp / "files"
    files.mkdir()
    for name in ("report.csv", "report.xlsx", "failed.csv", "rollback.csv"):
        shutil.copyfile(run_dir / name, files / name)
    for name in ("export.csv", "export.xlsx"):
        got = batchmove("export", "--out", str(files / name), "--api-base", sandbox.base_url,
                        "--rate", "0")
        assert got.returncode == 0, got.output
    return files


def _convert(soffice: str, files: list[Path], out: Path, infilter: str | None) -> None:
    profile = out / "profile"  # our own: never a running LibreOffice's
    args = [soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore"]
    if infilter:
        args.append(f"--infilter={infilter}")
    done = subprocess.run([*args, "--convert-to", "xlsx", "--outdir", str(out), *map(str, files)],
                          capture_output=True, text=True, timeout=300, check=False)
    for path in files:
        assert (out / f"{path.stem}.xlsx").exists(), (done.stdout, done.stderr)


@pytest.fixture(scope="module")
def opened(soffice: str, written: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, list[list[openpyxl.cell.cell.Cell]]]:
    """Every file as LibreOffice read it: {file name: rows of cells}."""
    out = tmp_path_factory.mktemp("calc")
    csvs = sorted(written.glob("*.csv"))
    _convert(soffice, csvs, out / "from_csv", CSV_IMPORT)
    _convert(soffice, sorted(written.glob("*.xlsx")), out / "from_xlsx", None)
    sheets = {}
    for folder, suffix in (("from_csv", ".csv"), ("from_xlsx", ".xlsx")):
        for path in sorted((out / folder).glob("*.xlsx")):
            book = openpyxl.load_workbook(path)
            sheets[path.stem + suffix] = [list(row) for row in book.worksheets[0].iter_rows()]
    return sheets


NAMES = ["report.csv", "report.xlsx", "failed.csv", "rollback.csv", "export.csv", "export.xlsx"]


@pytest.mark.parametrize("name", NAMES)
def test_no_cell_is_a_formula(opened: dict[str, list[list[openpyxl.cell.cell.Cell]]],
                              name: str) -> None:
    rows = opened[name]
    assert len(rows) > 1
    formulas = [c.coordinate + ": " + str(c.value) for row in rows for c in row
                if c.data_type == "f" or (isinstance(c.value, str) and c.value.startswith("="))]
    assert not formulas, formulas[:10]


def _written_openids(path: Path) -> list[str]:
    if path.suffix == ".xlsx":
        sheet = openpyxl.load_workbook(path, read_only=True).worksheets[0]
        return [str(row[0]) for row in sheet.iter_rows(min_row=2, values_only=True)]
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [row[0] for row in list(csv.reader(f))[1:]]


@pytest.mark.parametrize("name", NAMES)
def test_every_openid_reads_back_as_the_same_text(
        opened: dict[str, list[list[openpyxl.cell.cell.Cell]]], written: Path,
        name: str) -> None:
    rows = opened[name]
    assert rows[0][0].value == "openid"
    cells = [row[0] for row in rows[1:]]
    expected = _written_openids(written / name)
    assert [c.value for c in cells] == expected
    assert {c.data_type for c in cells} == {"s"}
    assert sum(1 for o in expected if OPENID.fullmatch(o)) >= 2  # not only the refused rows


def test_the_evil_header_is_text_in_every_file_that_has_it(
        opened: dict[str, list[list[openpyxl.cell.cell.Cell]]]) -> None:
    for name in ("report.csv", "report.xlsx", "failed.csv"):
        header = [c.value for c in opened[name][0]]
        assert "'" + EVIL_HEADER in header, (name, header)
