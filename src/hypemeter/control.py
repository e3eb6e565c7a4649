"""Administration of a data directory from the CLI, whether or not a server runs.

DuckDB lets one process write a file. When ``hypemeter serve`` owns the file,
CLI commands reach it over a Unix socket in the data directory (mode 0600, so
only the same user can); otherwise the CLI opens the store itself. Both paths
run the same ``dispatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from hypemeter.auth.audit import Action
from hypemeter.auth.audit_log import AuditLog
from hypemeter.auth.model import ApiKey, parse_scopes
from hypemeter.auth.service import AuthService
from hypemeter.backends.selection import open_backends, open_bus
from hypemeter.clock import SystemClock
from hypemeter.datadir import private_data_dir
from hypemeter.errors import HypemeterError, InvalidInput
from hypemeter.sealing import KeySource, SealedRegistryStore
from hypemeter.settings import Settings
from hypemeter.sync import SharedConfig

log = logging.getLogger("hypemeter.control")
MAX_REQUEST = 64 * 1024


def _key(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "tenant": key.tenant_id,
        "name": key.name,
        "scopes": sorted(s.value for s in key.scopes),
        "created_at_us": key.created_at_us,
        "revoked": not key.active,
        "limits": key.limits.payload(),
    }


async def dispatch(auth: AuthService, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one administration command against ``auth``."""
    if op == "tenants.create":
        tenant = await auth.create_tenant(str(args["name"]))
        return {"tenant": tenant.tenant_id}
    if op == "tenants.list":
        return {"tenants": [t.tenant_id for t in await auth.list_tenants()]}
    if op == "keys.create":
        try:
            scopes = parse_scopes(str(args["scopes"]))
        except ValueError as exc:
            raise InvalidInput(str(exc), field="scopes") from exc
        new = await auth.create_key(
            str(args["tenant"]), scopes, name=str(args.get("name", "")), limits=args.get("limits")
        )
        return {**_key(new.record), "key": new.secret}
    if op == "keys.list":
        owner = args.get("tenant")
        keys = await auth.list_keys(str(owner) if owner is not None else None)
        return {"keys": [_key(k) for k in keys]}
    if op == "keys.revoke":
        return _key(await auth.revoke_key(str(args["key_id"])))
    raise InvalidInput(f"unknown control command {op!r}", field="op")


SECRET_OPS = frozenset({"secrets.rotate"})


async def dispatch_secrets(secrets: SealedRegistryStore, op: str) -> dict[str, Any]:
    """Run one command on the secrets at rest (``SECRET_OPS``)."""
    if op == "secrets.rotate":
        done = await secrets.reseal()
        return {"resealed": done.resealed, "total": done.total, "keys": secrets.sealer.origin}
    raise InvalidInput(f"unknown control command {op!r}", field="op")


# Commands that change keys or tenants: (action, target type) of their audit entry.
AUDITED_COMMANDS = {
    "tenants.create": ("tenant.create", "tenant"),
    "keys.create": ("key.create", "key"),
    "keys.revoke": ("key.revoke", "key"),
}


async def audit_command(audit: AuditLog | None, op: str, result: dict[str, Any]) -> None:
    """Record a command's change in the audit log of the tenant it changed."""
    if audit is None or op not in AUDITED_COMMANDS:
        return
    name, kind = AUDITED_COMMANDS[op]
    tenant = str(result["tenant"])
    target = tenant if kind == "tenant" else str(result["id"])
    await audit.record_local(tenant, Action(name, kind, target))


class ControlServer:
    def __init__(
        self,
        path: Path,
        auth: AuthService,
        *,
        secrets: SealedRegistryStore | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._path = path
        self._auth = auth
        self._secrets = secrets
        self._audit = audit
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # The data directory is 0700 (unless it holds the user's own files too), so nobody
        # else reaches the socket even before its chmod; the process umask is left alone
        # (other threads create files meanwhile).
        private_data_dir(self._path.parent)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self._path))
            self._path.chmod(0o600)
        except OSError as exc:
            # E.g. a data path longer than a Unix socket path may be: serving goes on,
            # and CLI administration needs the server stopped.
            log.warning("no control socket at %s: %s", self._path, exc)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = msgspec.json.decode(line[:MAX_REQUEST])
            op = request["op"]
            if op in SECRET_OPS and self._secrets is not None:
                result = await dispatch_secrets(self._secrets, op)
            else:
                result = await dispatch(self._auth, op, request.get("args", {}))
                await audit_command(self._audit, op, result)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except HypemeterError as exc:
            reply = {"ok": False, "code": exc.code, "message": exc.message, "field": exc.field}
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            reply = {"ok": False, "code": "invalid_input", "message": f"bad request: {exc}"}
        writer.write(msgspec.json.encode(reply) + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


class ControlError(HypemeterError):
    def __init__(self, code: str, message: str, field: str | None) -> None:
        super().__init__(message, field=field)
        self.code = code


async def call_server(path: Path, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """Send a command to a running server; None when no server listens there."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:  # refused, missing, or a path too long for a socket
        return None
    writer.write(msgspec.json.encode({"op": op, "args": args}) + b"\n")
    await writer.drain()
    reply = msgspec.json.decode(await reader.readline())
    writer.close()
    if not reply["ok"]:
        raise ControlError(reply["code"], reply["message"], reply.get("field"))
    result: dict[str, Any] = reply["result"]
    return result


CHANGES = frozenset({"tenants.create", "keys.create", "keys.revoke", "secrets.rotate"})


async def run_admin(settings: Settings, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a command through a running server, or on the store directly when none runs."""
    reply = await call_server(settings.control_socket(), op, args)
    if reply is not None:
        return reply
    if op in SECRET_OPS:
        async with offline_secrets(settings) as secrets:
            reply = await dispatch_secrets(secrets, op)
    else:
        async with offline_admin(settings) as (auth, audit):
            reply = await dispatch(auth, op, args)
            await audit_command(audit, op, reply)
    if op in CHANGES and not settings.bus.startswith("memory:"):
        await tell_servers(settings)
    return reply


async def tell_servers(settings: Settings) -> None:
    """Tell the API processes of a deployment that keys or tenants changed."""
    bus = open_bus(settings.bus)
    await bus.start()
    try:
        await SharedConfig(bus, refresh_seconds=0).changed()
    finally:
        await bus.aclose()


@contextlib.asynccontextmanager
async def offline_auth(settings: Settings) -> AsyncIterator[AuthService]:
    """An AuthService on the store itself, for when no server holds it."""
    clock = SystemClock()
    backends = open_backends(settings, clock, admin_only=True)
    await backends.tenants.start()
    try:
        auth = AuthService(backends.tenants, clock)
        await auth.load()
        yield auth
    finally:
        await backends.tenants.aclose()


@contextlib.asynccontextmanager
async def offline_admin(settings: Settings) -> AsyncIterator[tuple[AuthService, AuditLog]]:
    """An AuthService and the audit log on the store itself, for when no server holds it."""
    clock = SystemClock()
    backends = open_backends(settings, clock, admin_only=True)
    audit = AuditLog(backends.audit, clock, retention_days=settings.audit_retention_days)
    await backends.tenants.start()
    try:
        await audit.start(purge=False)
        try:
            auth = AuthService(backends.tenants, clock)
            await auth.load()
            yield auth, audit
        finally:
            await audit.aclose()
    finally:
        await backends.tenants.aclose()


@contextlib.asynccontextmanager
async def offline_secrets(settings: Settings) -> AsyncIterator[SealedRegistryStore]:
    """The registry store with the keys of ``settings``, for when no server holds it."""
    backends = open_backends(settings, SystemClock(), admin_only=True)
    secrets = SealedRegistryStore(backends.registry, KeySource.of(settings))
    await secrets.start()
    try:
        yield secrets
    finally:
        await secrets.aclose()
