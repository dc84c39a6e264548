"""Credentials and roles: API keys and OIDC bearer tokens behind the one access check.

``RoleAuthorizer`` (built by ``load_authorizer`` when ``--api-keys`` or
``--oidc-jwks`` is set) wants a credential on every request but the probes (``/healthz``,
``/readyz``) and CORS preflights:

* ``Authorization: Bearer <token>``: a JSON Web Token signed by a key of the OIDC issuer's
  JWKS (PyJWT checks signature, expiry, issuer and audience), or an API key;
* ``X-API-Key: <key>``: an API key.

Roles are ordered ``read`` < ``write`` < ``admin``. Reading (``GET``, ``HEAD``, batch tile
reads) needs ``read``; STOW and other writes ``write``; cache purges and ``/metrics``
(unless ``--metrics-public``) ``admin``. No or a bad credential is a 401 with
``WWW-Authenticate``; too small a role a 403. A token's ``studies`` claim (configurable)
limits the studies it may see (``Grant.studies``).

API keys live in a file of ``KEY ROLE`` lines (``#`` comments), reread when it changes
(at most once a second), so keys rotate without a restart; keys are kept as SHA-256
digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tileserver.http.access import ALLOW_ALL, AccessRequest, Authorizer, Grant, Refusal
from tileserver.http.signing import UrlSigner
from tileserver.settings import access_checked

if TYPE_CHECKING:
    from tileserver.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("read", "write", "admin")
#: POSTs that only read: batch tile reads, and signing a slide's URLs.
_READ_POSTS = ("/tiles:batch", "/auth/sign")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/favicon.ico"})
#: The viewer's scripts and styles: the same for everyone, no slide data.
OPEN_PREFIXES = ("/static/",)
CHALLENGE = 'Bearer realm="tileserver"'
SIGNED = Grant("signed-url", "read", signed=True)


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def required_role(method: str, path: str, metrics_public: bool) -> str | None:
    """The role a request needs (None: none at all)."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    if path == "/metrics" and metrics_public:
        return None
    if path == "/metrics" or path.startswith("/cache"):
        return "admin"
    if method in ("GET", "HEAD") or (method == "POST" and path.endswith(_READ_POSTS)):
        return "read"
    return "write"


class ApiKeys:
    """``KEY ROLE`` lines of a file, reread when the file changes."""

    RECHECK_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[bytes, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = -self.RECHECK_SECONDS
        self._lock = threading.Lock()
        self._reload()

    def role(self, key: str) -> str | None:
        """The key's role, or None; every known digest is compared (constant time)."""
        self._maybe_reload()
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for known, role in self._keys.items():
            if hmac.compare_digest(known, digest):
                found = role
        return found

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= self.RECHECK_SECONDS:
            with self._lock:
                self._checked = now
                self._reload()

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            log.error("API key file %s unreadable: %s; no key is accepted", self.path, exc)
            self._keys, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        keys = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ROLES:
                log.error(
                    "%s line %d: expected 'KEY ROLE' with a role of %s", self.path, number, ROLES
                )
                continue
            keys[hashlib.sha256(fields[0].encode()).digest()] = fields[1]
        self._keys, self._stamp = keys, stamp
        log.info("API keys loaded from %s: %d", self.path, len(keys))


class OidcTokens:
    """Bearer JWTs checked against the issuer's JWKS (a file, or a URL PyJWT fetches and
    caches), its issuer and audience."""

    ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"]

    def __init__(self, settings: Settings) -> None:
        import jwt

        self.settings = settings
        source = settings.oidc_jwks or ""
        self._client: Any = None
        self._keys: Any = None
        if source.startswith(("http://", "https://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300)
        else:
            self._keys = jwt.PyJWKSet.from_dict(json.loads(Path(source).read_text()))

    def claims(self, token: str) -> dict[str, Any] | None:
        """The token's claims when it is valid, else None."""
        import jwt

        try:
            key = self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.ALGORITHMS,
                audience=self.settings.oidc_audience,
                issuer=self.settings.oidc_issuer,
                options={"require": ["exp"], "verify_aud": self.settings.oidc_audience is not None},
            )
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            log.info("bearer token refused: %s", exc)
            return None
        return claims

    def _key(self, token: str) -> Any:
        import jwt

        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        keys = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not keys:
            raise KeyError(f"no key {kid!r} in the JWKS")
        return keys[0].key


def _highest(value: Any) -> str | None:
    roles = [value] if isinstance(value, str) else list(value or [])
    ranked = sorted((r for r in roles if r in ROLES), key=rank)
    return ranked[-1] if ranked else None


class RoleAuthorizer:
    """API keys and/or OIDC tokens, and the role each request needs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = ApiKeys(Path(settings.api_keys)) if settings.api_keys else None
        self.tokens = OidcTokens(settings) if settings.oidc_jwks else None
        key = settings.url_signing_key
        self.signer = UrlSigner(key) if key else None

    def check(self, request: AccessRequest) -> Grant | Refusal:
        method, path = request.method, request.path
        if method == "OPTIONS" and request.header("access-control-request-method"):
            return Grant("preflight", "read")
        needed = required_role(method, path, self.settings.metrics_public)
        if needed is None:
            return Grant("anonymous", "read")
        signed = self._signed(request, needed)
        if signed is not None:
            return signed
        grant = self._grant(request)
        if grant is None:
            return Refusal(401, "a valid API key or bearer token is required", CHALLENGE)
        if rank(grant.role) < rank(needed):
            return Refusal(403, f"{needed} access is required, the credential has {grant.role}")
        return grant

    def _signed(self, request: AccessRequest, needed: str) -> Grant | None:
        """A read of a slide's URL let in by its signature (``http/signing.py``)."""
        if self.signer is None or needed != "read" or "sig=" not in request.query:
            return None
        if request.method not in ("GET", "HEAD"):
            return None
        return SIGNED if self.signer.verify(request.path, request.query) else None

    def _grant(self, request: AccessRequest) -> Grant | None:
        bearer = request.header("authorization") or ""
        scheme, _, token = bearer.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        key = request.header("x-api-key") or ""
        if token.count(".") == 2 and self.tokens is not None:
            return self._token_grant(token)
        for candidate in (token, key):
            if candidate and self.keys is not None:
                role = self.keys.role(candidate)
                if role is not None:
                    return Grant(f"key:{hashlib.sha256(candidate.encode()).hexdigest()[:8]}", role)
        return None

    def _token_grant(self, token: str) -> Grant | None:
        assert self.tokens is not None
        claims = self.tokens.claims(token)
        if claims is None:
            return None
        role = _highest(claims.get(self.settings.oidc_role_claim))
        if role is None:
            return None
        studies = claims.get(self.settings.oidc_studies_claim)
        allowed = frozenset(map(str, studies)) if isinstance(studies, list) else None
        return Grant(str(claims.get("sub", "token")), role, allowed)


def warn_if_open(settings: Settings) -> None:
    """A loud warning when the server listens beyond loopback with no access check."""
    loopback = settings.host in ("127.0.0.1", "localhost", "::1") or settings.host.startswith(
        "127."
    )
    if not loopback and not access_checked(settings):
        message = (
            f"WARNING: tileserver listens on {settings.host} with no access check: anyone "
            "who can reach it can read every slide, search patient data, upload with STOW "
            "and purge the cache. Set --api-keys or --oidc-jwks (see README, Access control)."
        )
        log.warning(message)
        print(message, file=sys.stderr, flush=True)


def load_authorizer(settings: Settings) -> Authorizer:
    """The authorizer ``settings.authorizer`` names ("module:factory"), else API keys and
    OIDC tokens when configured (``http/auth.py``), else ``ALLOW_ALL``."""
    spec = settings.authorizer
    if not spec and (settings.api_keys or settings.oidc_jwks):
        return RoleAuthorizer(settings)
    if not spec:
        return ALLOW_ALL
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--authorizer takes module:factory, not {spec!r}")
    factory = getattr(importlib.import_module(module), name)
    authorizer: Authorizer = factory(settings)
    return authorizer
