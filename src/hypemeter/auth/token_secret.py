"""Where the secret that signs access tokens comes from.

``HYPEMETER_JWT_SECRET`` when set. Otherwise, on the embedded profile, a file
``jwt.secret`` in the data directory, created (mode 0600) on the first start.
Every API process of a cluster must sign and verify with the same secret, and
their data directories are their own: there the secret must come from the
environment, and without it access tokens are off (keys keep working).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from hypemeter.auth.access_tokens import MIN_SECRET_BYTES, AccessTokens
from hypemeter.errors import InvalidInput

log = logging.getLogger("hypemeter.auth")
SECRET_FILE = "jwt.secret"  # noqa: S105  (a file name)


class TokenSettings(Protocol):
    """The settings access tokens read (``hypemeter.settings.Settings`` has them): named
    here so that auth does not depend on the whole application's settings."""

    @property
    def jwt_secret(self) -> SecretStr | None: ...

    @property
    def profile(self) -> str: ...

    @property
    def data(self) -> Path: ...

    @property
    def jwt_issuer(self) -> str: ...

    @property
    def access_token_seconds(self) -> int: ...


def load_token_secret(settings: TokenSettings) -> bytes | None:
    """The signing secret, or None when access tokens are off (cluster, none set)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    if settings.profile == "cluster":
        log.warning(
            "OAuth access tokens are off: set HYPEMETER_JWT_SECRET (the same on every API "
            "process) to issue and accept them"
        )
        return None
    return _file_secret(settings.data.resolve() / SECRET_FILE)


def _file_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
    secret = path.read_text().strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidInput(
            f"{path} holds fewer than {MIN_SECRET_BYTES} bytes; delete it to make a new one",
            field="jwt_secret",
        )
    return secret


def access_tokens_of(settings: TokenSettings) -> AccessTokens | None:
    """The issuer and verifier of access tokens the settings call for, or None (off)."""
    secret = load_token_secret(settings)
    if secret is None:
        return None
    return AccessTokens(
        secret, issuer=settings.jwt_issuer, lifetime_s=settings.access_token_seconds
    )
