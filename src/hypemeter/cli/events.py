"""Commands that move events: simulated traffic, rollup rebuilds, export and import."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from hypemeter.cli.options import DataOpt, fail, load_settings, progress_bar
from hypemeter.settings import Settings


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
