"""Authorizers for tests/test_access.py, loaded by servers as ``--authorizer MODULE:FACTORY``."""

from __future__ import annotations

from tileserver.http.access import AccessRequest, Grant, Refusal
from tileserver.settings import Settings

KEY = "Bearer let-me-in"


class KeyRequired:
    """Every request needs ``Authorization: Bearer let-me-in``; no path is exempt."""

    def check(self, request: AccessRequest) -> Grant | Refusal:
        if request.header("authorization") == KEY:
            return Grant("tester", "admin")
        return Refusal(401, "a credential is required", 'Bearer realm="tileserver"')


def key_required(settings: Settings) -> KeyRequired:
    return KeyRequired()
