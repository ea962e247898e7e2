"""xlsxrows: a chunk's columns rendered by template write exactly what cell by cell writes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchmove.output.xlsxrows import CELL_UNITS, _cell_xml, _shape, rows_xml

LETTERS = ["A", "B", "C", "D"]
Row = Sequence[str | int | None]


def cell_by_cell(chunk: list[Row], first: int, letters: list[str]) -> str:
    return "".join(
        f'<row r="{n}">'
        + "".join(_cell_xml(f"{letter}{n}", value)
                  for letter, value in zip(letters, cells, strict=False))
        + "</row>"
        for n, cells in enumerate(chunk, start=first))


tricky = st.sampled_from(["", " lead", "trail ", "a&b", "<", "_x0041_", "ok_x", "\t", "\r",
                          "\ufffe", "分组07", "x" * (CELL_UNITS // 2 + 1), "=1+1", "0"])
cells = st.one_of(st.none(), st.integers(-(2**60), 2**60), st.text(max_size=12), tricky)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 4).flatmap(lambda w: st.tuples(
    st.just(w), st.lists(st.lists(cells, min_size=0, max_size=w), min_size=1, max_size=6))),
    st.integers(2, 1_048_000))
def test_templates_write_what_cell_by_cell_writes(shaped: tuple[int, list[list[str | int | None]]],
                                                  first: int) -> None:
    width, chunk = shaped
    assert rows_xml(chunk, first, LETTERS[:width]) == cell_by_cell(chunk, first, LETTERS[:width])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.integers(0, 10**9),
                          st.sampled_from(["moved", "failed"]), st.none()), min_size=1,
                max_size=20))
def test_uniform_columns(chunk: list[Row]) -> None:
    assert rows_xml(chunk, 2, LETTERS) == cell_by_cell(chunk, 2, LETTERS)


@pytest.mark.parametrize(("column", "shape"), [
    (("oABC", "分组", "moved"), "text"),
    ((1, 0, -5), "number"),
    ((None, "", None), "empty"),
    (("a", ""), "mixed"),
    ((1, None), "mixed"),
    ((True, 1), "mixed"),
    (("a_x0041_b",), "mixed"),
    (("a_", "x0041_"), "mixed"),  # across two cells: rendered one by one, which is exact too
    (("ok_x", "b"), "text"),
    (("a ", "b"), "mixed"),
    (("a", " b"), "mixed"),
    (("a&b",), "mixed"),
    (("x" * (CELL_UNITS // 2 + 1),), "mixed"),
])
def test_shapes(column: tuple[str | int | None, ...], shape: str) -> None:
    assert _shape(column) == shape


def test_rows_longer_than_the_header_and_odd_types_are_errors() -> None:
    with pytest.raises(ValueError, match="row 3 has 3 cells; the header has 2"):
        rows_xml([["a", "b"], ["a", "b", "c"]], 2, LETTERS[:2])
    with pytest.raises(TypeError, match="cell B2: float is not str, int or None"):
        rows_xml([["a", 1.5]], 2, LETTERS[:2])
