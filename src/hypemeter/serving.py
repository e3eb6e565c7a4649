"""Running the app under uvicorn: one configuration for ``serve`` and ``demo``."""

from __future__ import annotations

import gc
import signal
import sys

import uvicorn

from hypemeter.app import create_app
from hypemeter.settings import Settings

GIL_SWITCH_INTERVAL_S = 0.0005


GC_THRESHOLDS = (50_000, 50, 1_000)


def prepare_process() -> None:
    """Process-wide settings of a serving process; call once, before serving.

    - A graceful stop by SIGTERM or Ctrl-C ends with status 0: uvicorn re-raises
      the captured signal after shutting down, and these handlers make that a no-op.
    - The cyclic garbage collector is tuned for an event loop holding many long-lived
      objects (below).
    - The GIL is handed over sooner than the default 5 ms: DuckDB and pyarrow
      release it while they work but take it back briefly and often, and with
      the event loop busy each take-back would wait a full interval.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # A full collection walks every live object: with thousands of open connections that
    # pauses the event loop for hundreds of milliseconds. Reference counting frees almost
    # everything here, so the cyclic collector runs rarely (and young collections less
    # often); what the process built at start-up is frozen out of its walks.
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


WS_MAX_BYTES = 1024 * 1024  # a client message; the live routes answer over 64 KiB with an error


def make_server(settings: Settings, *, graceful_seconds: int) -> uvicorn.Server:
    """The app of ``settings`` on uvicorn; logging is configured by the caller."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_BYTES,
        ws_per_message_deflate=False,  # small JSON messages: compressing costs more than it saves
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
        backlog=2048,
    )
    return uvicorn.Server(config)
