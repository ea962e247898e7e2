"""Loader properties: any bytes give rows or one InputError; text survives a CSV round trip."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchmove.errors import InputError
from batchmove.intake.loader import open_input
from batchmove.intake.rowcheck import BLANK
from batchmove.models import JobSpec

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
A = "oAAAAAAAAAAAAAAAAAAAAAAAAAAA"

HEADS = [b"", b"openid,group\n", b"openid;groupid\r\n", b"\xef\xbb\xbfopenid\tgroup_name\n",
         b"\xff\xfeo\x00p\x00", b"PK\x03\x04", b'openid,group\n"unclosed', b"\n\n,,\n"]


def read_all(path: Path) -> str:
    """Empty when the file loads, else the InputError's message (anything else escapes)."""
    try:
        source = open_input(JobSpec(input=path))
        rows = [row for chunk in source.rows(3) for row in chunk]
    except InputError as exc:
        return exc.message
    assert all(row.row >= 2 for row in rows)
    return ""


@pytest.mark.parametrize("suffix", [".csv", ".txt", ".xlsx"])
@SETTINGS
@given(head=st.sampled_from(HEADS), tail=st.binary(max_size=300))
def test_any_bytes_give_rows_or_input_error(tmp_path: Path, suffix: str, head: bytes,
                                            tail: bytes) -> None:
    path = tmp_path / f"in{suffix}"
    path.write_bytes(head + tail)
    assert "\n" not in read_all(path)


@SETTINGS
@given(tail=st.text(max_size=200))
def test_any_text_after_a_header_gives_rows_or_input_error(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"openid,group,note\n{A},x,{tail}", encoding="utf-8", errors="replace")
    assert "\n" not in read_all(path)


def _also_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# printable text, as a spreadsheet would hold it (control characters make the file "binary")
CELL = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufeff")
               | st.sampled_from(" \t\u3000\xa0\n"), max_size=12)


@SETTINGS
@given(table=st.lists(st.lists(CELL, min_size=3, max_size=3), max_size=12),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "gb18030"]),
       delimiter=st.sampled_from([",", ";", "\t"]))
def test_text_round_trips_through_csv(tmp_path: Path, table: list[list[str]], encoding: str,
                                      delimiter: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["openid", "group_name", "note"])
    writer.writerows(table)
    path = tmp_path / "in.csv"
    data = buffer.getvalue().encode(encoding)
    # bytes that are valid UTF-8 too cannot tell their encoding (GB18030's 目 is UTF-8's Ŀ):
    # the loader reads them as UTF-8 (docs/inputs.md); the property holds for the rest
    assume(encoding != "gb18030" or not _also_utf8(data))
    path.write_bytes(data)
    source = open_input(JobSpec(input=path))
    expected = [(n, [cell.strip(BLANK) for cell in cells]) for n, cells in
                enumerate(table, start=2) if any(cell.strip(BLANK) for cell in cells)]
    if not expected:  # no data row: refused as a whole (exit 2), not an empty run
        with pytest.raises(InputError, match="no data rows"):
            [row for chunk in source.rows(4) for row in chunk]
        return
    rows = [row for chunk in source.rows(4) for row in chunk]
    assert [(r.row, [r.openid, r.target, *(r.extra or ())]) for r in rows] == expected
    assert source.stats.blank == len(table) - len(expected)
