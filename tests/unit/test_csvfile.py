"""CSV cells safe to open in a spreadsheet, and Content-Disposition file names."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypemeter.csvfile import attachment, neutralised, safe_cell, to_csv


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-", "'-"),
        ("love it = great", "love it = great"),  # only the first character matters
        ("-12", "-12"),  # text that is a plain number runs nothing
        ("+3.5", "+3.5"),
        ("-1e-3", "-1e-3"),
        ("", ""),
    ],
)
def test_text_that_a_spreadsheet_would_run_gets_a_quote(text: str, written: str) -> None:
    assert neutralised(text) == written


def test_numbers_stay_numbers_and_lists_are_checked_once_joined() -> None:
    assert safe_cell(-5) == -5
    assert safe_cell(-0.25) == -0.25
    assert safe_cell(None) == ""
    assert safe_cell(["@team", "b"]) == "'@team;b"
    assert safe_cell(["a", "=b"]) == "a;=b"  # the cell begins with "a"


def test_a_csv_quotes_formulas_and_keeps_negative_numbers() -> None:
    text = to_csv(
        ["user_id", "value", "tags"],
        [{"user_id": "=cmd()", "value": -3, "tags": ["+x"]}, {"user_id": "u1", "value": 2}],
    )
    assert list(csv.reader(io.StringIO(text))) == [
        ["user_id", "value", "tags"],
        ["'=cmd()", "-3", "'+x"],
        ["u1", "2", ""],
    ]


@given(st.text())
def test_no_text_cell_can_begin_a_formula(text: str) -> None:
    written = neutralised(text)
    assert written == text or written == "'" + text
    if written.startswith(("=", "+", "-", "@", "\t", "\r")):
        float(written)  # only plain numbers are left alone


PARAMETER = re.compile(r'^attachment; filename="([A-Za-z0-9._-]+)"; filename\*=UTF-8\'\'(\S+)$')


def test_a_plain_name_is_kept() -> None:
    value = attachment("influencer-inf-a")
    assert value == (
        "attachment; filename=\"influencer-inf-a.csv\"; filename*=UTF-8''influencer-inf-a.csv"
    )


def test_a_quote_in_a_name_cannot_add_a_second_file_name() -> None:
    value = attachment('influencer-a";filename="x.html')
    found = PARAMETER.match(value)
    assert found is not None, value
    assert found[1] == "influencer-a__filename__x.html.csv"
    assert value.count("filename=") == 1 and value.count('"') == 2


def test_a_unicode_name_keeps_its_letters_in_filename_star() -> None:
    value = attachment("influencer-☃")
    value.encode("latin-1")  # a header must be Latin-1: it is pure ASCII
    found = PARAMETER.match(value)
    assert found is not None, value
    assert found[1] == "influencer-_.csv"
    assert found[2] == "influencer-%E2%98%83.csv"


@given(st.text())
def test_every_name_makes_one_ascii_header_with_two_parameters(name: str) -> None:
    value = attachment(name)
    assert value.isascii() and "\r" not in value and "\n" not in value
    assert PARAMETER.match(value), value
