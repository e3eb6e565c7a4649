"""All configuration, read from ``HYPEMETER_*`` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from hypemeter.events.codec import IngestLimits

MAX_DEDUP_WINDOW_SECONDS = 7 * 24 * 3600


class ConnectorSettings(BaseSettings):
    """How Hypemeter reaches the platforms: their API addresses, polling and WebSub."""

    poll_connectors: bool = Field(
        default=True,
        description="Poll the platforms for the counters of tracked content (on the cluster, "
        "enable it on one process per credential set)",
    )
    instagram_api_url: str = Field(
        default="https://graph.facebook.com/v21.0", description="Instagram Graph API base URL"
    )
    youtube_api_url: str = Field(
        default="https://www.googleapis.com", description="YouTube Data API base URL"
    )
    instagram_token_url: str = Field(
        default="https://graph.instagram.com",
        description="Where Instagram long-lived tokens are refreshed (GET "
        "/refresh_access_token), unversioned",
    )
    tiktok_api_url: str = Field(
        default="https://open.tiktokapis.com", description="TikTok API base URL"
    )
    x_api_url: str = Field(default="https://api.x.com", description="X API base URL")
    public_url: str = Field(
        default="",
        description="The address at which platforms reach this server (e.g. "
        "https://hypemeter.example.com); needed to subscribe to YouTube's WebSub hub",
    )
    youtube_hub_url: str = Field(
        default="https://pubsubhubbub.appspot.com/subscribe",
        description="The WebSub hub YouTube publishes through",
    )
    websub_lease_seconds: int = Field(
        default=864_000, ge=1, description="The lease asked of the hub; renewed at 80%"
    )
    poll_backoff_base_seconds: float = Field(
        default=1.0, gt=0, description="First retry delay after a 5xx or a network error"
    )
    poll_backoff_cap_seconds: float = Field(
        default=300.0, gt=0, description="Longest retry delay (full jitter below it)"
    )


class LiveSettings(BaseSettings):
    """Live push: coalescing, replay, limits and stream tokens."""

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
    live_max_channels_per_tenant: int = Field(
        default=1000,
        ge=1,
        description="Distinct live channels (filter, metrics, granularity, since) per tenant "
        "and process; idle ones are dropped first",
    )
    live_ops_rate: str = Field(
        default="50/second", description="Messages a WebSocket client may send (fixed window)"
    )
    live_max_refused_ops: int = Field(
        default=20,
        ge=1,
        description="Messages in a row refused by live_ops_rate before the WebSocket is "
        "closed (1008)",
    )
    stream_token_seconds: int = Field(
        default=3600, ge=60, description="Lifetime of a stream token from /v1/metrics/subscribe"
    )
    stream_tokens_per_key: int = Field(
        default=1000, ge=1, description="Unexpired stream tokens one key may have"
    )
    stream_token_lookups: str = Field(
        default="200/second",
        description="Store reads per process for stream tokens it has not cached; unknown "
        "tokens are remembered for a minute besides",
    )


class Settings(ConnectorSettings, LiveSettings):
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
    log: str = Field(
        default="",
        description="Event log DSN, nats://host:port[?stream=NAME]; empty: ingest commits "
        "straight to the store",
    )
    profile: str = Field(
        default="embedded",
        description="embedded (any backends) or cluster (requires PostgreSQL, NATS and Redis)",
    )
    config_refresh_seconds: float = Field(
        default=10.0,
        ge=0.5,
        le=3600.0,
        description="With a shared store, how often each process reloads keys and custom "
        "metrics besides the bus notices of changes",
    )
    log_partitions: int = Field(
        default=16, ge=1, le=1024, description="Partitions of the event log (by influencer)"
    )
    log_ack_wait_seconds: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="How long a worker may hold a message before JetStream redelivers it "
        "(a dead worker's partition waits this long)",
    )
    log_duplicate_window_seconds: float = Field(
        default=120.0, ge=1.0, le=86_400.0, description="JetStream's duplicate window"
    )

    max_events_per_request: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    retention_days: int = Field(
        default=400,
        ge=1,
        description="Days events are kept: older ones are refused on ingest and purged in "
        "the background, whole UTC days at a time",
    )
    purge_interval_minutes: float = Field(
        default=60.0,
        gt=0,
        le=24 * 60,
        description="How often each API process purges what is past the retention and the "
        "dead-letter TTL",
    )
    purge_start_delay_seconds: float = Field(
        default=60.0,
        ge=0,
        le=24 * 3600,
        description="Seconds after start-up before the first purge pass, so that it does not "
        "compete with loading the in-memory copies",
    )
    dead_letter_days: int = Field(
        default=30,
        ge=1,
        description="Days a dead letter (a whole raw delivery) is kept after it was received "
        "or last replayed",
    )
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
    query_cache_days: int = Field(
        default=8,
        ge=0,
        le=35,
        description="Days of hourly sums each API process keeps in memory for series, "
        "aggregates and trending (0: none; every query reads the store). Adding each "
        "commit to them costs CPU that heavy ingest on a small machine may miss",
    )
    rollup_fold_interval: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="Seconds between folds of new events into the rollups; queries read "
        "newer events raw, so answers never lag",
    )
    rate_limit: str = Field(default="2000/second", description="Requests per API key")
    rate_limit_events: str = Field(default="2000000/minute", description="Events per API key")
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where rate limit counters live: memory:// (this process) or "
        "redis://host:port/db, shared by every API process",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token that may scrape /metrics"
    )
    secret_keys: SecretStr | None = Field(
        default=None,
        description="Fernet keys that encrypt connector secrets and polling credentials at "
        "rest, comma-separated, newest first: the newest encrypts, every one decrypts",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="Instead of secret_keys: a file holding the keys, one a line, newest "
        "first. When neither is set, the embedded profile uses <data>/secret.key (created "
        "0600 on first start); the cluster profile has no key until one is set",
    )
    ready_probe_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300.0,
        description="How long /readyz answers from its last probe of the backends; the "
        "store's write check runs at most once per period",
    )
    ssl_certfile: Path | None = Field(
        default=None, description="Serve HTTPS with this PEM certificate (chain)"
    )
    ssl_keyfile: Path | None = Field(
        default=None, description="The private key of ssl_certfile (PEM)"
    )
    hsts_seconds: int = Field(
        default=31_536_000,
        ge=0,
        description="max-age of Strict-Transport-Security, sent on requests that arrived "
        "over HTTPS (0 sends none)",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses (or *) of the proxies whose X-Forwarded-For "
        "and X-Forwarded-Proto are trusted",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Secret (32+ bytes) that signs OAuth access tokens (HS256), the same on "
        "every API process. Unset: the embedded profile uses <data>/jwt.secret (created 0600 "
        "on first start); the cluster profile issues no access tokens",
    )
    jwt_issuer: str = Field(
        default="hypemeter", min_length=1, description="The iss claim of access tokens"
    )
    access_token_seconds: int = Field(
        default=900,
        ge=60,
        le=86_400,
        description="Lifetime of an access token from POST /v1/oauth/token",
    )
    audit_retention_days: int = Field(
        default=365, ge=1, description="Days an audit log entry is kept before it is purged"
    )
    log_level: str = "info"
    access_log: bool = True

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in {"embedded", "cluster"}:
            raise ValueError("profile must be embedded or cluster")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be debug, info, warning or error")
        return level

    def platform_urls(self) -> dict[str, str]:
        """The polled platforms' API base URLs (settings, so tests use fake servers)."""
        return {
            "instagram": self.instagram_api_url.rstrip("/"),
            "youtube": self.youtube_api_url.rstrip("/"),
            "tiktok": self.tiktok_api_url.rstrip("/"),
            "x": self.x_api_url.rstrip("/"),
        }

    def token_urls(self) -> dict[str, str]:
        """Where each platform whose tokens expire refreshes them."""
        return {
            "instagram": self.instagram_token_url.rstrip("/"),
            "tiktok": self.tiktok_api_url.rstrip("/"),
        }

    def ingest_limits(self) -> IngestLimits:
        from hypemeter.events.codec import IngestLimits

        return IngestLimits(
            max_body_bytes=self.max_body_bytes,
            max_events=self.max_events_per_request,
            max_event_bytes=self.max_event_bytes,
            retention_days=self.retention_days,
            max_future_seconds=self.max_future_seconds,
        )

    def store_dsn(self) -> str:
        """The store DSN, defaulting to a DuckDB file under the data directory."""
        if self.store:
            return self.store
        return f"duckdb:///{(self.data / 'hypemeter.duckdb').resolve()}"

    def control_socket(self) -> Path:
        """Where a running server listens for CLI administration commands."""
        return self.data.resolve() / "control.sock"
