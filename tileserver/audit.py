"""The audit log (``--audit-log PATH``): which subject read or stored which study.

One JSON line per (subject, action, study, slide) and minute at most: a viewer reads
hundreds of tiles of a slide a minute, and an audit trail wants the fact, not each tile.
Lines carry the grant's principal (an API key's digest prefix or a token's subject), never
patient data. Tiles that the stored-tile chain answers before the app are in the access log
with the same principal.
"""

from __future__ import annotations

import threading
import time

from tileserver.grants import CURRENT_GRANT
from tileserver.jsonlog import JsonLines

#: Seconds within which the same (subject, action, study, slide) is logged once.
WINDOW = 60.0

_sink: JsonLines | None = None
_seen: dict[tuple[str, str, str, str], float] = {}
_lock = threading.Lock()


def configure(target: str | None) -> None:
    """Start (or stop, with None) writing the audit log to ``target``."""
    global _sink
    with _lock:
        if _sink is not None:
            _sink.close()
        _sink = JsonLines(target) if target else None
        _seen.clear()


def record(action: str, study: str | None, slide: str) -> None:
    """``action`` ("read", "stored") of ``slide`` in ``study`` by the current request's
    principal."""
    sink = _sink
    if sink is None:
        return
    principal = CURRENT_GRANT.get().principal
    key = (principal, action, study or "", slide)
    now = time.monotonic()
    with _lock:
        if now - _seen.get(key, -WINDOW) < WINDOW:
            return
        if len(_seen) > 100_000:
            _seen.clear()
        _seen[key] = now
    sink.write({"subject": principal, "action": action, "study": study, "slide": slide})
