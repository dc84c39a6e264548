"""Slide readers: one protocol, one backend per file family."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tileserver.readers.base import ReaderLevel, SlideReader

__all__ = ["ReaderLevel", "SlideReader"]


def __getattr__(name: str) -> Any:
    # Resolved on first use: the early tile path imports readers.locator before anything
    # else of the package (http/early.py).
    if name in __all__:
        from tileserver.readers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
