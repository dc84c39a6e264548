"""Query and path parameter parsing that fails with ``InvalidRequestError`` (400)."""

from __future__ import annotations

from starlette.requests import Request

from tileserver.compose import Plane
from tileserver.errors import InvalidRequestError


def int_param(
    request: Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise InvalidRequestError(f"missing query parameter {name!r}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequestError(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidRequestError(f"{name} must be at most {maximum}")
    return value


def plane_param(request: Request) -> Plane:
    """Focal plane (``z``) and optical path (``path``) indexes, both default 0."""
    return Plane(int_param(request, "z", 0, minimum=0), int_param(request, "path", 0, minimum=0))


def optional_format_param(request: Request, allowed: tuple[str, ...]) -> str | None:
    """``?format=``, or None when absent (stored bytes as they are)."""
    fmt = request.query_params.get("format")
    if fmt is not None and fmt not in allowed:
        raise InvalidRequestError(f"format must be one of {', '.join(allowed)}, not {fmt!r}")
    return fmt


def format_param(request: Request, default: str, allowed: tuple[str, ...]) -> str:
    """``?format=`` with a default."""
    return optional_format_param(request, allowed) or default
