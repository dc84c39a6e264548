"""The one access check: an ``Authorizer`` sees every request once, before any byte is read.

The stored-tile chain (``http/chain.py``) asks it for every request that reaches the server,
on uvicorn and granian, while the app loads and after; a request it passes on to the app
carries the grant in its scope (``GRANT_KEY``), and the app's ``AccessMiddleware`` asks only
for requests that came another way. The default allows everything;
``http/auth.load_authorizer`` picks API keys and OIDC tokens (``--api-keys``,
``--oidc-jwks``), or ``--authorizer module:factory`` (env ``TILESERVER_AUTHORIZER``):
``factory(settings)`` returns it. Standard library only: the early path imports this
before the app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tileserver.grants import ANONYMOUS, CURRENT_GRANT, Grant, may_see

if TYPE_CHECKING:
    pass

__all__ = [
    "ALLOW_ALL",
    "ANONYMOUS",
    "CURRENT_GRANT",
    "GRANT_KEY",
    "AccessRequest",
    "Authorizer",
    "Grant",
    "Refusal",
    "may_see",
]

#: The ASGI scope key under which a request carries the grant the chain gave it.
GRANT_KEY = "tileserver.grant"


class AccessRequest(Protocol):
    """What an authorizer may look at: method, path, and headers by lower-case name."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str: ...

    def header(self, name: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the authorizer turns away: 401 (no or bad credentials) or 403."""

    status: int
    reason: str
    challenge: str | None = None  # the WWW-Authenticate value of a 401

    def body(self) -> bytes:
        return json.dumps({"error": self.reason}).encode()

    def challenge_headers(self) -> tuple[tuple[str, str], ...]:
        """``WWW-Authenticate`` when the refusal has one (a 401)."""
        return (("www-authenticate", self.challenge),) if self.challenge else ()


class Authorizer(Protocol):
    def check(self, request: AccessRequest) -> Grant | Refusal: ...


class AllowAll:
    """The default: every request is served, as the anonymous principal."""

    def check(self, request: AccessRequest) -> Grant | Refusal:
        return ANONYMOUS


ALLOW_ALL = AllowAll()


@dataclass(frozen=True, slots=True)
class HeaderRequest:
    """An ``AccessRequest`` over a list of (lower-case name, value) pairs."""

    method: str
    path: str
    query: str
    pairs: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.pairs if k == name), None)
