"""The one stored-tile path: every request meets it first, on every server front.

A viewer's stream of requests is mostly plain ``GET``s of stored frames and of DZI tiles
rendered before. The chain answers those without the app, and checks access for every
request, in this order:

1. the ``Authorizer`` (``http/access.py``): a refusal is answered here, a grant travels on
   with the request, so the app does not check again; then the optional per-client rate
   limit (``http/ratelimit.py``);
2. while the app loads: ``/healthz`` and ``/readyz`` (alive, not ready), and stored tiles
   from the catalog's tile locators (``http/early.py``: a blocking read, in a thread);
3. once the app is up: stored tiles and cached DZI tiles that can be answered without
   waiting (``http/fastpath.py``).

Anything else (a query, ``HEAD``, ``If-None-Match``, a slide not open, bytes not cached, an
error) goes to the app. The server fronts are thin adapters: ``http/asgi.py`` (uvicorn) and
``http/rsgi.py`` (granian); both build headers with ``stored.ResponseHeaders``. Standard
library only: it runs before the app's imports are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from tileserver.http.access import ALLOW_ALL, Authorizer, Grant, Refusal
from tileserver.http.accesslog import AccessLog
from tileserver.http.ratelimit import RateLimit
from tileserver.http.signing import only_signature
from tileserver.http.stored import JSON, TILE_PATH, Answer, CorsPolicy, ResponseHeaders

#: ``first``'s answer when only a blocking read can tell: await ``later``.
LATER = Answer(0, b"", "")
#: What the chain answers for the probes while the app loads: alive, not ready yet.
PROBES = {
    "/healthz": Answer(200, b'{"status":"ok"}', JSON),
    "/readyz": Answer(503, b'{"status":"starting","ready":false}', JSON),
}


class TileLookup(Protocol):
    def lookup(self, path: str) -> Answer | None:
        """A complete 200 for ``path``, found without waiting, or None."""
        ...


class BlockingLookup(Protocol):
    def answer(self, path: str) -> Answer | None:
        """A complete 200 for ``path`` (may wait on a read: call it in a thread), or None."""
        ...


class ChainRequest:
    """What a front tells the chain of a request; an ``AccessRequest`` for authorizers."""

    __slots__ = ("client", "conditional", "grant", "method", "origin", "path", "plain", "query")

    def __init__(
        self, method: str, path: str, query: str, conditional: bool, origin: str, client: str = ""
    ) -> None:
        self.method, self.path, self.query, self.origin = method, path, query, origin
        self.client = client  # the peer's address, for the rate limit
        self.conditional = conditional
        #: A ``GET`` with no query and no ``If-None-Match``: the only kind the chain answers.
        self.plain = method == "GET" and not query and not conditional
        self.grant: Grant | None = None

    def header(self, name: str) -> str | None:
        raise NotImplementedError


class StoredTileChain:
    """The per-request checks and early answers every front runs first (see the module)."""

    def __init__(self, cors: CorsPolicy, authorizer: Authorizer = ALLOW_ALL) -> None:
        self.headers = ResponseHeaders(cors)
        self.authorizer = authorizer
        self._check = authorizer is not ALLOW_ALL  # the default costs nothing per request
        self.tiles: TileLookup | None = None
        self.early: BlockingLookup | None = None
        self._observe: Callable[[str, str, int, float], None] | None = None
        self._pending: list[Answer] = []  # early answers before metrics exist
        #: ``http/accesslog.AccessLog`` when ``--access-log`` is set; the fronts write it.
        self.access_log: AccessLog | None = None
        #: ``http/ratelimit.RateLimit`` when ``--rate-limit`` is set.
        self.rate_limit: RateLimit | None = None

    def attach(self, tiles: TileLookup, observe: Callable[[str, str, int, float], None]) -> None:
        """The app is up: its lookups answer from now on, counted in its metrics."""
        self._observe = observe
        for answer in self._pending:
            observe(answer.route, "GET", answer.status, answer.seconds)
        self._pending.clear()
        self.tiles, self.early = tiles, None  # the locators' sources close when unused

    def first(self, request: ChainRequest) -> Answer | None:
        """The answer, None (the app answers), or ``LATER`` (await ``later``)."""
        if self._check:
            verdict = self.authorizer.check(request)
            if isinstance(verdict, Refusal):
                return Answer(
                    verdict.status, verdict.body(), JSON, extra=verdict.challenge_headers()
                )
            request.grant = verdict
            if self.rate_limit is not None and not self._within_rate(request):
                return self._too_many()
            if verdict.studies is not None:
                return None  # limited to some studies: the app checks each slide's study
            if verdict.signed and request.method == "GET" and not request.conditional:
                request.plain = only_signature(request.query)
        elif self.rate_limit is not None and not self._within_rate(request):
            return self._too_many()
        if not request.plain:
            return None
        tiles = self.tiles
        if tiles is not None:
            answer = tiles.lookup(request.path)
            if answer is not None and self._observe is not None:
                self._observe(answer.route, "GET", 200, answer.seconds)
            return answer
        probe = PROBES.get(request.path)
        if probe is not None:
            return probe
        if self.early is not None and TILE_PATH.fullmatch(request.path) is not None:
            return LATER
        return None

    def _within_rate(self, request: ChainRequest) -> bool:
        assert self.rate_limit is not None
        if request.path in PROBES:  # load balancers and orchestrators poll these
            return True
        grant = request.grant
        if grant is not None and grant.principal not in ("anonymous", "preflight"):
            return self.rate_limit.allow(grant.principal)
        return self.rate_limit.allow(request.client)

    def _too_many(self) -> Answer:
        assert self.rate_limit is not None
        wait = str(self.rate_limit.retry_after())
        body = b'{"error":"too many requests: slow down (--rate-limit)"}'
        return Answer(429, body, JSON, extra=(("retry-after", wait),))

    def private(self, request: ChainRequest) -> bool:
        """Whether a response must not be cached by shared caches: with an access check on,
        everything but what a signed URL asked for."""
        grant = request.grant
        return self._check and not (grant is not None and grant.signed)

    async def later(self, request: ChainRequest) -> Answer | None:
        """The early path's answer, read in a worker thread, or None."""
        early = self.early
        if early is None:
            return None
        answer = await asyncio.to_thread(early.answer, request.path)
        if answer is not None:
            if self._observe is not None:
                self._observe(answer.route, "GET", answer.status, answer.seconds)
            else:
                self._pending.append(answer)
        return answer
