"""The ``hypemeter`` command: thin, it only parses flags and calls services."""

from __future__ import annotations

import asyncio
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

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data directory [env HYPEMETER_DATA, default ./data]")
]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then the flags that were given."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface [default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default 8080]")] = None,
    data: DataOpt = None,
) -> None:
    """Run the service until SIGTERM or Ctrl-C (in-flight requests finish first)."""
    settings = load_settings(host=host, port=port, data=data)
    run_server(settings)


def run_server(settings: Settings) -> None:
    from hypemeter.logs import configure_logging
    from hypemeter.serving import make_server, prepare_process

    configure_logging(settings.log_level)
    prepare_process()
    make_server(settings, graceful_seconds=15).run()


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


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest, read, admin")],
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    data: DataOpt = None,
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    result = admin(
        load_settings(data=data), "keys.create", {"tenant": tenant, "scopes": scopes, "name": name}
    )
    typer.echo(f"key {result['id']} for tenant {tenant} with scopes {','.join(result['scopes'])}")
    typer.echo("store it now: it is not shown again")
    typer.echo(result["key"])


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    data: DataOpt = None,
) -> None:
    """List keys (never their secrets)."""
    result = admin(load_settings(data=data), "keys.list", {"tenant": tenant})
    for key in result["keys"]:
        state = "revoked" if key["revoked"] else "active"
        typer.echo(
            f"{key['id']}\t{key['tenant']}\t{','.join(key['scopes'])}\t{state}\t{key['name']}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, data: DataOpt = None) -> None:
    """Revoke a key; a running server refuses it from the next request on."""
    result = admin(load_settings(data=data), "keys.revoke", {"key_id": key_id})
    typer.echo(f"revoked key {result['id']} of tenant {result['tenant']}")


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


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Interface [default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default 8080]")] = None,
    data: DataOpt = None,
    rate: Annotated[float, typer.Option(help="Simulated events per second")] = 200.0,
) -> None:
    """Serve with a demo tenant, its keys and live simulated traffic."""
    from hypemeter.demo import run_demo

    run_demo(load_settings(host=host, port=port, data=data), rate=rate)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
