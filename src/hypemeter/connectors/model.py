"""Connectors and dead letters: what a tenant configures, and what could not be counted.

Pure: no I/O. A connector is stored as a document of the tenant's registry
(kind "connector"), secrets included; its view never shows them. A dead letter
keeps a whole verified delivery (headers, raw body, time of receipt) with the
reasons it could not be counted in full: replaying it processes the delivery
again exactly as it was received, so signatures and timestamps still verify and
the events already counted are recognised by their ids.
"""

from __future__ import annotations

import base64
import secrets as random_source
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from hypemeter.connectors.polling import parse_curve
from hypemeter.connectors.polling.tokens import (
    EXPIRES_AT,
    MAX_LIFETIME_S,
    REFRESH_EXPIRES_AT,
    format_time,
    in_time_window,
    parse_time_us,
)
from hypemeter.connectors.webhooks import ADAPTERS, MappedEvent
from hypemeter.errors import InvalidInput
from hypemeter.events.model import EventIn, from_epoch_us
from hypemeter.registry.model import RegistryRecord, keys_of

CONNECTOR = "connector"
DEAD_LETTER = "dead_letter"
PLATFORMS: tuple[str, ...] = tuple(ADAPTERS)
# Headers a delivery keeps for its replay: the platforms' own, never credentials.
KEPT_HEADER_PREFIXES = ("x-hub-", "x-twitter-", "x-li-", "tiktok-", "twitch-", "content-type")
MAX_REASONS = 50


class Connector(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    platform: str
    secrets: dict[str, str]
    credentials: tuple[dict[str, Any], ...] = ()
    poll: dict[str, Any] = {}
    created_at: str = ""
    disabled: str | None = None  # why the platform revoked our access, if it did


class Health(msgspec.Struct, frozen=True):
    """What one process saw of a connector since it started."""

    deliveries: int = 0
    refused: int = 0
    dead_letters: int = 0
    replays: int = 0  # deliveries already processed, answered 2xx and dropped
    last_success: str | None = None
    last_error: str | None = None  # in Hypemeter's words
    last_error_detail: str | None = None  # with what the delivery held: admins only
    last_error_at: str | None = None


class DeadLetter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    connector_id: str
    platform: str
    received_us: int
    reasons: tuple[str, ...]
    headers: dict[str, str]
    body_b64: str
    state: str = "open"  # "open", or "resolved" once a replay counted everything
    replays: int = 0
    # The reasons without the excerpts of the payload they quote: what read keys see.
    summaries: tuple[str, ...] = ()

    def body(self) -> bytes:
        return base64.b64decode(self.body_b64)


def new_connector_id() -> str:
    return "con_" + random_source.token_hex(8)


def new_letter_id(received_us: int) -> str:
    """Ids that sort by time of receipt."""
    return f"dl_{received_us:016x}{random_source.token_hex(4)}"


def missing_secrets(platform: str, given: Mapping[str, str]) -> list[str]:
    return [name for name in ADAPTERS[platform].secret_names if not given.get(name)]


def callback_url(connector: Connector) -> str:
    return f"/v1/webhooks/{connector.platform}/{connector.id}"


def connector_view(
    connector: Connector, health: Health, polling: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The connector as the API shows it: secret names, never their values, nor any
    credential's."""
    return {
        "id": connector.id,
        "platform": connector.platform,
        "callback_url": callback_url(connector),
        "secrets": sorted(connector.secrets),
        "credentials": len(connector.credentials),
        "poll": connector.poll,
        "created_at": connector.created_at,
        "disabled": connector.disabled,
        "health": msgspec.to_builtins(health),
        "polling": dict(polling) if polling is not None else None,
    }


def without_details(view: Any) -> Any:
    """``view`` without what only admins see: every ``*_detail`` member, at any depth
    (what a platform answered, excerpts of what a delivery held)."""
    if isinstance(view, dict):
        return {k: without_details(v) for k, v in view.items() if not k.endswith("_detail")}
    if isinstance(view, list):
        return [without_details(item) for item in view]
    return view


def letter_summary(letter: DeadLetter, *, admin: bool) -> dict[str, Any]:
    """An open dead letter as the ingestion health shows it: its reasons to admins, the
    reasons without payload excerpts to everyone else."""
    return {
        "id": letter.id,
        "connector_id": letter.connector_id,
        "platform": letter.platform,
        "reasons": list(letter.reasons if admin else letter.summaries),
    }


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "connector_id": letter.connector_id,
        "platform": letter.platform,
        "received_us": letter.received_us,
        "reasons": list(letter.reasons),
        "state": letter.state,
        "replays": letter.replays,
        "body": letter.body().decode("utf-8", errors="replace"),
    }


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith(KEPT_HEADER_PREFIXES)}


def connector_record(connector: Connector, updated_us: int) -> RegistryRecord:
    return RegistryRecord(
        kind=CONNECTOR,
        entity_id=connector.id,
        doc=msgspec.json.encode(connector).decode(),
        keys=keys_of([("platform", connector.platform)]),
        search=connector.id,
        updated_us=updated_us,
    )


def letter_record(letter: DeadLetter, updated_us: int) -> RegistryRecord:
    return RegistryRecord(
        kind=DEAD_LETTER,
        entity_id=letter.id,
        doc=msgspec.json.encode(letter).decode(),
        keys=keys_of(
            [
                ("connector_id", letter.connector_id),
                ("platform", letter.platform),
                ("state", letter.state),
            ]
        ),
        search=letter.id,
        updated_us=updated_us,
    )


def connector_of(record: RegistryRecord) -> Connector:
    return msgspec.json.decode(record.doc, type=Connector)


def letter_of(record: RegistryRecord) -> DeadLetter:
    return msgspec.json.decode(record.doc, type=DeadLetter)


def to_event(platform: str, mapped: MappedEvent) -> EventIn:
    """A mapped platform event in the one schema; the registry names its influencer."""
    return EventIn(
        event_id=mapped.event_id,
        platform=platform,
        metric=mapped.metric,
        value=mapped.value,
        kind=mapped.kind,
        ts=from_epoch_us(mapped.ts_us),
        content_id=mapped.content_id,
        account_id=mapped.account_id,
        user_id=mapped.user_id,
        text=mapped.text,
        properties=dict(mapped.properties) if mapped.properties else None,
    )


POLL_LIMITS = ("capacity", "refill_per_s", "window_s", "window_calls", "daily_units")
POLL_COUNTS = ("capacity", "window_calls", "daily_units")  # whole numbers, at least 1
POLL_KEYS = (*POLL_LIMITS, "enabled", "curve")
# The secret each polled platform's credentials carry.
CREDENTIAL_KEYS = {
    "instagram": "access_token",
    "youtube": "api_key",
    "tiktok": "access_token",
    "x": "bearer_token",
}


def check_polling(
    platform: str, credentials: Sequence[Mapping[str, Any]], poll: Mapping[str, Any]
) -> None:
    """Raise InvalidInput naming the first bad credential or polling setting."""
    _check_credentials(platform, credentials)
    for name in poll:
        if name not in POLL_KEYS:
            allowed = ", ".join(POLL_KEYS)
            raise InvalidInput(f"unknown polling setting; allowed: {allowed}", field=f"poll.{name}")
    for name in POLL_LIMITS:
        if name in poll and not _positive(poll[name], whole=name in POLL_COUNTS):
            kind = "a whole number of at least 1" if name in POLL_COUNTS else "a positive number"
            raise InvalidInput(f"must be {kind}", field=f"poll.{name}")
    if "enabled" in poll and not isinstance(poll["enabled"], bool):
        raise InvalidInput("must be true or false", field="poll.enabled")
    if "curve" in poll:
        try:
            parse_curve(poll["curve"])
        except ValueError as exc:
            raise InvalidInput(str(exc), field="poll.curve") from exc


def _check_credentials(platform: str, credentials: Sequence[Mapping[str, Any]]) -> None:
    needed = CREDENTIAL_KEYS.get(platform)
    for index, credential in enumerate(credentials):
        strings = {k: v for k, v in credential.items() if k not in LIFETIMES}
        if not credential or not all(isinstance(v, str) and v for v in strings.values()):
            raise InvalidInput(
                'a credential is an object of non-empty strings, e.g. {"access_token": ...}',
                field=f"credentials.{index}",
            )
        if needed is not None and needed not in credential:
            raise InvalidInput(
                f"{platform} credentials carry {needed!r}", field=f"credentials.{index}"
            )
        _check_expiry(credential, f"credentials.{index}")


# Lifetimes a credential may be given in (seconds from now, as the platforms' token
# answers give them), and the times they become.
LIFETIMES = {"expires_in": EXPIRES_AT, "refresh_expires_in": REFRESH_EXPIRES_AT}


def _check_expiry(credential: Mapping[str, Any], where: str) -> None:
    for name in (EXPIRES_AT, REFRESH_EXPIRES_AT):
        if name not in credential:
            continue
        moment = parse_time_us(credential[name])
        if moment is None:
            raise InvalidInput("must be an RFC 3339 time with an offset", field=f"{where}.{name}")
        if not in_time_window(moment):
            raise InvalidInput(
                "must be between 1970-01-01 and 2200-01-01 UTC", field=f"{where}.{name}"
            )
    for name, becomes in LIFETIMES.items():
        if name not in credential:
            continue
        if becomes in credential:
            raise InvalidInput(f"give {name} or {becomes}, not both", field=f"{where}.{name}")
        seconds = _seconds(credential[name])
        if seconds is None:
            raise InvalidInput("must be a whole number of seconds > 0", field=f"{where}.{name}")
        if seconds > MAX_LIFETIME_S:
            raise InvalidInput(
                f"must be at most {MAX_LIFETIME_S} seconds (ten years)", field=f"{where}.{name}"
            )


def with_expiry_times(credential: Mapping[str, Any], now_us: int) -> dict[str, str]:
    """A checked credential with its lifetimes (``expires_in``...) made times from now."""
    out = {k: str(v) for k, v in credential.items() if k not in LIFETIMES}
    for name, becomes in LIFETIMES.items():
        seconds = _seconds(credential.get(name))
        if seconds is not None:
            out[becomes] = format_time(now_us + seconds * 1_000_000)
    return out


def _seconds(value: Any) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _positive(value: Any, *, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return False
    return not whole or (float(value).is_integer() and value >= 1)


def bounded(reasons: Sequence[str]) -> tuple[str, ...]:
    """At most MAX_REASONS reasons, the last saying how many more there were."""
    if len(reasons) <= MAX_REASONS:
        return tuple(reasons)
    return (*reasons[: MAX_REASONS - 1], f"... and {len(reasons) - MAX_REASONS + 1} more")
