"""X (Twitter) Account Activity API webhooks.

Handshake (CRC): ``GET ?crc_token=<t>`` answers JSON
``{"response_token": "sha256=<base64 HMAC-SHA256(consumer_secret, t)>"}``; X
repeats it periodically. Deliveries are signed
``x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256(consumer_secret, body)>``.

A delivery is ``{"for_user_id": <subscribed user>, "<kind>_events": [...]}``.
Engagement on the subscribed user's posts is counted as the platform's own
counters count it (the user's own likes and replies on its posts included):

- ``favorite_events``: a like of one of the user's posts is a ``likes`` delta of
  1, id ``x:like:<favorite event id>``.
- ``tweet_create_events`` (tweet objects): a reply to one of the user's posts
  (``in_reply_to_status_id_str``, to that user) is a ``comments`` delta, id
  ``x:reply:<tweet id>``; a retweet of the user's post (``retweeted_status``) is
  a ``shares`` delta, id ``x:retweet:<tweet id>``; a quote of it
  (``quoted_status``) is a ``shares`` delta, id ``x:quote:<tweet id>``. A new
  post by the user that is neither a reply nor a retweet is ``NewContent``
  (type "post"). Mentions, and the user's likes, replies and retweets of other
  accounts' posts, are not engagement on the user's content: nothing.
- ``user_event.revoke`` (the user removed the app): ``Receipt.disable``.
- Follows, blocks, mutes, direct messages and deletes are known, nothing is
  recorded (followers is a gauge, read by polling). Any other key goes to dead
  letters with a reason naming it.

Times come from ``timestamp_ms``, else ``created_at``, else the receive time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import msgspec

from hypemeter.connectors.webhooks.model import (
    MappedEvent,
    NewContent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
)
from hypemeter.connectors.webhooks.payload import (
    US_PER_MS,
    Obj,
    decode_object,
    fragment,
    id_of,
    int_of,
    obj_of,
    objs_of,
    str_of,
)
from hypemeter.connectors.webhooks.verification import (
    check_signature,
    hmac_b64,
    require_header,
    require_secret,
)
from hypemeter.events.model import to_epoch_us

SIGNATURE_HEADER = "X-Twitter-Webhooks-Signature"
CREATED_AT_FORMAT = "%a %b %d %H:%M:%S %z %Y"
ENGAGEMENT_KEYS = frozenset({"tweet_create_events", "favorite_events"})
ENVELOPE_KEYS = frozenset({"for_user_id", "user_has_blocked", "is_blocked_by", "users", "apps"})
NOT_ENGAGEMENT_KEYS = frozenset(
    {
        "follow_events",
        "unfollow_events",
        "block_events",
        "unblock_events",
        "mute_events",
        "unmute_events",
        "direct_message_events",
        "direct_message_indicate_typing_events",
        "direct_message_mark_read_events",
        "tweet_delete_events",
    }
)

Part = MappedEvent | NewContent | Unmapped


@dataclass(frozen=True, slots=True)
class XAdapter:
    """The X Account Activity adapter."""

    platform: str = "x"
    secret_names: tuple[str, ...] = ("consumer_secret",)

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """Answer the CRC check with the signed ``response_token``."""
        token = query.get("crc_token")
        secret = secrets.get("consumer_secret")
        if not token:
            return Reply(400, b"missing crc_token")
        if not secret:
            return Reply(403, b"the connector has no consumer_secret configured")
        answer = {"response_token": "sha256=" + hmac_b64(secret, token.encode())}
        return Reply(200, msgspec.json.encode(answer), "application/json")

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Verify ``x-twitter-webhooks-signature`` (base64), then map the activity."""
        secret = require_secret(secrets, "consumer_secret")
        given = require_header(headers, SIGNATURE_HEADER)
        check_signature(given, "sha256=" + hmac_b64(secret, body), header=SIGNATURE_HEADER)
        payload = decode_object(body, what="the Account Activity body")
        revoke = obj_of(obj_of(payload, "user_event"), "revoke")
        disable = None
        if revoke is not None:
            user = id_of(obj_of(revoke, "source"), "user_id")
            disable = f"X user {user} revoked the app's authorization (user_event.revoke)"
        return Receipt.collect(Reply(200), _parts(payload, now_us), disable=disable)


def _parts(payload: Obj, now_us: int) -> Iterator[Part]:
    owner = id_of(payload, "for_user_id")
    for key in payload:
        if key in ENGAGEMENT_KEYS and owner is None:
            yield Unmapped(f"{key} without for_user_id", fragment({key: payload[key]}))
        elif key in ENGAGEMENT_KEYS and owner is not None:
            read = _tweet if key == "tweet_create_events" else _favorite
            for item in objs_of(payload, key):
                yield from read(item, owner, now_us)
        elif key not in ENVELOPE_KEYS | NOT_ENGAGEMENT_KEYS | {"user_event"}:
            yield Unmapped(f"unknown Account Activity key {key!r}", fragment({key: payload[key]}))


def _favorite(favorite: Obj, owner: str, now_us: int) -> Iterator[Part]:
    status = obj_of(favorite, "favorited_status")
    favorite_id, status_id = id_of(favorite, "id"), _id(status)
    if favorite_id is None or status_id is None:
        yield Unmapped("favorite event without an id or favorited_status", fragment(favorite))
    elif _id(obj_of(status, "user")) == owner:
        yield MappedEvent(
            event_id=f"x:like:{favorite_id}",
            metric="likes",
            value=1.0,
            kind="delta",
            ts_us=_ts_us(favorite, now_us),
            account_id=owner,
            content_id=status_id,
            user_id=_id(obj_of(favorite, "user")),
        )


def _tweet(tweet: Obj, owner: str, now_us: int) -> Iterator[Part]:
    tweet_id = _id(tweet)
    if tweet_id is None:
        yield Unmapped("tweet_create_events item without an id", fragment(tweet))
        return
    engagement = _engagement(tweet, owner, now_us)
    if engagement is not None:
        yield engagement
    is_repost = "retweeted_status" in tweet or id_of(tweet, "in_reply_to_status_id_str")
    if _id(obj_of(tweet, "user")) == owner and not is_repost:
        yield _own_post(tweet, tweet_id, owner, now_us)


def _engagement(tweet: Obj, owner: str, now_us: int) -> MappedEvent | None:
    """The retweet, reply or quote of one of ``owner``'s posts that ``tweet`` is, if any."""
    retweeted = obj_of(tweet, "retweeted_status")
    replied_to = id_of(tweet, "in_reply_to_status_id_str")
    quoted = obj_of(tweet, "quoted_status")
    if retweeted is not None:
        if _id(obj_of(retweeted, "user")) != owner:
            return None
        how, metric, content_id = "retweet", "shares", _id(retweeted)
    elif replied_to is not None and id_of(tweet, "in_reply_to_user_id_str") == owner:
        how, metric, content_id = "reply", "comments", replied_to
    elif quoted is not None and _id(obj_of(quoted, "user")) == owner:
        how, metric, content_id = "quote", "shares", _id(quoted)
    else:
        return None
    return MappedEvent(
        event_id=f"x:{how}:{_id(tweet)}",
        metric=metric,
        value=1.0,
        kind="delta",
        ts_us=_ts_us(tweet, now_us),
        account_id=owner,
        content_id=content_id,
        user_id=_id(obj_of(tweet, "user")),
        text=None if how == "retweet" else _text(tweet),
    )


def _own_post(tweet: Obj, tweet_id: str, owner: str, now_us: int) -> NewContent:
    handle = str_of(obj_of(tweet, "user"), "screen_name")
    path = f"{handle}/status" if handle else "i/web/status"
    return NewContent(
        content_id=tweet_id,
        account_id=owner,
        url=f"https://x.com/{path}/{tweet_id}",
        published_us=_ts_us(tweet, now_us),
        type="post",
    )


def _id(obj: Obj | None) -> str | None:
    return id_of(obj, "id_str") or id_of(obj, "id")


def _text(tweet: Obj) -> str | None:
    return str_of(obj_of(tweet, "extended_tweet"), "full_text") or str_of(tweet, "text")


def _ts_us(obj: Obj, now_us: int) -> int:
    millis = int_of(obj, "timestamp_ms")
    if millis is not None:
        return millis * US_PER_MS
    created = str_of(obj, "created_at")
    if created is not None:
        try:
            return to_epoch_us(dt.datetime.strptime(created, CREATED_AT_FORMAT))
        except ValueError:
            pass
    return now_us
