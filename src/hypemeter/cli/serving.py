"""Commands that run processes: the server, the worker, the demo, and migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from hypemeter.cli.options import DataOpt, ProfileOpt, checked_settings, fail, load_settings
from hypemeter.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Interface [default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default 8080]")] = None,
    data: DataOpt = None,
    profile: ProfileOpt = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this PEM certificate [env HYPEMETER_SSL_CERTFILE]"),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(help="The certificate's PEM private key [env HYPEMETER_SSL_KEYFILE]"),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies whose X-Forwarded-For/-Proto are trusted, comma-separated or * "
            "[env HYPEMETER_FORWARDED_ALLOW_IPS, default 127.0.0.1]"
        ),
    ] = None,
) -> None:
    """Run the service until SIGTERM or Ctrl-C (in-flight requests finish first)."""
    settings = checked_settings(
        host=host,
        port=port,
        data=data,
        profile=profile,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    run_server(settings)


def worker(profile: ProfileOpt = None) -> None:
    """Move events from the event log into the store until SIGTERM or Ctrl-C."""
    from hypemeter.errors import HypemeterError
    from hypemeter.logs import configure_logging

    settings = checked_settings(profile=profile)
    configure_logging(settings.log_level)
    from hypemeter.worker import run_worker

    try:
        stats = asyncio.run(run_worker(settings))
    except HypemeterError as exc:
        fail(exc.message)
        raise
    typer.echo(
        f"worker stopped: {stats.messages:,} messages, {stats.events:,} events committed, "
        f"{stats.duplicates:,} duplicates dropped"
    )


def migrate(data: DataOpt = None, profile: ProfileOpt = None) -> None:
    """Create or update the schema of the store (and the event log's stream), then exit."""
    from hypemeter.errors import HypemeterError

    settings = checked_settings(data=data, profile=profile)
    try:
        for line in asyncio.run(migrate_backends(settings)):
            typer.echo(line)
    except HypemeterError as exc:
        fail(exc.message)


async def migrate_backends(settings: Settings) -> list[str]:
    from hypemeter.backends.dsn import redacted
    from hypemeter.backends.selection import open_backends, open_log
    from hypemeter.clock import SystemClock

    backends = open_backends(settings, SystemClock(), admin_only=True)
    await backends.tenants.start()  # migrates the store
    await backends.tenants.aclose()
    done = [f"store {redacted(settings.store_dsn())}: schema up to date"]
    if settings.log:
        event_log = open_log(settings)
        await event_log.start()  # creates or updates the stream
        await event_log.aclose()
        done.append(f"log stream {event_log.stream}: ready")
    return done


def run_server(settings: Settings) -> None:
    from hypemeter.errors import HypemeterError
    from hypemeter.logs import configure_logging
    from hypemeter.serving import make_server, prepare_process

    configure_logging(settings.log_level)
    prepare_process()
    try:
        server = make_server(settings, graceful_seconds=15)
    except HypemeterError as exc:
        fail(exc.message)
        raise
    server.run()  # a failed start-up exits with status 3, the log saying why


def demo(
    host: Annotated[str | None, typer.Option(help="Interface [default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default 8080]")] = None,
    data: DataOpt = None,
    rate: Annotated[float, typer.Option(help="Simulated events per second")] = 20.0,
    history: Annotated[
        int, typer.Option(help="Events of the first run's seeded week of history")
    ] = 600_000,
) -> None:
    """Serve with a demo tenant, its keys, a week of history (seeded on the first run) and
    live simulated traffic."""
    from hypemeter.demo import run_demo

    run_demo(load_settings(host=host, port=port, data=data), rate=rate, history=history)
