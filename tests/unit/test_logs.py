"""Logs never hold a credential: secret query parameters and authorization credentials
are redacted, in messages, extras and tracebacks, and URL-writing libraries are kept
at WARNING."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hypemeter import logs
from hypemeter.logs import REDACTED, configure_logging, protect_logs, redact

SECRET = "s3cr3t-IGQVJ-credential"


@pytest.mark.parametrize(
    "text",
    [
        f"GET https://graph.instagram.com/refresh_access_token?grant_type=ig_refresh_token&access_token={SECRET}",
        f"GET https://www.googleapis.com/youtube/v3/videos?part=statistics&id=a&key={SECRET}",
        f"client_key=ck&client_secret={SECRET}&grant_type=refresh_token&refresh_token={SECRET}",
        f"/v1/webhooks/instagram/con_1?hub.mode=subscribe&hub.verify_token={SECRET}",
        f"redirect?code={SECRET}&state=x",
        f"Authorization: Bearer {SECRET}",
        f"headers={{'X-Goog-Api-Key': '{SECRET}'}}",
        f"x-hub-signature=sha1={SECRET}",
    ],
)
def test_secrets_are_redacted(text: str) -> None:
    clean = redact(text)
    assert SECRET not in clean
    assert REDACTED in clean


def test_what_is_not_secret_is_left_alone() -> None:
    text = "GET /youtube/v3/videos?part=statistics&id=abc,def&hub.challenge=42 200"
    assert redact(text) == text


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the logging configuration back as the test session had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.THIRD_PARTY}
    access = logging.getLogger("uvicorn.access")
    disabled = access.disabled
    yield
    root.handlers, root.level = handlers, level
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)
    access.disabled = disabled


def test_a_library_record_is_redacted_whoever_handles_it(
    restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    protect_logs()
    protect_logs()  # idempotent
    assert logging.getLogger("httpx").filters.count(logs._REDACTOR) == 1
    caplog.set_level(logging.DEBUG, logger="httpx")
    logging.getLogger("httpx").info(
        'HTTP Request: %s %s "%s %d %s"',
        "GET",
        f"http://127.0.0.1/1/insights?metric=likes&access_token={SECRET}",
        "HTTP/1.1",
        200,
        "OK",
    )
    (record,) = [r for r in caplog.records if r.name == "httpx"]
    assert SECRET not in record.getMessage()
    assert "access_token=[redacted]" in record.getMessage()


def test_the_process_log_has_no_secret_in_messages_extras_or_tracebacks(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("debug")
    ours = logging.getLogger("hypemeter.test")
    ours.info("calling %s", f"https://x/y?access_token={SECRET}", extra={"url": f"?key={SECRET}"})
    try:
        raise RuntimeError(f"failed: https://x/y?client_secret={SECRET}")
    except RuntimeError:
        ours.exception("a call failed")
    logging.getLogger("httpx").info("HTTP Request: GET https://x/y?key=%s", SECRET)
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert SECRET not in stream.getvalue()
    assert [line["message"] for line in lines] == [
        "calling https://x/y?access_token=[redacted]",
        "a call failed",
    ]
    assert lines[0]["url"] == "?key=[redacted]"
    assert "client_secret=[redacted]" in lines[1]["exc_info"]
    # Libraries that write URLs and headers log warnings and errors only.
    for name in ("httpx", "httpcore", "httpcore.http11", "asyncio", "websockets"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
