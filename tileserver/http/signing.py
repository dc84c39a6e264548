"""Signed URLs: a slide's tiles for viewers that cannot send headers, and for CDN caching.

A signature covers one slide and an expiry: ``exp=<unix time>&sig=<HMAC-SHA256>`` added to
the query of any URL of that slide (native tiles and regions, ``/slides/{id}``, Deep Zoom,
IIIF, the viewer page) lets it through the access check without a credential, read-only,
until it expires. Signatures are made with ``--url-signing-key`` by ``POST /auth/sign`` (for
a credential that may see the slide) or ``tileserver sign-url``. A tile with only the
signature in its query is still answered by the stored-tile chain, and may be cached
publicly (a CDN keys it by the unguessable URL); every other response to a request with a
credential is ``Cache-Control: private``. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from urllib.parse import parse_qsl

#: Query keys a signature adds.
SIGNATURE_KEYS = frozenset({"exp", "sig"})
#: Where a URL names its slide.
_SLIDE_OF_PATH = re.compile(
    r"/(?:slides|viewer)/([^/]+)(?:/|$)|/dzi/([^/]+?)(?:\.dzi$|_files/)|/iiif/[23]/([^/]+)(?:/|$)"
)
#: The longest a signature may be asked to last.
MAX_SECONDS = 7 * 24 * 3600


def slide_of(path: str) -> str | None:
    """The slide id a URL path is about, if any."""
    match = _SLIDE_OF_PATH.match(path)
    return next((g for g in match.groups() if g), None) if match else None


class UrlSigner:
    def __init__(self, key: str) -> None:
        if len(key) < 16:
            raise ValueError("--url-signing-key must be at least 16 characters")
        self._key = key.encode()

    def signature(self, slide_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{slide_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def query(self, slide_id: str, seconds: int, now: float | None = None) -> tuple[str, int]:
        """(query string, expiry) for ``slide_id``, valid ``seconds`` from ``now``."""
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"a signature lasts 1 to {MAX_SECONDS} seconds")
        expires = int((time.time() if now is None else now) + seconds)
        return f"exp={expires}&sig={self.signature(slide_id, expires)}", expires

    def verify(self, path: str, query: str) -> bool:
        """Whether ``query`` carries a valid, unexpired signature for the slide of ``path``."""
        slide_id = slide_of(path)
        fields = dict(parse_qsl(query, keep_blank_values=True))
        expires, signature = fields.get("exp", ""), fields.get("sig", "")
        if slide_id is None or not expires.isdigit() or not signature:
            return False
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(signature, self.signature(slide_id, int(expires)))


def only_signature(query: str) -> bool:
    """Whether a query holds nothing but a signature (the chain may answer it as plain)."""
    keys = {key for key, _ in parse_qsl(query, keep_blank_values=True)}
    return bool(keys) and keys <= SIGNATURE_KEYS
