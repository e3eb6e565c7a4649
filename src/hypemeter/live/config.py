"""The settings of live push, as the hub and the sessions read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LiveConfig:
    coalesce_s: float = 0.1
    replay_s: float = 300.0
    queue_messages: int = 256
    max_lags: int = 3
    heartbeat_s: float = 15.0
    max_subscriptions: int = 100
    token_s: int = 3600
    max_channels_per_tenant: int = 1000
    retention_days: int = 400  # how far back ``since`` may reach
    ops_rate: str = "50/second"  # messages a WebSocket client may send
    max_refused_ops: int = 20  # refused in a row before the connection is closed

    @property
    def replay_limit(self) -> int:
        """Updates a channel keeps for resuming, at most: a window's worth of them."""
        return max(16, int(self.replay_s / max(self.coalesce_s, 0.01)))
