"""The registry: influencers (with their platform accounts), campaigns and content.

Pure: no I/O. Entities are frozen msgspec Structs, stored as JSON documents with
two derived strings the stores filter on without knowing the entities: ``keys``
(space-separated ``name=value`` tokens, values percent-encoded) and ``search``
(lower-cased names and handles). The ``Directory`` built from a tenant's entities
is what ingest consults to fill in an event's influencer and campaign.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import msgspec

from hypemeter.events.model import Directory

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
ID_RULE = "1-128 letters, digits, '.', '_', ':', '@' or '-', starting with a letter or digit"
MAX_PAGE = 500


class Kind(enum.StrEnum):
    INFLUENCER = "influencer"
    CAMPAIGN = "campaign"
    CONTENT = "content"


class Account(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    platform: str
    account_id: str
    handle: str | None = None
    followers: int | None = None


class Influencer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    tags: tuple[str, ...] = ()
    accounts: tuple[Account, ...] = ()
    created_at: str = ""
    updated_at: str = ""


class Campaign(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    brand: str | None = None
    start: str | None = None
    end: str | None = None
    budget: float | None = None
    influencers: tuple[str, ...] = ()
    content: tuple[str, ...] = ()
    link_codes: tuple[str, ...] = ()
    created_at: str = ""
    updated_at: str = ""


class Content(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    platform: str
    influencer_id: str
    campaign_id: str | None = None
    url: str | None = None
    published_at: str | None = None
    type: str | None = None
    created_at: str = ""
    updated_at: str = ""


Entity = Influencer | Campaign | Content
ENTITY_TYPES: Mapping[Kind, type[Influencer] | type[Campaign] | type[Content]] = {
    Kind.INFLUENCER: Influencer,
    Kind.CAMPAIGN: Campaign,
    Kind.CONTENT: Content,
}
_ENCODER = msgspec.json.Encoder()


def kind_of(entity: Entity) -> Kind:
    if isinstance(entity, Influencer):
        return Kind.INFLUENCER
    if isinstance(entity, Campaign):
        return Kind.CAMPAIGN
    return Kind.CONTENT


@dataclass(frozen=True, slots=True)
class RegistryRecord:
    """One entity as the stores keep it."""

    kind: str
    entity_id: str
    doc: str
    keys: str
    search: str
    updated_us: int


CLAIM = "account_claim"


def claim_id(account: Account) -> str:
    """The id of the record that says which influencer holds a platform account."""
    return f"{account.platform}:{account.account_id}"


def claim_record(key: str, influencer_id: str, updated_us: int) -> RegistryRecord:
    return RegistryRecord(CLAIM, key, influencer_id, " ", "", updated_us)


def key_token(name: str, value: str) -> str:
    """The token a filter ``name=value`` looks for in ``keys`` (spaces delimit tokens)."""
    return f" {name}={quote(value, safe='')} "


def keys_of(pairs: Iterable[tuple[str, str | None]]) -> str:
    """The ``keys`` string of a record: its filterable (name, value) pairs."""
    tokens = sorted({f"{n}={quote(v, safe='')}" for n, v in pairs if v})
    return " " + " ".join(tokens) + " " if tokens else " "


def _pairs(entity: Entity) -> list[tuple[str, str | None]]:
    if isinstance(entity, Influencer):
        return [
            *(("tag", tag) for tag in entity.tags),
            *(("platform", a.platform) for a in entity.accounts),
            *(("account", f"{a.platform}:{a.account_id}") for a in entity.accounts),
        ]
    if isinstance(entity, Campaign):
        return [
            ("brand", entity.brand),
            *(("influencer_id", i) for i in entity.influencers),
            *(("content_id", c) for c in entity.content),
            *(("link_code", c) for c in entity.link_codes),
        ]
    return [
        ("platform", entity.platform),
        ("influencer_id", entity.influencer_id),
        ("campaign_id", entity.campaign_id),
        ("type", entity.type),
    ]


def _search(entity: Entity) -> str:
    words: list[str | None] = [entity.id, getattr(entity, "name", None)]
    if isinstance(entity, Influencer):
        words += [a.handle for a in entity.accounts]
        words += [a.handle.lstrip("@") for a in entity.accounts if a.handle]
    elif isinstance(entity, Campaign):
        words.append(entity.brand)
    else:
        words.append(entity.url)
    return "\n".join(w.lower() for w in words if w)


def to_record(entity: Entity, updated_us: int) -> RegistryRecord:
    return RegistryRecord(
        kind=kind_of(entity).value,
        entity_id=entity.id,
        doc=_ENCODER.encode(entity).decode(),
        keys=keys_of(_pairs(entity)),
        search=_search(entity),
        updated_us=updated_us,
    )


def from_record(record: RegistryRecord) -> Entity:
    return msgspec.json.decode(record.doc, type=ENTITY_TYPES[Kind(record.kind)])


def check_id(value: str, field: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(f"{field} must be {ID_RULE}")
    return value


def _format(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds; years zero-padded, so strings sort as times."""
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.%fZ")


def rfc3339(us: int) -> str:
    return _format(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us))


def normalize_time(value: dt.datetime | None) -> str | None:
    """The time in UTC as stored; raises ValueError for a naive or out-of-range time."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("must be RFC 3339 with a UTC offset, e.g. 2026-11-20T14:00:00Z")
    try:
        return _format(value.astimezone(dt.UTC))
    except OverflowError:
        raise ValueError("is out of range once in UTC (years 1 to 9999)") from None


def duplicate_account(influencer: Influencer) -> int | None:
    """Index of the first account listed twice in one influencer, if any."""
    seen: set[tuple[str, str]] = set()
    for index, account in enumerate(influencer.accounts):
        key = (account.platform, account.account_id)
        if key in seen:
            return index
        seen.add(key)
    return None


def build_directory(entities: Iterable[Entity]) -> Directory | None:
    """What ingest needs to resolve events of one tenant, or None for an empty registry.

    Content names its influencer and, directly or through a campaign that tracks
    it, its campaign; an account names its influencer.
    """
    content: dict[str, tuple[str | None, str | None]] = {}
    accounts: dict[tuple[str, str], str] = {}
    tracked: dict[str, str] = {}
    listed: list[Content] = []
    for entity in entities:
        if isinstance(entity, Influencer):
            for account in entity.accounts:
                accounts[(account.platform, account.account_id)] = entity.id
        elif isinstance(entity, Campaign):
            for content_id in entity.content:
                tracked.setdefault(content_id, entity.id)
        else:
            listed.append(entity)
    for content_id, campaign_id in tracked.items():
        content[content_id] = (None, campaign_id)
    for item in listed:
        content[item.id] = (item.influencer_id, item.campaign_id or tracked.get(item.id))
    if not content and not accounts:
        return None
    return Directory(content=content, accounts=accounts)
