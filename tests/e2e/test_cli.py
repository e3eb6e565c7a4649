"""The ``hypemeter`` command as a user runs it: subprocesses, before and while serving."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from .support import ServerProcess, bearer, cli, create_key, event, list_keys, stored_rows

# The exit status after SIGTERM is checked on its own (test_sigterm_exits_with_code_0);
# here either outcome of a completed graceful shutdown is accepted.
CLEAN_SIGTERM_EXITS = (0, -signal.SIGTERM)


def post(url: str, key: str, events: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{url}/v1/events", json=events, headers=bearer(key), timeout=30)


def test_cli_administration_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"

    created = cli("tenants", "create", "acme", "--data", str(data))
    assert created.stdout.strip() == "created tenant acme"
    twice = cli("tenants", "create", "acme", "--data", str(data), check=False)
    assert twice.returncode == 2
    assert "already exists" in twice.stderr
    bad_name = cli("tenants", "create", "Not A Slug", "--data", str(data), check=False)
    assert bad_name.returncode == 2
    assert "tenant name" in bad_name.stderr

    admin_id, admin_secret = create_key(data, "acme", "ingest,read,admin", name="ops")
    sdk_id, sdk_secret = create_key(data, "acme", "ingest")

    listed = list_keys(data)
    assert listed == {
        admin_id: ["acme", "admin,ingest,read", "active", "ops"],
        sdk_id: ["acme", "ingest", "active", ""],
    }

    revoked = cli("keys", "revoke", sdk_id, "--data", str(data))
    assert revoked.stdout.strip() == f"revoked key {sdk_id} of tenant acme"
    after = cli("keys", "list", "--tenant", "acme", "--data", str(data))
    assert admin_secret not in after.stdout
    assert sdk_secret not in after.stdout
    assert {line.split("\t")[0]: line.split("\t")[3] for line in after.stdout.splitlines()} == {
        admin_id: "active",
        sdk_id: "revoked",
    }

    no_tenant = cli(
        "keys", "create", "--tenant", "nope", "--scopes", "ingest", "--data", str(data), check=False
    )
    assert no_tenant.returncode == 2
    assert "nope" in no_tenant.stderr
    bad_scope = cli(
        "keys", "create", "--tenant", "acme", "--scopes", "root", "--data", str(data), check=False
    )
    assert bad_scope.returncode == 2
    assert "root" in bad_scope.stderr
    unknown = cli("keys", "revoke", "ffffffffffff", "--data", str(data), check=False)
    assert unknown.returncode == 2
    assert "ffffffffffff" in unknown.stderr

    hashes = stored_rows(data, "SELECT key_hash FROM api_keys")
    assert len(hashes) == 2
    assert all(admin_secret not in h[0] and sdk_secret not in h[0] for h in hashes)


def test_cli_while_serving_sigterm_and_restart(
    tmp_path: Path, spawn: Callable[[Path], ServerProcess]
) -> None:
    data = tmp_path / "data"
    cli("tenants", "create", "acme", "--data", str(data))
    admin_id, admin = create_key(data, "acme", "ingest,read,admin")
    sdk_id, sdk = create_key(data, "acme", "ingest")

    server = spawn(data)
    kept = event()
    assert post(server.url, admin, [kept]).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    assert post(server.url, sdk, [event()]).status_code == 200

    # Administration while the server owns the store goes through the server.
    cli("tenants", "create", "globex", "--data", str(data))
    globex_id, globex = create_key(data, "globex", "ingest")
    assert post(server.url, globex, [event()]).status_code == 200
    assert list_keys(data) == {
        admin_id: ["acme", "admin,ingest,read", "active", ""],
        sdk_id: ["acme", "ingest", "active", ""],
        globex_id: ["globex", "ingest", "active", ""],
    }
    assert set(list_keys(data, "--tenant", "globex")) == {globex_id}

    # A CLI revocation takes effect on the server's very next request.
    cli("keys", "revoke", sdk_id, "--data", str(data))
    refused = post(server.url, sdk, [event()])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    # And so does one over HTTP, seen by the CLI.
    revoked = httpx.delete(
        f"{server.url}/v1/admin/keys/{admin_id}", headers=bearer(admin), timeout=30
    )
    assert revoked.json()["revoked"] is True
    assert post(server.url, admin, [event()]).status_code == 401
    assert list_keys(data)[admin_id][2] == "revoked"
    _, admin = create_key(data, "acme", "ingest,admin")

    # SIGTERM: in-flight work finishes, the lifespan shutdown runs, the socket goes.
    assert server.terminate() in CLEAN_SIGTERM_EXITS
    assert '"message": "hypemeter stopped"' in server.log()
    assert not (data / "control.sock").exists()

    # The store survives: keys, revocations and the dedup of stored events.
    restarted = spawn(data)
    assert post(restarted.url, admin, [kept]).json() == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": [],
    }
    assert post(restarted.url, sdk, [event()]).status_code == 401
    assert post(restarted.url, globex, [event()]).status_code == 200
    assert restarted.terminate() in CLEAN_SIGTERM_EXITS

    counts = dict(stored_rows(data, "SELECT tenant_id, count(*) FROM events GROUP BY 1"))
    assert counts == {"acme": 2, "globex": 2}


def test_sigterm_exits_with_code_0(tmp_path: Path, spawn: Callable[[Path], ServerProcess]) -> None:
    server = spawn(tmp_path / "data")
    assert httpx.get(f"{server.url}/readyz", timeout=30).json()["status"] == "ready"

    code = server.terminate()

    assert '"message": "hypemeter stopped"' in server.log()
    assert code == 0


def test_logs_are_json_lines_carrying_the_request_id(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data", tmp_path / "serve.log", env={"HYPEMETER_ACCESS_LOG": "true"}
    )
    try:
        server.wait_ready()
        answer = httpx.get(
            f"{server.url}/healthz", headers={"X-Request-ID": "trace-42"}, timeout=30
        )
        assert answer.headers["x-request-id"] == "trace-42"
        assert server.terminate() == 0
    finally:
        if server.proc.poll() is None:
            server.kill()

    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("request_id") == "trace-42"]
    assert [(r["logger"], r["path"], r["status"]) for r in access] == [
        ("hypemeter.access", "/healthz", 200)
    ]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
