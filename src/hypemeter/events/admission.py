"""What a writer may write into a tenant, checked over a whole batch at once.

Three rules, after validation (platforms and metrics normalised, influencers and
campaigns filled in from the registry):

- event ids in the connectors' namespace (``CONNECTOR_ID_PREFIXES``) come from
  platform connectors only, never from an API key;
- an API key's limits (``KeyLimits``): platforms, metrics, influencers, campaigns
  and a cap on values;
- the tenant's bound on values per metric (``ValueLimit``, defaults in
  ``events.model``).

This runs on the ingest hot path, often in a worker process. Each rule looks at one
column of the batch with a bulk operation (a regular expression over the joined ids,
a set of the distinct values, numpy over the values) and inspects single events only
when that finds something; rules that cannot apply cost nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from hypemeter.auth.model import NO_LIMITS, KeyLimits
from hypemeter.errors import Rejection
from hypemeter.events.model import (
    CONNECTOR_ID_PREFIXES,
    EventIn,
    ValueLimit,
    default_value_limit,
    is_connector_event_id,
)

# One pass over the ids joined by line breaks (and led by one) finds whether any may
# start the reserved namespace; the leading literal lets the search skip from line to line.
_CONNECTOR_IDS = re.compile("\n(?:" + "|".join(re.escape(p) for p in CONNECTOR_ID_PREFIXES) + ")")
_EVENT_ID = attrgetter("event_id")
_VALUE_LIMITS_ROUTE = "PUT /v1/admin/value-limits"

Fault = tuple[str, str]  # (field, reason)


class Origin(enum.Enum):
    """Who writes: the rules differ."""

    KEY = "key"  # an API key: an app's SDK, a batch upload
    CONNECTOR = "connector"  # a platform connector's mapped delivery or poll
    IMPORT = "import"  # an operator's import of an export: history already accepted once


@dataclass(frozen=True, slots=True)
class Admission:
    """The rules for one writer into one tenant (picklable: it travels to workers).

    ``bounds`` is None for an import, which replays events another deployment
    accepted; ``floor`` is the smallest bound there is, below which no value needs a
    closer look.
    """

    bounds: Mapping[str, ValueLimit] | None
    key: KeyLimits = NO_LIMITS
    connector_ids: bool = False
    floor: float = float("inf")

    @classmethod
    def of(
        cls,
        bounds: Mapping[str, ValueLimit] | None,
        *,
        key: KeyLimits = NO_LIMITS,
        connector_ids: bool = False,
    ) -> Admission:
        caps = [] if bounds is None else [min(b.max_delta, b.max_snapshot) for b in bounds.values()]
        if key.max_value is not None:
            caps.append(key.max_value)
        return cls(bounds, key, connector_ids, min(caps, default=float("inf")))

    def value_fault(self, event: EventIn) -> Fault | None:
        """Why the event's value is too large, if it is."""
        size = abs(event.value)
        cap = self.key.max_value
        if cap is not None and size > cap:
            return "value", f"value {event.value:g} is above this key's limits.max_value ({cap:g})"
        if self.bounds is None:
            return None
        metric = str(event.metric)
        limit = self.bounds.get(metric) or default_value_limit(metric)
        bound = limit.of(event.kind)
        if size <= bound:
            return None
        what = "reading" if event.kind == "snapshot" else "increment"
        return "value", (
            f"value {event.value:g} is above the limit of {bound:g} per {what} of {metric}; "
            f"an admin may change it ({_VALUE_LIMITS_ROUTE})"
        )


def admit(
    events: list[EventIn],
    stamps: list[int],
    indices: list[int],
    policy: Admission,
    rejected: list[Rejection],
) -> tuple[list[EventIn], list[int]]:
    """The events ``policy`` admits and their stamps; each other one is added to
    ``rejected`` with its index (``indices`` holds the index of each event)."""
    found = faults(events, policy)
    if not found:
        return events, stamps
    rejected.extend(Rejection(indices[pos], f, reason) for pos, (f, reason) in found.items())
    kept = [pos for pos in range(len(events)) if pos not in found]
    return [events[pos] for pos in kept], [stamps[pos] for pos in kept]


def faults(events: Sequence[EventIn], policy: Admission) -> dict[int, Fault]:
    """The first fault of each event at fault, by position."""
    found: dict[int, Fault] = {}
    if not events:
        return found
    if not policy.connector_ids:
        _reserved_ids(events, found)
    if not policy.key.unlimited:
        _key_limits(events, policy.key, found)
    if policy.floor != float("inf"):
        _values(events, policy, found)
    return found


def _reserved_ids(events: Sequence[EventIn], found: dict[int, Fault]) -> None:
    if _CONNECTOR_IDS.search("\n" + "\n".join(filter(None, map(_EVENT_ID, events)))) is None:
        return
    for pos, event_id in enumerate(map(_EVENT_ID, events)):
        if is_connector_event_id(event_id):
            found.setdefault(
                pos,
                (
                    "event_id",
                    f"event_id {event_id!r} is in the namespace of platform connectors "
                    f"(ids starting {', '.join(CONNECTOR_ID_PREFIXES)}); an API key may not "
                    "write it",
                ),
            )


_DIMENSIONS = (
    ("platform", "platforms"),
    ("metric", "metrics"),
    ("influencer_id", "influencers"),
    ("campaign_id", "campaigns"),
)


def _key_limits(events: Sequence[EventIn], limits: KeyLimits, found: dict[int, Fault]) -> None:
    for field_name, limit in _DIMENSIONS:
        allowed: frozenset[str] = getattr(limits, limit)
        if not allowed:
            continue
        column = list(map(attrgetter(field_name), events))
        if allowed.issuperset(column):
            continue
        for pos, value in enumerate(column):
            if value in allowed:
                continue
            reason = (
                f"{field_name} is required: this key may write only events of its {limit} "
                f"(limits.{limit})"
                if value is None
                else f"{field_name} {value!r} is outside this key's limits.{limit}"
            )
            found.setdefault(pos, (field_name, reason))


def _values(events: Sequence[EventIn], policy: Admission, found: dict[int, Fault]) -> None:
    values = np.fromiter((e.value for e in events), np.float64, len(events))
    for pos in np.flatnonzero(np.abs(values) > policy.floor).tolist():
        fault = policy.value_fault(events[pos])
        if fault is not None:
            found.setdefault(pos, fault)
