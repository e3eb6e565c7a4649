"""CSV as the exports write it: cells safe to open in a spreadsheet, and safe file names.

Pure: no I/O.

**Formula injection.** A spreadsheet runs a cell that begins with ``=``, ``+``, ``-``
or ``@`` as a formula (and some treat a leading tab or carriage return the same
way). Exported cells carry text from anyone on the internet (comments, user ids,
content ids), so a text cell that begins with one of those characters is written
with a single quote in front of it (the OWASP rule): the spreadsheet shows the
text, it never evaluates it. Numbers stay numbers: a cell holding one of our own
numbers is written as is, negative ones included, and so is a text that is a
plain decimal number (``-12``, ``+3.5``, ``1e-3``), which no spreadsheet runs.

**File names.** ``Content-Disposition`` carries the name twice (RFC 6266): an
ASCII ``filename`` made of letters, digits, ``.``, ``_`` and ``-`` only (any
other character becomes ``_``), and ``filename*`` (RFC 5987), the name in UTF-8,
percent-encoded, with the same ASCII rule and every other printable character
kept. Neither can carry a quote, a semicolon or a line break, so a name cannot
end the header's parameter and add another.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ASCII_SAFE = re.compile(r"[A-Za-z0-9._-]")
MAX_NAME_CHARS = 120


def safe_cell(value: Any) -> Any:
    """One cell: lists joined by ``;``, None empty, text that a spreadsheet would run
    as a formula prefixed with ``'``; numbers unchanged."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        return value
    text = ";".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    return neutralised(text)


def neutralised(text: str) -> str:
    """``text``, with ``'`` in front when a spreadsheet would evaluate it."""
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A header of ``columns`` and one line per row (CRLF line ends, as RFC 4180 has it)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralised(c) for c in columns])
    for row in rows:
        writer.writerow([safe_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _file_char(char: str, *, ascii_only: bool) -> str:
    if char.isascii():
        return char if _ASCII_SAFE.fullmatch(char) else "_"
    if ascii_only:
        return "_"
    # Control, format, private-use and separator characters (C*, Z*) never reach a name.
    return char if unicodedata.category(char)[0] not in "CZ" else "_"


def attachment(name: str, extension: str = "csv") -> str:
    """The ``Content-Disposition`` value of a download named ``name.extension``."""
    stem = name[:MAX_NAME_CHARS]
    ascii_name = "".join(_file_char(c, ascii_only=True) for c in stem)
    unicode_name = "".join(_file_char(c, ascii_only=False) for c in stem)
    encoded = quote(f"{unicode_name}.{extension}", safe="")
    return f"attachment; filename=\"{ascii_name}.{extension}\"; filename*=UTF-8''{encoded}"
