"""tileserver: a whole-slide digital pathology tile server."""

__version__ = "0.1.0"
