"""The pure webhook layer: one adapter per platform, keyed by platform name.

Each adapter answers the platform's GET handshake and turns a signed POST into a
``Receipt`` (see ``model``). Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hypemeter.connectors.webhooks.linkedin import LinkedInAdapter
from hypemeter.connectors.webhooks.meta import MetaAdapter
from hypemeter.connectors.webhooks.model import (
    MappedEvent,
    NewContent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
    WebhookAdapter,
    WebhookMalformed,
    WebhookRefused,
)
from hypemeter.connectors.webhooks.tiktok import TikTokAdapter
from hypemeter.connectors.webhooks.twitch import TwitchAdapter
from hypemeter.connectors.webhooks.x import XAdapter
from hypemeter.connectors.webhooks.youtube import YouTubeAdapter

ADAPTERS: Mapping[str, WebhookAdapter] = MappingProxyType(
    {
        "instagram": MetaAdapter("instagram"),
        "facebook": MetaAdapter("facebook"),
        "youtube": YouTubeAdapter(),
        "tiktok": TikTokAdapter(),
        "x": XAdapter(),
        "linkedin": LinkedInAdapter(),
        "twitch": TwitchAdapter(),
    }
)

__all__ = [
    "ADAPTERS",
    "LinkedInAdapter",
    "MappedEvent",
    "MetaAdapter",
    "NewContent",
    "Receipt",
    "Reply",
    "Secrets",
    "TikTokAdapter",
    "TwitchAdapter",
    "Unmapped",
    "WebhookAdapter",
    "WebhookMalformed",
    "WebhookRefused",
    "XAdapter",
    "YouTubeAdapter",
]
