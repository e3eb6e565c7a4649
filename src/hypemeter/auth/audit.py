"""The audit log: who changed what, when and from where. Pure data, rules and the port.

An entry never holds a secret: it names the action, the target's type and id,
the outcome status and the names of the fields a request sent, never their
values.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hypemeter.errors import InvalidInput

# Mutating requests under /v1 are audited, except the hot paths of ingest and live push,
# which change no configuration: the event log itself records them. Minting and revoking
# stream tokens is audited: a token is a credential (with the tail right, to raw events).
UNAUDITED_PREFIXES = (
    "/v1/events",
    "/v1/track/",
    "/v1/sdk/",
    "/v1/webhooks/",
    "/v1/stream",
)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FIELDS = 50
MAX_TEXT = 200
MAX_PAGE = 1000

# Actions whose name the generic rule below would get wrong or too vaguely.
_ACTIONS = {
    ("DELETE", "/v1/admin/keys/{key_id}"): "key.revoke",
    ("POST", "/v1/oauth/token"): "token.issue",
    ("POST", "/v1/metrics/subscribe"): "stream_token.issue",
    ("DELETE", "/v1/metrics/subscribe/{subscription_id}"): "stream_token.revoke",
}
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}$")
# Where the CLI and the control socket act from, in the ``ip`` column.
LOCAL = "local"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action.

    ``key_id`` is who: the id of the API key (also of a key's access token), or
    ``cli:<user>`` for the command line. ``fields`` are the names of the fields the
    request sent (or the query parameters of an export), never their values.
    """

    entry_id: str
    tenant_id: str
    at_us: int
    key_id: str
    action: str
    target_type: str
    target_id: str
    status: int
    ip: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """One page of a tenant's entries, newest first; ``before`` is the last id seen."""

    tenant_id: str
    since_us: int | None = None
    key_id: str | None = None
    action: str | None = None
    before: str | None = None
    limit: int = 100


class AuditStore(Protocol):
    """Where audit entries are kept: a table of the tenant store's database."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def append(self, entry: AuditEntry) -> None:
        """Store one entry durably; raises StoreUnavailable when it cannot."""

    async def list_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries of ``query.tenant_id`` matching its filters, by ``entry_id`` descending,
        at most ``query.limit``."""

    async def purge(self, before_us: int) -> int:
        """Delete every entry older than ``before_us``; returns how many."""


# The columns of the stores' audit table, in order (SQL column list).
AUDIT_COLUMNS = (
    "entry_id, tenant_id, at_us, key_id, action, target_type, target_id, status, ip, fields"
)


def entry_from_row(row: Sequence[object]) -> AuditEntry:
    """An entry from a row of AUDIT_COLUMNS."""
    fields = row[9]
    return AuditEntry(
        entry_id=str(row[0]),
        tenant_id=str(row[1]),
        at_us=int(str(row[2])),
        key_id=str(row[3]),
        action=str(row[4]),
        target_type=str(row[5]),
        target_id=str(row[6]),
        status=int(str(row[7])),
        ip=str(row[8]),
        fields=tuple(str(f) for f in fields) if isinstance(fields, Iterable) else (),
    )


def entry_values(entry: AuditEntry) -> list[object]:
    """The values of AUDIT_COLUMNS for ``entry``."""
    return [
        entry.entry_id,
        entry.tenant_id,
        entry.at_us,
        entry.key_id,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.status,
        entry.ip,
        list(entry.fields),
    ]


def new_entry_id(at_us: int) -> str:
    """Ids sort by time (then at random within one microsecond), so pages follow them."""
    return f"{at_us:017d}-{secrets.token_hex(4)}"


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def clip_fields(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({clip(str(name)) for name in names}))[:MAX_FIELDS]


# -- what a request did -----------------------------------------------------------


def is_audited_path(path: str) -> bool:
    """Whether requests to ``path`` may be audited at all (ingest never is)."""
    return path.startswith("/v1/") and not path.startswith(UNAUDITED_PREFIXES)


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    target_type: str
    target_id: str


def describe(
    method: str,
    template: str,
    path_params: Mapping[str, object],
    query: Mapping[str, str],
    created_id: str | None,
) -> Action:
    """Name what a mutating request did, from its route's path template.

    ``POST /v1/influencers`` is ``influencer.create`` of the created id;
    ``PATCH /v1/campaigns/{campaign_id}`` is ``campaign.update`` of that id;
    ``POST /v1/admin/dead-letters/{letter_id}/replay`` is ``dead_letter.replay``;
    a ``DELETE`` with ``erase=true`` is an ``erase``.
    """
    parts = [p for p in template.split("/") if p and p not in ("v1", "admin")]
    names = [m.group(1) if (m := _PARAM.match(p)) else None for p in parts]
    resource, param, verb = "", None, _VERBS.get(method, method.lower())
    for i, part in enumerate(parts):
        followed_by_param = i + 1 < len(names) and names[i + 1] is not None
        if names[i] is not None:
            param = names[i]
        elif followed_by_param or param is None or names[i - 1] is None:
            resource, param = part, None  # a collection (possibly nested)
        else:
            verb = part.replace("-", "_")  # an operation on the item: .../{id}/replay
    noun = singular(resource)
    if method == "DELETE" and query.get("erase", "").lower() in {"true", "1", "yes"}:
        verb = "erase"
    name = _ACTIONS.get((method, template), f"{noun}.{verb}")
    noun = name.partition(".")[0]
    target = str(path_params.get(param, "")) if param is not None else (created_id or "")
    return Action(name, noun, clip(target))


def export_action(path: str) -> Action:
    """A CSV answer of a query: the report is named by the path it came from."""
    return Action("export.csv", "report", clip(path))


def singular(resource: str) -> str:
    word = resource.replace("-", "_")
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    return limit
