"""Data at rest: a private data directory, and connector secrets encrypted in the store.

Every file the embedded profile writes (the DuckDB file and its WAL, journal
segments, spilled dedup runs, the key file, the control socket, exports) is its
user's only. Connector secrets and polling credentials never reach a file in
plain text: the tests search every byte of the data directory (the WAL included,
while the server runs) for them, and the connector still verifies its webhooks
after a restart, after a key rotation, and not at all without its key.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypemeter.backends.selection import open_backends
from hypemeter.clock import SystemClock
from hypemeter.sealing import KEY_FILE_NAME, Sealer, new_key
from hypemeter.settings import Settings

from . import cluster
from .support import LiveServer, ServerFactory, cli, event, free_port, run_coroutine
from .webhooks_support import meta_signed

PRIVATE = 0o077  # no bit of these may be set: group and others get nothing
CHALLENGE = "1158201444"


def marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def holders(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """Which files under ``root`` hold which needle, in any of the encodings a store
    might use for text (UTF-8 and UTF-16)."""
    found: dict[str, list[str]] = {}
    for path in files_under(root):
        data = path.read_bytes()
        for needle in needles:
            if any(needle.encode(enc) in data for enc in ("utf-8", "utf-16-le", "utf-16-be")):
                found.setdefault(needle, []).append(str(path.relative_to(root)))
    return found


def modes(root: Path) -> dict[str, str]:
    """Everything under ``root`` (and ``root``) whose mode lets anyone else in."""
    wide = {}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & PRIVATE:
            wide[str(path.relative_to(root.parent))] = oct(mode)
    return wide


def instagram_connector(srv: LiveServer) -> tuple[str, dict[str, str], str]:
    """A connector with webhook secrets and a polling credential, all recognisable."""
    secrets = {"app_secret": marker("app-secret"), "verify_token": marker("verify-token")}
    token = marker("access-token")
    with srv.client(srv.keys["acme"].admin) as admin:
        made = admin.post(
            "/v1/admin/connectors",
            json={
                "platform": "instagram",
                "secrets": secrets,
                "credentials": [{"access_token": token, "account_id": "17841400000000001"}],
            },
        )
    assert made.status_code == 201, made.text
    return made.json()["id"], secrets, token


def verifies(srv: LiveServer, connector_id: str, secrets: dict[str, str]) -> list[object]:
    """The handshake with the right verify token, a delivery signed with the app secret,
    and one signed with another secret: their statuses, and the challenge echoed."""
    url = f"/v1/webhooks/instagram/{connector_id}"
    body = json.dumps({"object": "instagram", "entry": []}).encode()
    with srv.client() as platform:
        handshake = platform.get(
            url,
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": secrets["verify_token"],
                "hub.challenge": CHALLENGE,
            },
        )
        signed = platform.post(url, content=body, headers=meta_signed(secrets["app_secret"], body))
        forged = platform.post(url, content=body, headers=meta_signed("not-the-secret", body))
    answered = handshake.text if handshake.status_code == 200 else ""
    return [handshake.status_code, signed.status_code, forged.status_code, answered]


def test_the_data_directory_and_every_file_in_it_are_private(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as an older version left it
    srv = make_server(data=data, poll_connectors=False, dedup_memory_entries=1_000)
    # Enough events for the dedup index to spill a run to a file, and a WAL.
    with srv.client(srv.keys["acme"].ingest) as client:
        for _ in range(3):
            sent = client.post("/v1/events", json=[event() for _ in range(600)])
            assert sent.status_code == 200, sent.text
    instagram_connector(srv)

    assert modes(data) == {}
    # ... and that covered each kind of file the store writes.
    if not cluster.POSTGRES:
        assert (data / "hypemeter.duckdb.wal").exists()
        assert list((data / "hypemeter.journal").iterdir())
        assert list((data / "hypemeter.dedup").glob("run-*.npy"))
        assert (data / KEY_FILE_NAME).exists()
    assert (data / "control.sock").exists()
    # Stops the server (on the cluster, once the workers committed every event).
    assert srv.rows("SELECT count(*) FROM events WHERE tenant_id = 'acme'") == [(1800,)]
    assert modes(data) == {}

    # An export of the tenant's raw events is as private, even over a wider file.
    out = tmp_path / "acme.ndjson"
    out.write_text("")
    out.chmod(0o644)
    cli("export", "--tenant", "acme", "--out", str(out), "--data", str(data))
    assert out.read_text().count("\n") == 1800
    assert oct(stat.S_IMODE(out.stat().st_mode)) == oct(0o600)


def test_a_store_file_elsewhere_leaves_that_directory_and_its_other_files_alone(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    if cluster.POSTGRES:
        pytest.skip("a DuckDB file named by its DSN")
    # A project directory holding the store file, and a working directory used as the
    # data directory (`--data .`): both the user's, with files of their own.
    project, workdir = tmp_path / "proj", tmp_path / "work"
    theirs = [project / "x.csv", project / "x-notes.txt", workdir / "README.md"]
    for directory in (project, workdir):
        directory.mkdir()
        directory.chmod(0o755)
    for path in theirs:
        path.write_text("the user's own")
        path.chmod(0o644)

    srv = make_server(data=workdir, store=f"duckdb:///{project / 'x.duckdb'}")
    instagram_connector(srv)
    srv.stop()

    left = [oct(stat.S_IMODE(p.stat().st_mode)) for p in (project, workdir, *theirs)]
    assert left == [oct(0o755)] * 2 + [oct(0o644)] * 3
    # ... while the store's own files are private.
    assert oct(stat.S_IMODE((project / "x.duckdb").stat().st_mode)) == oct(0o600)
    assert modes(project / "x.journal") == {}


def test_connector_secrets_and_credentials_are_encrypted_at_rest(
    make_server: ServerFactory,
) -> None:
    srv = make_server(poll_connectors=False)
    connector_id, secrets, token = instagram_connector(srv)
    needles = [*secrets.values(), token]
    # Events after the connector: the WAL holds the connector's row among others.
    assert srv.post_events(srv.keys["acme"].ingest, [event()]).status_code == 200
    assert verifies(srv, connector_id, secrets) == [200, 200, 403, CHALLENGE]

    if not cluster.POSTGRES:
        assert (srv.data / "hypemeter.duckdb.wal").stat().st_size > 0
    assert holders(srv.data, needles) == {}  # while the server runs: the WAL included

    docs = srv.rows("SELECT doc FROM registry WHERE kind = 'connector'")  # stops it
    assert len(docs) == 1
    assert docs[0][0].startswith('{"sealed":"fernet"')
    assert not any(needle in docs[0][0] for needle in needles)
    assert holders(srv.data, needles) == {}  # after the checkpoint of the stop

    again = make_server(data=srv.data, keys=srv.keys, poll_connectors=False)
    assert verifies(again, connector_id, secrets) == [200, 200, 403, CHALLENGE]
    with again.client(again.keys["acme"].admin) as admin:
        listed = admin.get("/v1/admin/connectors")
    assert listed.status_code == 200
    assert [c["credentials"] for c in listed.json()["data"]] == [1]
    assert not any(needle in listed.text for needle in needles)


def test_secrets_an_earlier_version_stored_plain_are_sealed_and_leave_the_files(
    make_server: ServerFactory,
) -> None:
    key = new_key()
    srv = make_server(poll_connectors=False, secret_keys=key)
    connector_id, secrets, token = instagram_connector(srv)
    srv.stop()
    run_coroutine(store_plain(srv.settings, key))  # as a version before encryption did
    needles = [*secrets.values(), token]
    if not cluster.POSTGRES:
        assert holders(srv.data, needles)  # in the DuckDB file

    # The start seals them; the next one rewrites the file without the old blocks.
    sealing = make_server(data=srv.data, keys=srv.keys, poll_connectors=False, secret_keys=key)
    docs = sealing.rows("SELECT doc FROM registry WHERE kind = 'connector'")  # stops it
    assert [doc.startswith('{"sealed":"fernet"') for (doc,) in docs] == [True]
    again = make_server(data=srv.data, keys=srv.keys, poll_connectors=False, secret_keys=key)
    assert verifies(again, connector_id, secrets) == [200, 200, 403, CHALLENGE]
    again.stop()
    assert holders(srv.data, needles) == {}


async def store_plain(settings: Settings, key: str) -> None:
    """Write every connector document back in plain text through the unsealed store."""
    registry = open_backends(settings, SystemClock(), admin_only=True).registry
    await registry.start()
    try:
        for tenant_id, stored in await registry.all_entities("connector"):
            plain = dataclasses.replace(stored, doc=Sealer([key]).open(stored.doc))
            assert await registry.update_entity(tenant_id, plain)
    finally:
        await registry.aclose()


def test_a_new_key_rotates_in_and_the_old_one_goes(make_server: ServerFactory) -> None:
    old, new = new_key(), new_key()
    srv = make_server(poll_connectors=False, secret_keys=old)
    connector_id, secrets, _ = instagram_connector(srv)
    srv.stop()

    # The new key first, the old one after it: both open, and rotation seals anew.
    done = cli(
        "secrets",
        "rotate",
        "--data",
        str(srv.data),
        env={"HYPEMETER_SECRET_KEYS": f"{new},{old}"},
    )
    assert "re-encrypted 1 of 1 connector records" in done.stdout, done.stdout

    with_new = make_server(data=srv.data, keys=srv.keys, poll_connectors=False, secret_keys=new)
    assert verifies(with_new, connector_id, secrets) == [200, 200, 403, CHALLENGE]
    # Through the running server (its control socket), with the server's own keys:
    # everything is sealed with the newest already.
    again = cli("secrets", "rotate", "--data", str(srv.data), env={"HYPEMETER_SECRET_KEYS": ""})
    assert "re-encrypted 0 of 1 connector records" in again.stdout, again.stdout
    with_new.stop()

    # The old key alone opens nothing any more: the server refuses to start.
    refused = serve_once(srv.data, {"HYPEMETER_SECRET_KEYS": old})
    assert refused.returncode != 0
    assert "HYPEMETER_SECRET_KEYS" in refused.stderr, refused.stderr[-2000:]


def test_a_store_with_encrypted_secrets_and_no_key_refuses_to_start(
    make_server: ServerFactory,
) -> None:
    srv = make_server(poll_connectors=False)
    instagram_connector(srv)
    srv.stop()
    key_file = srv.data / KEY_FILE_NAME
    if key_file.exists():
        key_file.unlink()  # the embedded profile's key, lost

    refused = serve_once(srv.data, {"HYPEMETER_SECRET_KEYS": ""})

    assert refused.returncode != 0
    assert "HYPEMETER_SECRET_KEYS" in refused.stderr, refused.stderr[-2000:]
    assert "encrypted connector secrets" in refused.stderr
    assert not key_file.exists()  # no new key was made over the lost one


def serve_once(data: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``hypemeter serve`` on ``data``; it must exit by itself (a refused start)."""
    return cli(
        "serve",
        "--port",
        str(free_port()),
        "--data",
        str(data),
        check=False,
        timeout=90,
        env={"HYPEMETER_DECODE_WORKERS": "0", "HYPEMETER_LOG_LEVEL": "info", **env},
    )


def test_secrets_generate_prints_a_usable_key() -> None:
    key = cli("secrets", "generate").stdout.strip()
    sealer = Sealer([key])
    assert sealer.open(sealer.seal("a secret")) == "a secret"
