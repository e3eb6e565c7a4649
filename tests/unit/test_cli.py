"""The ``hypemeter`` command tree, put together from the cli package's modules."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from hypemeter.cli import app
from hypemeter.cli.options import as_json, load_settings


def _names(group: typer.Typer) -> list[str]:
    command = typer.main.get_command(group)
    assert isinstance(command, typer.core.TyperGroup)
    return list(command.commands)


def test_commands_keep_their_names_and_order() -> None:
    assert _names(app) == [
        "serve",
        "worker",
        "migrate",
        "simulate",
        "rebuild",
        "export",
        "import",
        "demo",
        "tenants",
        "keys",
        "secrets",
    ]
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    subcommands = {
        name: list(sub.commands)
        for name, sub in group.commands.items()
        if isinstance(sub, typer.core.TyperGroup)
    }
    assert subcommands == {
        "tenants": ["create", "list"],
        "keys": ["create", "list", "revoke"],
        "secrets": ["generate", "rotate"],
    }


def test_keys_create_keeps_its_options() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    keys = group.commands["keys"]
    assert isinstance(keys, typer.core.TyperGroup)
    options = [p.name for p in keys.commands["create"].params]
    assert options == [
        "tenant",
        "scopes",
        "name",
        "limit_influencers",
        "limit_campaigns",
        "limit_platforms",
        "limit_metrics",
        "max_value",
        "data",
    ]


def test_secrets_generate_prints_one_new_key_per_run() -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["secrets", "generate"])
    second = runner.invoke(app, ["secrets", "generate"])
    assert first.exit_code == 0 and second.exit_code == 0
    assert len(first.output.strip().splitlines()) == 1
    assert first.output.strip() != second.output.strip()


def test_simulate_without_a_key_fails_naming_the_flag() -> None:
    result = CliRunner().invoke(app, ["simulate", "--key", ""], env={"HYPEMETER_KEY": ""})
    assert result.exit_code == 2
    assert "--key is required" in result.output


def test_flags_given_override_the_environment_and_json_is_compact() -> None:
    settings = load_settings(port=9000, host=None)
    assert settings.port == 9000
    assert as_json({"influencers": ["a", "b"]}) == '{"influencers":["a","b"]}'
