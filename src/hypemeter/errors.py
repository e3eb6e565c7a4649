"""The exception tree of Hypemeter.

Services raise these; the API layer maps them to HTTP statuses in one place
(``hypemeter.api``). Nothing below the routes knows about HTTP.

    HypemeterError
    ├── InvalidInput                 400  a parameter or body field is wrong
    │   └── BatchRejected            400  every event of a batch was invalid
    ├── PayloadTooLarge              413  a request limit was exceeded
    ├── UnsupportedMediaType         415  content type or encoding not accepted
    ├── Unauthenticated              401  no key, or an unknown or revoked one
    ├── Forbidden                    403  the key lacks the scope
    ├── NotFound                     404
    ├── Conflict                     409
    ├── Gone                         410  it exists, and refuses everything (a disabled connector)
    ├── TokenRequestRefused          400  an OAuth token request, answered as RFC 6749 §5.2
    │   └── InvalidClient            401  the client (key id and key) did not authenticate
    ├── RateLimited                  429  carries retry_after and limit figures
    ├── Overloaded                   503  ingest queue full; carries retry_after
    └── StoreUnavailable             503  the store cannot be written
        └── SecretsUnavailable       503  no key opens (or seals) secrets at rest
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class HypemeterError(Exception):
    """Root of every error Hypemeter raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict[str, Any]:
        """Extra members of the error body, beyond code, message and field."""
        return {}


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event of a batch that was not accepted, and why."""

    index: int
    field: str | None
    error: str


class InvalidInput(HypemeterError):
    code = "invalid_input"


class BatchRejected(InvalidInput):
    code = "all_events_rejected"

    def __init__(self, rejected: Sequence[Rejection]) -> None:
        super().__init__(f"all {len(rejected)} events were rejected")
        self.rejected = list(rejected)


class PayloadTooLarge(HypemeterError):
    code = "payload_too_large"

    def __init__(self, message: str, *, limit: str, value: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value

    def details(self) -> dict[str, Any]:
        return {"limit": self.limit, "max": self.value}


class UnsupportedMediaType(HypemeterError):
    code = "unsupported_media_type"


class Unauthenticated(HypemeterError):
    code = "unauthenticated"


class Forbidden(HypemeterError):
    code = "forbidden"


class NotFound(HypemeterError):
    code = "not_found"


class Conflict(HypemeterError):
    code = "conflict"


class Gone(HypemeterError):
    code = "gone"


class TokenRequestRefused(HypemeterError):
    """A refused OAuth token request; ``code`` is the RFC 6749 §5.2 ``error``
    (invalid_request, invalid_grant, unsupported_grant_type, invalid_scope...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidClient(TokenRequestRefused):
    def __init__(self, message: str = "client authentication failed") -> None:
        super().__init__("invalid_client", message)


class RateLimited(HypemeterError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, limit: int, reset_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
        self.reset_after = reset_after


class Overloaded(HypemeterError):
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def queue_full(cls, pending: int, limit: int) -> Overloaded:
        """A store's write queue holds ``pending`` events, and one more batch would pass it."""
        return cls(
            f"ingest queue is full ({pending} events waiting; ingest_queue_events is {limit})",
            retry_after=1,
        )


class StoreUnavailable(HypemeterError):
    code = "store_unavailable"


class SecretsUnavailable(StoreUnavailable):
    """Secrets at rest cannot be encrypted or decrypted: no key, or not the right one.
    The message names the setting to fix."""

    code = "secrets_unavailable"
