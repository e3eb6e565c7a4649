"""The ``hypemeter`` command: thin, it only parses flags and calls services."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from hypemeter.settings import Settings

app = typer.Typer(help="Hypemeter: real-time engagement analytics.", no_args_is_help=True)
tenants_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
secrets_app = typer.Typer(help="Keys that encrypt connector secrets at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data directory [env HYPEMETER_DATA, default ./data]")
]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then the flags that were given."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="embedded, or cluster: PostgreSQL, NATS and Redis from HYPEMETER_STORE, "
        "HYPEMETER_LOG and HYPEMETER_BUS [env HYPEMETER_PROFILE, default embedded]",
    ),
]


@app.command()
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


def checked_settings(**overrides: Any) -> Settings:
    """Settings whose backends fit their profile; a mismatch exits with its reason."""
    from hypemeter.backends.selection import check_profile
    from hypemeter.errors import HypemeterError

    settings = load_settings(**overrides)
    try:
        check_profile(settings)
    except HypemeterError as exc:
        fail(exc.message)
    return settings


@app.command()
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


@app.command()
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


def admin(settings: Settings, op: str, args: dict[str, Any]) -> dict[str, Any]:
    from hypemeter.control import run_admin
    from hypemeter.errors import HypemeterError

    try:
        return asyncio.run(run_admin(settings, op, args))
    except HypemeterError as exc:
        fail(exc.message)
        raise  # unreachable: fail() exits


@tenants_app.command("create")
def tenants_create(name: str, data: DataOpt = None) -> None:
    """Create a tenant."""
    result = admin(load_settings(data=data), "tenants.create", {"name": name})
    typer.echo(f"created tenant {result['tenant']}")


@tenants_app.command("list")
def tenants_list(data: DataOpt = None) -> None:
    """List tenants."""
    for name in admin(load_settings(data=data), "tenants.list", {})["tenants"]:
        typer.echo(name)


LimitOpt = Annotated[str | None, typer.Option(help="Comma-separated; the key is limited to them")]


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest, read, admin")],
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    limit_influencers: LimitOpt = None,
    limit_campaigns: LimitOpt = None,
    limit_platforms: LimitOpt = None,
    limit_metrics: LimitOpt = None,
    max_value: Annotated[
        float | None, typer.Option(help="Ingest: no event value above this (absolute)")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Create a key; it is printed once, alone on the last line.

    Influencer and campaign limits bind what the key writes and reads; platform,
    metric and value limits bind what an ingest key writes.
    """
    lists = {
        "influencers": limit_influencers,
        "campaigns": limit_campaigns,
        "platforms": limit_platforms,
        "metrics": limit_metrics,
    }
    limits: dict[str, Any] = {
        k: [part.strip() for part in v.split(",") if part.strip()]
        for k, v in lists.items()
        if v is not None
    }
    if max_value is not None:
        limits["max_value"] = max_value
    args = {"tenant": tenant, "scopes": scopes, "name": name, "limits": limits or None}
    result = admin(load_settings(data=data), "keys.create", args)
    typer.echo(f"key {result['id']} for tenant {tenant} with scopes {','.join(result['scopes'])}")
    if result.get("limits"):
        typer.echo(f"limited to {_json(result['limits'])}")
    typer.echo("store it now: it is not shown again")
    typer.echo(result["key"])


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    data: DataOpt = None,
) -> None:
    """List keys (never their secrets)."""
    result = admin(load_settings(data=data), "keys.list", {"tenant": tenant})
    for key in result["keys"]:
        state = "revoked" if key["revoked"] else "active"
        limits = f"\t{_json(key['limits'])}" if key.get("limits") else ""
        typer.echo(
            f"{key['id']}\t{key['tenant']}\t{','.join(key['scopes'])}\t{state}\t{key['name']}"
            + limits
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, data: DataOpt = None) -> None:
    """Revoke a key; a running server refuses it from the next request on."""
    result = admin(load_settings(data=data), "keys.revoke", {"key_id": key_id})
    typer.echo(f"revoked key {result['id']} of tenant {result['tenant']}")


@secrets_app.command("generate")
def secrets_generate() -> None:
    """Print a new key, to put first in HYPEMETER_SECRET_KEYS (or the key file)."""
    from hypemeter.sealing import new_key

    typer.echo(new_key())


@secrets_app.command("rotate")
def secrets_rotate(data: DataOpt = None) -> None:
    """Encrypt every stored connector secret again with the newest key.

    A running server does it with its own keys; otherwise this command opens the
    store with the keys of its environment. Afterwards the older keys can go."""
    result = admin(load_settings(data=data), "secrets.rotate", {})
    typer.echo(
        f"re-encrypted {result['resealed']} of {result['total']} connector records "
        f"with the newest key of {result['keys']}"
    )


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="Base URL of the server")] = "http://127.0.0.1:8080",
    key: Annotated[
        str, typer.Option(help="A key with the ingest scope", envvar="HYPEMETER_KEY")
    ] = "",
    rate: Annotated[float, typer.Option(help="Events per second")] = 200.0,
    influencers: Annotated[int, typer.Option(help="Number of influencers")] = 50,
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C")] = 60.0,
    seed: Annotated[int | None, typer.Option(help="Seed for deterministic traffic")] = None,
) -> None:
    """Send realistic synthetic traffic through the public HTTP API."""
    from hypemeter.simulate.runner import simulate as run

    if not key:
        fail("--key is required (a key with the ingest scope)")
    chosen = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
    try:
        tally = asyncio.run(
            run(url, key, rate=rate, influencers=influencers, duration=duration, seed=chosen)
        )
    except KeyboardInterrupt:
        return
    typer.echo(
        f"sent {tally.sent:,} events: accepted {tally.accepted:,}, duplicates "
        f"{tally.duplicates:,}, rejected {tally.rejected:,}, failures {tally.failures:,}"
    )
    if tally.failures:
        sys.exit(1)


async def rebuild_rollups(
    settings: Settings, progress: Callable[[int, int], None]
) -> tuple[int, float]:
    """Open the store without serving, rebuild every rollup; (events folded, seconds)."""
    from hypemeter.backends.selection import open_backends
    from hypemeter.clock import SystemClock

    backends = open_backends(settings, SystemClock(), admin_only=True)
    await backends.metrics.start()
    try:
        started = time.perf_counter()
        folded = await backends.metrics.rebuild(progress)
        return folded, time.perf_counter() - started
    finally:
        await backends.metrics.aclose()


@app.command()
def rebuild(data: DataOpt = None) -> None:
    """Recompute every rollup from the raw events (the server must be stopped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from hypemeter.errors import HypemeterError

    settings = load_settings(data=data)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task("events folded", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            folded, seconds = asyncio.run(rebuild_rollups(settings, progress))
        except HypemeterError as exc:
            bar.stop()
            fail(f"{exc.message} (a running server holds the store: stop it first)")
            raise
    rate = folded / seconds if seconds else 0.0
    typer.echo(f"rebuilt the rollups from {folded:,} events in {seconds:.2f} s ({rate:,.0f}/s)")


def progress_bar(description: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


@app.command("export")
def export_command(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose events to export")],
    out: Annotated[
        Path | None, typer.Option("--out", help="NDJSON file to write [default: stdout]")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Write a tenant's raw events as NDJSON, in the format POST /v1/events takes."""
    from hypemeter.datadir import open_private
    from hypemeter.errors import HypemeterError
    from hypemeter.transfer import export_events

    settings = load_settings(data=data)
    with progress_bar("events") as bar:
        task = bar.add_task("events exported", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            if out is None:
                count = asyncio.run(export_events(settings, tenant, sys.stdout.buffer, progress))
            else:
                with open_private(out) as sink:  # raw events: readable by this user only
                    count = asyncio.run(export_events(settings, tenant, sink, progress))
        except HypemeterError as exc:
            bar.stop()
            fail(exc.message)
            raise
    typer.echo(f"exported {count:,} events of {tenant}", err=True)


@app.command("import")
def import_command(
    source: Annotated[Path, typer.Argument(help="NDJSON file, as written by export")],
    tenant: Annotated[str, typer.Option("--tenant", help="Import into this tenant")],
    data: DataOpt = None,
) -> None:
    """Ingest an NDJSON file of events into a tenant; event ids make it idempotent."""
    from hypemeter.errors import HypemeterError
    from hypemeter.transfer import import_events

    if not source.is_file():
        fail(f"no file {source}")
    settings = load_settings(data=data)
    with progress_bar("bytes") as bar, source.open("rb") as stream:
        task = bar.add_task("bytes imported", total=source.stat().st_size)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = asyncio.run(
                import_events(settings, tenant, stream, source.stat().st_size, progress)
            )
        except HypemeterError as exc:
            bar.stop()
            fail(exc.message)
            raise
    for rejection in result.examples:
        typer.echo(f"line {rejection.index}: {rejection.field}: {rejection.error}", err=True)
    typer.echo(
        f"imported {result.lines:,} lines into {tenant}: {result.accepted:,} accepted, "
        f"{result.duplicates:,} duplicates, {result.rejected:,} rejected"
    )
    if result.rejected:
        raise typer.Exit(code=1)


@app.command()
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


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
