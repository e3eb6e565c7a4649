"""Small helpers over backend DSNs (``scheme://user:password@host/path?params``)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse


def redacted(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    parsed = urlparse(dsn)
    if not parsed.password:
        return dsn
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return urlunparse(parsed._replace(netloc=netloc))


def split_param(dsn: str, name: str) -> tuple[str, str | None]:
    """(the DSN without query parameter ``name``, its last value or None): for the
    parameters Hypemeter reads itself, which the drivers do not know."""
    parsed = urlparse(dsn)
    params = parse_qsl(parsed.query, keep_blank_values=True)
    found = [value for key, value in params if key == name]
    rest = [(key, value) for key, value in params if key != name]
    return urlunparse(parsed._replace(query=urlencode(rest))), (found[-1] if found else None)
