"""What the commands share: their common options, settings, failing, progress bars."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hypemeter.settings import Settings

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data directory [env HYPEMETER_DATA, default ./data]")
]

ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="embedded, or cluster: PostgreSQL, NATS and Redis from HYPEMETER_STORE, "
        "HYPEMETER_LOG and HYPEMETER_BUS [env HYPEMETER_PROFILE, default embedded]",
    ),
]

LimitOpt = Annotated[str | None, typer.Option(help="Comma-separated; the key is limited to them")]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then the flags that were given."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


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


def admin(settings: Settings, op: str, args: dict[str, Any]) -> dict[str, Any]:
    from hypemeter.control import run_admin
    from hypemeter.errors import HypemeterError

    try:
        return asyncio.run(run_admin(settings, op, args))
    except HypemeterError as exc:
        fail(exc.message)
        raise  # unreachable: fail() exits


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


def as_json(value: Any) -> str:
    """Compact JSON, as the commands print limits."""
    return json.dumps(value, separators=(",", ":"))
