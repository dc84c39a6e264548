"""One exception tree for the whole package (stdlib only).

TileServerError
├── NotFoundError (LookupError)          unknown slide, level, tile, associated image
│   └── TileAbsentError                  a sparse tile that was never scanned
├── InvalidRequestError (ValueError)     bad coordinates, sizes, parameters
│   └── UnsupportedMediaTypeError        a request body of a media type we do not take
├── UnsupportedError                     a transfer syntax, format or feature we do not handle
│   └── NotAcceptableError               nothing the client's Accept header allows
├── LimitExceededError                   a request that would cause too much work
├── SourceUnavailableError               storage that cannot be reached now (503)
│   └── CatalogUnavailableError          a catalog database that cannot be reached now
├── CacheUnavailableError                a shared cache a purge could not finish in (503)
├── OverloadedError                      too much work queued: try again shortly (503)
└── SlideError                           a file that cannot be indexed or read
    ├── NotWsiError                      readable DICOM, but not a VL Whole Slide Microscopy image
    └── CorruptSlideError                truncated, inconsistent or unparsable data
        └── SlideChangedError            a source rewritten since it was indexed

``tileserver.http.errors`` maps these classes to HTTP statuses; nothing below ``http``
raises HTTP exceptions.
"""

from __future__ import annotations


class TileServerError(Exception):
    """Root of every error tileserver raises on purpose."""


class NotFoundError(TileServerError, LookupError):
    """A slide, level, tile or associated image that does not exist."""


class TileAbsentError(NotFoundError):
    """A tile position inside the image that a sparse pyramid never stored."""


class InvalidRequestError(TileServerError, ValueError):
    """A request whose coordinates or parameters are out of range or malformed."""


class UnsupportedError(TileServerError):
    """Something well-formed that tileserver deliberately does not handle."""


class UnsupportedMediaTypeError(InvalidRequestError):
    """A request body of a media type the endpoint does not take."""


class NotAcceptableError(UnsupportedError):
    """No representation the client accepts can be produced."""


class LimitExceededError(TileServerError):
    """A request that would exceed a configured work bound."""


class SlideError(TileServerError):
    """A file that cannot be indexed or read."""


class NotWsiError(SlideError):
    """A readable DICOM file that is not a VL Whole Slide Microscopy image."""


class CorruptSlideError(SlideError):
    """A truncated, inconsistent or unparsable file."""


class SlideChangedError(CorruptSlideError):
    """A source whose identity differs from the one it was indexed with: re-index it."""


class SourceUnavailableError(TileServerError):
    """Storage that cannot answer now (a bucket unreachable or failing): try again later."""


class CatalogUnavailableError(SourceUnavailableError):
    """The catalog's database server cannot be reached now (PostgreSQL down or restarting)."""


class CacheUnavailableError(TileServerError):
    """A shared cache that did not answer an operation that must not fail silently (a
    purge): reads and writes treat the same outage as misses instead."""


class OverloadedError(TileServerError):
    """The server has as much work queued as it takes: try again after ``retry_after``."""

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after
