"""The ASGI lifespan protocol driven from outside an ASGI server."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message


class LifespanDriver:
    """Runs an ASGI app's lifespan for a front that is not itself an ASGI server's app
    (granian's RSGI hooks) or that starts the app later (``http/early.py``)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Future[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.task = asyncio.ensure_future(self.app(scope, self.inbox.get, self.outbox.put))
        await self._step("startup")

    async def shutdown(self) -> None:
        if self.task is not None and not self.task.done():
            await self._step("shutdown")

    async def _step(self, phase: str) -> None:
        assert self.task is not None
        await self.inbox.put({"type": f"lifespan.{phase}"})
        reply: asyncio.Future[Message] = asyncio.ensure_future(self.outbox.get())
        await asyncio.wait((reply, self.task), return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():  # the lifespan ended without answering
            reply.cancel()
            self.task.result()  # raises what the app raised
            raise RuntimeError(f"application {phase} ended without completing")
        if reply.result()["type"] == f"lifespan.{phase}.failed":
            raise RuntimeError(f"application {phase} failed: {reply.result().get('message')}")
