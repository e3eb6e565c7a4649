"""Commands that manage tenants, keys and the keys that seal connector secrets."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hypemeter.cli.options import DataOpt, LimitOpt, admin, as_json, load_settings


def tenants_create(name: str, data: DataOpt = None) -> None:
    """Create a tenant."""
    result = admin(load_settings(data=data), "tenants.create", {"name": name})
    typer.echo(f"created tenant {result['tenant']}")


def tenants_list(data: DataOpt = None) -> None:
    """List tenants."""
    for name in admin(load_settings(data=data), "tenants.list", {})["tenants"]:
        typer.echo(name)


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
        typer.echo(f"limited to {as_json(result['limits'])}")
    typer.echo("store it now: it is not shown again")
    typer.echo(result["key"])


def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    data: DataOpt = None,
) -> None:
    """List keys (never their secrets)."""
    result = admin(load_settings(data=data), "keys.list", {"tenant": tenant})
    for key in result["keys"]:
        state = "revoked" if key["revoked"] else "active"
        limits = f"\t{as_json(key['limits'])}" if key.get("limits") else ""
        typer.echo(
            f"{key['id']}\t{key['tenant']}\t{','.join(key['scopes'])}\t{state}\t{key['name']}"
            + limits
        )


def keys_revoke(key_id: str, data: DataOpt = None) -> None:
    """Revoke a key; a running server refuses it from the next request on."""
    result = admin(load_settings(data=data), "keys.revoke", {"key_id": key_id})
    typer.echo(f"revoked key {result['id']} of tenant {result['tenant']}")


def secrets_generate() -> None:
    """Print a new key, to put first in HYPEMETER_SECRET_KEYS (or the key file)."""
    from hypemeter.sealing import new_key

    typer.echo(new_key())


def secrets_rotate(data: DataOpt = None) -> None:
    """Encrypt every stored connector secret again with the newest key.

    A running server does it with its own keys; otherwise this command opens the
    store with the keys of its environment. Afterwards the older keys can go."""
    result = admin(load_settings(data=data), "secrets.rotate", {})
    typer.echo(
        f"re-encrypted {result['resealed']} of {result['total']} connector records "
        f"with the newest key of {result['keys']}"
    )
