"""Secrets at rest: connector secrets and polling credentials, encrypted in the store.

A connector document (its webhook secrets, its platform credentials and the rest)
is written to the registry store sealed with Fernet (AES-128-CBC with an
HMAC-SHA256, from ``cryptography``) and opened when it is read back; no other
part of the service sees the difference. The keys form a ring, newest first:
the newest seals, every one opens, so a key is rotated by putting a new one in
front, restarting, re-sealing what is stored (``hypemeter secrets rotate``) and
then dropping the old one.

Where the keys come from (``KeySource``): ``HYPEMETER_SECRET_KEYS``
(comma-separated), or ``HYPEMETER_SECRET_KEY_FILE`` (one a line); without
either, the embedded profile keeps one in ``<data>/secret.key``, created 0600 on
first start. A key beside the data only protects copies of the database files
that leave without it (a backup, a support bundle); set a key from outside the
data directory to protect more. The cluster profile never makes a key: without
one it starts as long as the store holds nothing sealed, and refuses to create a
connector. A store that holds sealed documents and no key that opens them
refuses to start, naming the setting.

Documents written in plain JSON by earlier versions are sealed when the store starts
with a key (without one they are read as they are). Whenever documents are written
again sealed (at start, or by ``hypemeter secrets rotate``), the store is asked to drop
the old versions its files still hold (``RegistryStore.reclaim``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from hypemeter.errors import InvalidInput, SecretsUnavailable
from hypemeter.registry.model import RegistryRecord

if TYPE_CHECKING:
    from hypemeter.registry.ports import RegistryStore
    from hypemeter.settings import Settings

log = logging.getLogger("hypemeter.sealing")

KEY_FILE_NAME = "secret.key"
SEALED_KINDS = ("connector",)
SETTINGS_HINT = "set HYPEMETER_SECRET_KEYS or HYPEMETER_SECRET_KEY_FILE"
_PREFIX = '{"sealed":'


class _Sealed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sealed: str  # the scheme: "fernet"
    token: str


def is_sealed(doc: str) -> bool:
    return doc.startswith(_PREFIX)


def new_key() -> str:
    """A fresh Fernet key (32 random bytes, URL-safe base64)."""
    return Fernet.generate_key().decode()


class Sealer:
    """Seals and opens documents with a ring of Fernet keys, newest first.

    ``origin`` names where the keys came from, for error messages.
    """

    def __init__(self, keys: Sequence[str] = (), *, origin: str = "") -> None:
        self.origin = origin
        self._fernets = [_fernet(key, origin, index) for index, key in enumerate(keys)]
        self._ring = MultiFernet(self._fernets) if self._fernets else None

    @property
    def has_keys(self) -> bool:
        return self._ring is not None

    def seal(self, plain: str) -> str:
        """The sealed document of ``plain``; SecretsUnavailable without a key."""
        if self._ring is None:
            raise SecretsUnavailable(
                f"secrets cannot be stored: no encryption key is set; {SETTINGS_HINT} "
                "(comma-separated Fernet keys, newest first; `hypemeter secrets generate` "
                "makes one)",
                field="secret_keys",
            )
        token = self._ring.encrypt(plain.encode()).decode()
        return msgspec.json.encode(_Sealed("fernet", token)).decode()

    def open(self, doc: str) -> str:
        """The plain document; a document that was never sealed is returned as it is.
        SecretsUnavailable when no key of the ring opens it."""
        if not is_sealed(doc):
            return doc
        token = msgspec.json.decode(doc, type=_Sealed).token.encode()
        if self._ring is None:
            raise SecretsUnavailable(
                f"the store holds encrypted connector secrets and no key is set: {SETTINGS_HINT}",
                field="secret_keys",
            )
        try:
            return self._ring.decrypt(token).decode()
        except InvalidToken as exc:
            raise SecretsUnavailable(
                f"encrypted connector secrets in the store open with none of the keys of "
                f"{self.origin}: add the key they were sealed with ({SETTINGS_HINT}; the "
                "newest first, older ones after it)",
                field="secret_keys",
            ) from exc

    def reseal(self, doc: str) -> str | None:
        """``doc`` sealed with the newest key, or None when it already is."""
        if is_sealed(doc) and self._fernets:
            token = msgspec.json.decode(doc, type=_Sealed).token.encode()
            try:
                self._fernets[0].decrypt(token)
            except InvalidToken:
                pass
            else:
                return None
        return self.seal(self.open(doc))


def _fernet(key: str, origin: str, index: int) -> Fernet:
    try:
        return Fernet(key.strip().encode())
    except ValueError as exc:
        raise InvalidInput(
            f"key {index + 1} of {origin} is not a Fernet key (32 bytes in URL-safe "
            "base64; `hypemeter secrets generate` makes one)",
            field="secret_keys",
        ) from exc


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where the keys come from; read when the store starts."""

    listed: str | None = None  # HYPEMETER_SECRET_KEYS
    file: Path | None = None  # HYPEMETER_SECRET_KEY_FILE
    default_file: Path | None = None  # embedded: <data>/secret.key, made when missing

    @classmethod
    def of(cls, settings: Settings) -> KeySource:
        listed = settings.secret_keys.get_secret_value() if settings.secret_keys else None
        embedded = settings.store_dsn().startswith("duckdb:")
        default = settings.data.resolve() / KEY_FILE_NAME if embedded else None
        return cls(listed or None, settings.secret_key_file, default)

    def load(self, *, sealed_stored: bool) -> Sealer:
        """The keys; the embedded default key file is created when missing, unless the
        store already holds sealed documents (their key is missing then, not new)."""
        if self.listed is not None and self.file is not None:
            raise InvalidInput(
                "set HYPEMETER_SECRET_KEYS or HYPEMETER_SECRET_KEY_FILE, not both",
                field="secret_keys",
            )
        if self.listed is not None:
            return Sealer(_split(self.listed), origin="HYPEMETER_SECRET_KEYS")
        if self.file is not None:
            return _read_key_file(self.file, f"HYPEMETER_SECRET_KEY_FILE ({self.file})")
        if self.default_file is None:
            return Sealer()
        if not self.default_file.exists():
            if sealed_stored:
                raise SecretsUnavailable(
                    "the store holds encrypted connector secrets but their key file "
                    f"{self.default_file} is missing: restore it, or {SETTINGS_HINT}",
                    field="secret_keys",
                )
            _create_key_file(self.default_file)
        return _read_key_file(self.default_file, f"the key file {self.default_file}")


def _split(listed: str) -> list[str]:
    return [key.strip() for key in listed.split(",") if key.strip()]


def _read_key_file(path: Path, origin: str) -> Sealer:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretsUnavailable(
            f"cannot read {origin}: {exc.strerror or exc}", field="secret_key_file"
        ) from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise SecretsUnavailable(f"{origin} holds no key", field="secret_key_file")
    if path.stat().st_mode & 0o077:
        log.warning("key file readable by other users: chmod 600 it", extra={"path": str(path)})
    return Sealer(keys, origin=origin)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it a moment ago: use theirs
    with os.fdopen(fd, "w") as handle:
        handle.write("# Hypemeter secret keys, newest first; keep a copy apart from the data\n")
        handle.write(new_key() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("created the secret key file", extra={"path": str(path)})


@dataclass(frozen=True, slots=True)
class Resealed:
    resealed: int  # documents written again with the newest key
    total: int  # sealed kinds' documents seen


class SealedRegistryStore:
    """A registry store that seals the documents of ``kinds`` on their way in and
    opens them on their way out; every other document passes untouched."""

    def __init__(
        self, inner: RegistryStore, keys: KeySource, *, kinds: Sequence[str] = SEALED_KINDS
    ) -> None:
        self._inner = inner
        self._keys = keys
        self._kinds = frozenset(kinds)
        self.sealer = Sealer()

    async def start(self) -> None:
        """Start the store, load the keys and, with a key, seal the documents an earlier
        version stored plain; raises SecretsUnavailable when the store holds sealed
        documents that no key opens, naming the setting to fix."""
        await self._inner.start()
        try:
            stored = await self._stored()
            sealed_stored = any(is_sealed(r.doc) for _, r in stored)
            self.sealer = self._keys.load(sealed_stored=sealed_stored)
            for _, record in stored:
                self.sealer.open(record.doc)
            if self.sealer.has_keys:
                plain = await self._write_again(stored, self._seal_plain)
                if plain:
                    log.info(
                        "sealed connector records stored in plain text", extra={"records": plain}
                    )
        except BaseException:
            await self._inner.aclose()  # the process exits: leave no store thread behind
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        return await self._inner.insert_entity(tenant_id, self._sealed(record))

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        return await self._inner.update_entity(tenant_id, self._sealed(record))

    async def get_entity(self, tenant_id: str, kind: str, entity_id: str) -> RegistryRecord | None:
        record = await self._inner.get_entity(tenant_id, kind, entity_id)
        return None if record is None else self._opened(record)

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        return await self._inner.delete_entity(tenant_id, kind, entity_id)

    async def list_entities(
        self,
        tenant_id: str,
        kind: str,
        *,
        tokens: Sequence[str],
        search: str | None,
        after: str | None,
        limit: int,
    ) -> list[RegistryRecord]:
        records = await self._inner.list_entities(
            tenant_id, kind, tokens=tokens, search=search, after=after, limit=limit
        )
        return [self._opened(r) for r in records]

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        return [(t, self._opened(r)) for t, r in await self._all(kind, tenant_id)]

    async def reseal(self) -> Resealed:
        """Write every sealed kind's document again with the newest key (plain ones from
        earlier versions included); documents already sealed with it are left alone."""
        stored = await self._stored()
        return Resealed(await self._write_again(stored, self.sealer.reseal), len(stored))

    def __getattr__(self, name: str) -> Any:
        # Operations the port gains later pass through; those above are the ones that
        # carry documents.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def _all(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        return await self._inner.all_entities(kind, tenant_id)

    async def _stored(self) -> list[tuple[str, RegistryRecord]]:
        return [found for kind in sorted(self._kinds) for found in await self._all(kind)]

    async def _write_again(
        self, stored: list[tuple[str, RegistryRecord]], seal: Callable[[str], str | None]
    ) -> int:
        """Write each document of ``stored`` that ``seal`` gives a new version of; then,
        if any was, have the store drop the old versions its files still hold (plain
        secrets, or ones sealed with a key being retired). How many were written."""
        written = 0
        for tenant_id, record in stored:
            doc = seal(record.doc)
            if doc is not None:
                await self._inner.update_entity(tenant_id, dataclasses.replace(record, doc=doc))
                written += 1
        if written:
            await self._inner.reclaim()
        return written

    def _seal_plain(self, doc: str) -> str | None:
        return None if is_sealed(doc) else self.sealer.seal(doc)

    def _sealed(self, record: RegistryRecord) -> RegistryRecord:
        if record.kind not in self._kinds:
            return record
        return dataclasses.replace(record, doc=self.sealer.seal(record.doc))

    def _opened(self, record: RegistryRecord) -> RegistryRecord:
        if record.kind not in self._kinds or not is_sealed(record.doc):
            return record
        return dataclasses.replace(record, doc=self.sealer.open(record.doc))
