"""Running the app under uvicorn: one configuration for ``serve`` and ``demo``."""

from __future__ import annotations

import gc
import signal
import sys

import uvicorn

from hypemeter.app import create_app
from hypemeter.datadir import restrict_umask
from hypemeter.errors import InvalidInput
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
    - Every file the process creates is private to its user (``datadir``).
    """
    restrict_umask()
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


def tls_files(settings: Settings) -> tuple[str, str] | tuple[None, None]:
    """The certificate and key to serve HTTPS with, or none; InvalidInput names a
    missing half or a file that cannot be read."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        missing = "ssl_certfile" if cert is None else "ssl_keyfile"
        raise InvalidInput("HTTPS needs both --ssl-certfile and --ssl-keyfile", field=missing)
    for name, path in (("ssl_certfile", cert), ("ssl_keyfile", key)):
        if not path.is_file():
            raise InvalidInput(f"no file {path}", field=name)
    return str(cert), str(key)


def make_server(settings: Settings, *, graceful_seconds: int) -> uvicorn.Server:
    """The app of ``settings`` on uvicorn; logging is configured by the caller.

    With a certificate it serves HTTPS only (and the app adds HSTS). Behind a proxy,
    ``X-Forwarded-For``/``-Proto`` are believed only from ``forwarded_allow_ips``.
    """
    certfile, keyfile = tls_files(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
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
