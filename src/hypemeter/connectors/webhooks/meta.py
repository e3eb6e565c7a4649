"""Meta webhooks: Instagram Graph API and Facebook Pages share one mechanism.

Handshake: ``GET ?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..`` answers
the challenge when the token matches the configured ``verify_token``, else 403.
Deliveries are signed ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, body)>``
and carry ``entry[].changes[]`` (up to 1000 changes per request).

Mapping (event ids use the platform prefix, ``ig`` or ``fb``):

- ``comments`` / ``live_comments``: one ``comments`` delta of 1 per comment
  (the account's own replies included, as Instagram's comment count does), id
  ``<p>:comment:<comment id>`` (Meta's docs name the id ``id`` or ``comment_id``;
  both are accepted); ``ts`` is ``entry.time``, the time Meta sent the change,
  because the value carries no comment time.
- ``story_insights`` (sent once, when a story expires): one snapshot per reading,
  id ``<p>:story_insights:<media id>:<metric>``. ``reach``, ``impressions``,
  ``views`` and ``shares`` keep their names; ``replies`` becomes ``comments``,
  as in Hypemeter's own metric aliases. Other numbers (``exits``, ``taps_forward``,
  ``taps_back``, ...) have no built-in metric and ride along in ``properties``.
  Meta sends ``-1`` for counts below 5: unknown, so the reading is skipped.
- ``mentions``: no event. A mention is the account being named in *someone
  else's* caption or comment: it is not engagement on the account's content, and
  Hypemeter has no built-in metric for it. Known, so not a dead letter either.
- ``feed`` (Facebook Pages): a comment added is a ``comments`` delta of 1 (id
  ``fb:comment:<comment id>``), one removed a delta of -1 (``..:remove``); a
  reaction to a post added or removed is a ``likes`` delta of +1/-1, keyed by
  post, reacting user and ``created_time`` (reactions have no id of their own).
  Posts, shares, edits and reactions to comments are not engagement counts.
- Messaging fields are known and carry no engagement. Any other field, or a
  comment without an id, goes to dead letters with a reason naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from hypemeter.connectors.webhooks.model import (
    MappedEvent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
)
from hypemeter.connectors.webhooks.payload import (
    Obj,
    decode_object,
    fragment,
    id_of,
    int_of,
    number_of,
    obj_of,
    objs_of,
    str_of,
    unix_us,
)
from hypemeter.connectors.webhooks.verification import (
    check_signature,
    hmac_hex,
    require_header,
    require_secret,
    same,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"
PREFIXES: Mapping[str, str] = {"instagram": "ig", "facebook": "fb"}

STORY_METRICS: Mapping[str, str] = {
    "reach": "reach",
    "impressions": "impressions",
    "views": "views",
    "shares": "shares",
    "replies": "comments",
}
COMMENT_FIELDS = frozenset({"comments", "live_comments"})
NOT_ENGAGEMENT_FIELDS = frozenset(
    {
        "mentions",
        "messages",
        "messaging_seen",
        "messaging_postbacks",
        "messaging_referral",
        "messaging_handover",
        "message_reactions",
        "message_edit",
        "standby",
    }
)

Part = MappedEvent | Unmapped


@dataclass(frozen=True, slots=True)
class _Entry:
    """What one ``entry`` says about all of its changes."""

    prefix: str
    account_id: str | None
    ts_us: int


@dataclass(frozen=True, slots=True)
class MetaAdapter:
    """The Meta webhook adapter for ``platform`` "instagram" or "facebook"."""

    platform: str
    secret_names: tuple[str, ...] = ("app_secret", "verify_token")

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """Answer Meta's subscription check: 200 with the challenge, else 403."""
        expected = secrets.get("verify_token", "")
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        if query.get("hub.mode") == "subscribe" and expected and same(token, expected):
            return Reply(200, challenge.encode())
        return Reply(403, b"hub.verify_token does not match")

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Verify ``X-Hub-Signature-256`` over the raw body, then map every change."""
        secret = require_secret(secrets, "app_secret")
        given = require_header(headers, SIGNATURE_HEADER)
        check_signature(given, "sha256=" + hmac_hex(secret, body), header=SIGNATURE_HEADER)
        payload = decode_object(body, what="the Meta webhook body")
        return Receipt.collect(Reply(200), self._parts(payload, now_us))

    def _parts(self, payload: Obj, now_us: int) -> Iterator[Part]:
        prefix = PREFIXES.get(self.platform, self.platform)
        for entry in objs_of(payload, "entry"):
            time = int_of(entry, "time")
            context = _Entry(prefix, id_of(entry, "id"), now_us if time is None else unix_us(time))
            if "changes" not in entry:
                if "messaging" not in entry and "standby" not in entry:
                    yield Unmapped("Meta entry without changes", fragment(entry))
                continue
            for change in objs_of(entry, "changes"):
                yield from _change_parts(change, context)


def _change_parts(change: Obj, entry: _Entry) -> Iterator[Part]:
    field = str_of(change, "field") or ""
    value = obj_of(change, "value") or {}
    if field in COMMENT_FIELDS:
        yield _comment(field, value, entry)
    elif field == "story_insights":
        yield from _story_insights(value, entry)
    elif field == "feed":
        yield from _feed(value, entry)
    elif field not in NOT_ENGAGEMENT_FIELDS:
        yield Unmapped(f"unknown Meta webhook field {field!r}", fragment(change))


def _comment(field: str, value: Obj, entry: _Entry) -> Part:
    comment_id = id_of(value, "id") or id_of(value, "comment_id")
    if comment_id is None:
        return Unmapped(f"{field} change without a comment id", fragment(value))
    facts: dict[str, object] = {"field": field}
    parent_id = id_of(value, "parent_id")
    if parent_id is not None:
        facts["parent_id"] = parent_id
    return MappedEvent(
        event_id=f"{entry.prefix}:comment:{comment_id}",
        metric="comments",
        value=1.0,
        kind="delta",
        ts_us=entry.ts_us,
        account_id=entry.account_id,
        content_id=id_of(obj_of(value, "media"), "id"),
        user_id=id_of(obj_of(value, "from"), "id"),
        text=str_of(value, "text"),
        properties=facts,
    )


def _story_insights(value: Obj, entry: _Entry) -> Iterator[Part]:
    media_id = id_of(value, "media_id")
    if media_id is None:
        yield Unmapped("story_insights change without a media_id", fragment(value))
        return
    # -1 means "fewer than 5": unknown, never a reading.
    known = {
        name: reading
        for name in value
        if name != "media_id" and (reading := number_of(value, name)) is not None and reading >= 0
    }
    facts: dict[str, object] = {"field": "story_insights"}
    facts.update({name: value[name] for name in known if name not in STORY_METRICS})
    for name, reading in known.items():
        metric = STORY_METRICS.get(name)
        if metric is None:
            continue
        yield MappedEvent(
            event_id=f"{entry.prefix}:story_insights:{media_id}:{metric}",
            metric=metric,
            value=reading,
            kind="snapshot",
            ts_us=entry.ts_us,
            account_id=entry.account_id,
            content_id=media_id,
            properties=facts,
        )


def _feed(value: Obj, entry: _Entry) -> Iterator[Part]:
    item = str_of(value, "item")
    verb = str_of(value, "verb")
    if verb not in {"add", "remove"}:
        return
    created = int_of(value, "created_time")
    ts_us = entry.ts_us if created is None else unix_us(created)
    sign = 1.0 if verb == "add" else -1.0
    suffix = "" if verb == "add" else ":remove"
    if item == "comment":
        comment_id = id_of(value, "comment_id")
        if comment_id is None:
            yield Unmapped("feed comment without a comment_id", fragment(value))
            return
        yield _feed_event(value, entry, "comments", sign, ts_us, f"comment:{comment_id}{suffix}")
    elif item == "reaction" and id_of(value, "comment_id") is None:
        post_id = id_of(value, "post_id")
        user_id = id_of(obj_of(value, "from"), "id")
        if post_id is None or user_id is None:
            yield Unmapped("feed reaction without a post_id or from.id", fragment(value))
            return
        key = f"reaction:{post_id}:{user_id}:{created}{suffix}"
        yield _feed_event(value, entry, "likes", sign, ts_us, key)


def _feed_event(
    value: Obj, entry: _Entry, metric: str, sign: float, ts_us: int, key: str
) -> MappedEvent:
    facts: dict[str, object] = {"field": "feed"}
    reaction = str_of(value, "reaction_type")
    if reaction is not None:
        facts["reaction"] = reaction
    return MappedEvent(
        event_id=f"{entry.prefix}:{key}",
        metric=metric,
        value=sign,
        kind="delta",
        ts_us=ts_us,
        account_id=entry.account_id,
        content_id=id_of(value, "post_id"),
        user_id=id_of(obj_of(value, "from"), "id"),
        text=str_of(value, "message") if metric == "comments" and sign > 0 else None,
        properties=facts,
    )
