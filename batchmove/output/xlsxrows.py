"""The sheet's rows as SpreadsheetML text: the hot path of `xlsxfast`, escaped as Excel does.

Text is escaped as Excel does it: `&<>` as XML entities; characters XML 1.0 forbids, and CR (an
XML parser would read it as LF), as `_xHHHH_`; a "_" that would otherwise start such an escape
as `_x005F_`; lone surrogates become U+FFFD; text past Excel's cell limit of 32,767 UTF-16 units
is cut there (never inside a surrogate pair). Cells are `int`, `str` or None (no cell); any
other type is a TypeError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["CELL_UNITS", "header_xml", "rows_xml"]

CELL_UNITS = 32_767  # Excel's cell limit, in UTF-16 code units
_SURROGATE = re.compile("[\ud800-\udfff]")
_FORBIDDEN = r"\x00-\x08\x0b-\x1f\ufffe\uffff"  # by XML 1.0, plus CR (a parser turns it into LF)
# Each such character, and each "_" Excel would read as the start of an escape once they are
# escaped (overlapping and next to a forbidden character too), becomes _xHHHH_.
_EXCEL_ESCAPE = re.compile(f"_(?=x[0-9A-Fa-f]{{4}}[_{_FORBIDDEN}])|[{_FORBIDDEN}]")
# what _EXCEL_ESCAPE finds in printable text (which holds no forbidden character)
_PRINTABLE_ESCAPE = re.compile("_x[0-9A-Fa-f]{4}_")


def header_xml(header: Sequence[str], letters: Sequence[str]) -> str:
    cells = "".join(
        f'<c r="{col}1" s="1" t="inlineStr"><is>{_text_xml(name)}</is></c>' if name
        else f'<c r="{col}1" s="1"/>'
        for col, name in zip(letters, header, strict=True))
    return f'<row r="1">{cells}</row>'


def rows_xml(chunk: list[Sequence[str | int | None]], first: int, letters: Sequence[str]) -> str:
    """The rows numbered from first: the hot path, column by column.

    A column whose cells are all plain text (printable, no space at either end, no `&<>`,
    nothing Excel would unescape, too short to need cutting), all exact ints, or all empty
    has one shape for the whole chunk: each row is then a single `%` of one template with
    its row number and cells (100,000 report rows: 0.28 s, cell by cell 0.47 s). A column
    with any other cell renders each cell of the chunk on its own (`_cell_xml`), into a `%s`.
    """
    width = len(letters)
    if len(set(map(len, chunk))) > 1 or (chunk and len(chunk[0]) != width):
        chunk = [_padded(cells, width, number) for number, cells in enumerate(chunk, first)]
    numbers = list(map(str, range(first, first + len(chunk))))
    pieces: list[str] = ['<row r="%s">']
    args: list[Sequence[object]] = [numbers]
    for letter, column in zip(letters, zip(*chunk, strict=True), strict=False):
        shape = _shape(column)
        if shape == _TEXT:
            pieces.append(f'<c r="{letter}%s" t="inlineStr"><is><t>%s</t></is></c>')
        elif shape == _NUMBER:
            pieces.append(f'<c r="{letter}%s"><v>%s</v></c>')
        elif shape == _MIXED:
            pieces.append("%s")
            args.append([_cell_xml(letter + r, v) for r, v in zip(numbers, column, strict=True)])
            continue
        else:  # _EMPTY
            continue
        args += [numbers, column]
    pieces.append("</row>")
    return "".join(map("".join(pieces).__mod__, zip(*args, strict=True)))


_TEXT, _NUMBER, _EMPTY, _MIXED = "text", "number", "empty", "mixed"


def _padded(cells: Sequence[str | int | None], width: int,
            number: int) -> Sequence[str | int | None]:
    """A short row's missing cells are empty; a long row is an error."""
    if len(cells) > width:
        raise ValueError(f"row {number} has {len(cells)} cells; the header has {width}")
    return (*cells, *(None,) * (width - len(cells)))


def _shape(column: tuple[str | int | None, ...]) -> str:
    """How every cell of a chunk's column renders: as plain text, as a number, not at all,
    or each on its own (`_MIXED`); a few C-level scans of the column."""
    kinds = set(map(type, column))
    if kinds == {int}:
        return _NUMBER
    if not kinds <= {str, type(None)}:
        return _MIXED
    if None in column or "" in column:
        return _MIXED if any(column) else _EMPTY
    texts: tuple[str, ...] = column  # type: ignore[assignment]
    joined = "".join(texts)
    lines = "\n".join(texts)  # "\n" is not printable: no text below holds one
    plain = (joined.isprintable() and "&" not in joined and "<" not in joined
             and ">" not in joined and not _PRINTABLE_ESCAPE.search(joined)
             and max(map(len, texts)) <= CELL_UNITS // 2
             and lines[0] != " " and lines[-1] != " " and " \n" not in lines
             and "\n " not in lines)
    return _TEXT if plain else _MIXED


def _cell_xml(ref: str, value: object) -> str:
    """One cell ("" for an empty one), exactly as a `_TEXT` or `_NUMBER` column writes it."""
    if value.__class__ is str:
        text = str(value)
        if not text:
            return ""
        if (text.isprintable() and text[0] != " " and text[-1] != " "
                and len(text) <= CELL_UNITS // 2 and "&" not in text
                and "<" not in text and ">" not in text and "_x" not in text):
            return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'
        return f'<c r="{ref}" t="inlineStr"><is>{_text_xml(text)}</is></c>'
    if value.__class__ is int:
        return f'<c r="{ref}"><v>{value}</v></c>'
    return "" if value is None else _odd_cell_xml(ref, value)


def _odd_cell_xml(ref: str, value: object) -> str:
    """Subclasses of str and int (not bool); anything else is a TypeError."""
    if isinstance(value, str):
        return f'<c r="{ref}" t="inlineStr"><is>{_text_xml(str(value))}</is></c>' if value else ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<c r="{ref}"><v>{int(value)}</v></c>'
    raise TypeError(f"cell {ref}: {type(value).__name__} is not str, int or None")


def _text_xml(text: str) -> str:
    """A `<t>` element Excel reads back as `text` (truncated to its cell limit)."""
    text = _truncate(_SURROGATE.sub("\ufffd", text))
    text = _EXCEL_ESCAPE.sub(_excel_escape, text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if text != text.strip(" \t\n"):
        return f'<t xml:space="preserve">{text}</t>'
    return f"<t>{text}</t>"


def _excel_escape(match: re.Match[str]) -> str:
    return f"_x{ord(match.group()):04X}_"  # "_" -> _x005F_


def _truncate(text: str) -> str:
    """At most CELL_UNITS UTF-16 code units, never splitting a surrogate pair."""
    if len(text) <= CELL_UNITS // 2:
        return text
    units = text.encode("utf-16-le")
    if len(units) <= 2 * CELL_UNITS:
        return text
    end = 2 * CELL_UNITS
    if 0xD8 <= units[end - 1] <= 0xDB:  # the last unit kept is a high surrogate
        end -= 2
    return units[:end].decode("utf-16-le")
