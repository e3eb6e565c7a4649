"""The ``hypemeter`` command: thin, it only parses flags and calls services.

The command tree is put together here, in the order ``--help`` lists it; the
commands live by what they do: ``serving`` (processes), ``accounts`` (tenants, keys,
secrets) and ``events`` (simulated traffic, rebuilds, export and import).
"""

from __future__ import annotations

import os

import typer

from hypemeter.cli.accounts import (
    keys_create,
    keys_list,
    keys_revoke,
    secrets_generate,
    secrets_rotate,
    tenants_create,
    tenants_list,
)
from hypemeter.cli.events import export_command, import_command, rebuild, simulate
from hypemeter.cli.serving import demo, migrate, serve, worker

app = typer.Typer(help="Hypemeter: real-time engagement analytics.", no_args_is_help=True)
tenants_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
secrets_app = typer.Typer(help="Keys that encrypt connector secrets at rest.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")

app.command()(serve)
app.command()(worker)
app.command()(migrate)
app.command()(simulate)
app.command()(rebuild)
app.command("export")(export_command)
app.command("import")(import_command)
app.command()(demo)
tenants_app.command("create")(tenants_create)
tenants_app.command("list")(tenants_list)
keys_app.command("create")(keys_create)
keys_app.command("list")(keys_list)
keys_app.command("revoke")(keys_revoke)
secrets_app.command("generate")(secrets_generate)
secrets_app.command("rotate")(secrets_rotate)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
