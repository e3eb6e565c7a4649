"""The pure polling layer: what to ask each platform for counters, and how to read it.

One poller per polled platform, keyed by platform name; ``model`` holds the shared
types, ``pacing`` the arithmetic of polite calling (token bucket, rate-limit headers,
backoff with full jitter, the adaptive schedule, each credential's budget). Nothing
here does I/O or reads the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hypemeter.connectors.polling.instagram import InstagramPoller
from hypemeter.connectors.polling.model import (
    Answer,
    Call,
    Limits,
    PlatformPoller,
    PollError,
    Problem,
    Reading,
    Target,
)
from hypemeter.connectors.polling.pacing import (
    DEFAULT_CURVE,
    Credential,
    RateSignal,
    TokenBucket,
    backoff_s,
    connector_limits,
    next_pacific_midnight_us,
    parse_curve,
    poll_interval_s,
    rate_signal,
)
from hypemeter.connectors.polling.tiktok import TikTokPoller
from hypemeter.connectors.polling.x import XPoller
from hypemeter.connectors.polling.youtube import YouTubePoller

POLLERS: Mapping[str, PlatformPoller] = MappingProxyType(
    {
        "instagram": InstagramPoller(),
        "youtube": YouTubePoller(),
        "tiktok": TikTokPoller(),
        "x": XPoller(),
    }
)

__all__ = [
    "DEFAULT_CURVE",
    "POLLERS",
    "Answer",
    "Call",
    "Credential",
    "InstagramPoller",
    "Limits",
    "PlatformPoller",
    "PollError",
    "Problem",
    "RateSignal",
    "Reading",
    "Target",
    "TikTokPoller",
    "TokenBucket",
    "XPoller",
    "YouTubePoller",
    "backoff_s",
    "connector_limits",
    "next_pacific_midnight_us",
    "parse_curve",
    "poll_interval_s",
    "rate_signal",
]
