"""Slide readers: one protocol, one backend per file family."""

from tileserver.readers.base import ReaderLevel, SlideReader

__all__ = ["ReaderLevel", "SlideReader"]
