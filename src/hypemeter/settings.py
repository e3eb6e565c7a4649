"""All configuration, read from ``HYPEMETER_*`` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_DEDUP_WINDOW_SECONDS = 7 * 24 * 3600


class Settings(BaseSettings):
    """One settings object per app; tests build their own."""

    model_config = SettingsConfigDict(env_prefix="HYPEMETER_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data: Path = Path("./data")
    store: str = Field(
        default="",
        description="Store DSN; empty means duckdb:///<data>/hypemeter.duckdb",
    )
    bus: str = Field(default="memory://", description="Live bus DSN")

    max_events_per_request: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    retention_days: int = Field(default=400, ge=1)
    max_future_seconds: int = Field(default=3600, ge=0)
    dedup_window_seconds: int = Field(default=24 * 3600, ge=60, le=MAX_DEDUP_WINDOW_SECONDS)
    dedup_memory_entries: int = Field(
        default=1_000_000,
        ge=1_000,
        description="Event ids kept in memory before older ones move to memory-mapped runs",
    )
    ingest_queue_events: int = Field(
        default=200_000, ge=1, description="Events waiting for commit before ingest answers 503"
    )
    commit_max_events: int = Field(
        default=20_000,
        ge=1,
        description="Events one group commit takes at most; smaller groups pipeline better "
        "with the decoding of the next requests",
    )
    decode_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Worker processes that decode and validate ingest bodies; 0 decodes in "
        "the server process",
    )
    query_threads: int = Field(
        default=4, ge=1, le=64, description="Threads, each with its own connection, running queries"
    )
    rollup_fold_interval: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="Seconds between folds of new events into the rollups; queries read "
        "newer events raw, so answers never lag",
    )
    live_coalesce_ms: int = Field(
        default=100, ge=0, description="At most one live update per subscription this often"
    )
    live_replay_seconds: int = Field(
        default=300, ge=0, description="SSE updates kept for a reconnect with Last-Event-ID"
    )
    live_queue_messages: int = Field(
        default=256, ge=8, description="Messages a live connection may fall behind by"
    )
    live_max_lags: int = Field(
        default=3, ge=1, description="Lags in a row before a live connection is closed (1013)"
    )
    live_heartbeat_seconds: float = Field(default=15.0, gt=0)
    live_max_connections: int = Field(default=200, ge=1, description="Live connections per key")
    live_max_subscriptions: int = Field(
        default=100, ge=1, description="Subscriptions and tails per WebSocket connection"
    )
    stream_token_seconds: int = Field(
        default=3600, ge=60, description="Lifetime of a stream token from /v1/metrics/subscribe"
    )
    rate_limit: str = Field(default="2000/second", description="Requests per API key")
    rate_limit_events: str = Field(default="2000000/minute", description="Events per API key")
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token that may scrape /metrics"
    )
    log_level: str = "info"
    access_log: bool = True

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be debug, info, warning or error")
        return level

    def store_dsn(self) -> str:
        """The store DSN, defaulting to a DuckDB file under the data directory."""
        if self.store:
            return self.store
        return f"duckdb:///{(self.data / 'hypemeter.duckdb').resolve()}"

    def control_socket(self) -> Path:
        """Where a running server listens for CLI administration commands."""
        return self.data.resolve() / "control.sock"
