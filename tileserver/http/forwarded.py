"""The address a client used to reach us, through reverse proxies too.

``X-Forwarded-Proto``, ``-Host`` and ``-Prefix`` are honoured only when the socket's peer is
one of ``--forwarded-allow-ips`` (``*``: any). Both servers hand the app the unmodified
peer (uvicorn runs with its own proxy-header rewriting off), so IIIF ids and DICOMweb URLs
come out the same on uvicorn and granian.
"""

from __future__ import annotations

from starlette.requests import Request

from tileserver.http.state import service_of


def public_origin(request: Request) -> str:
    """``scheme://host[:port][prefix]`` as the client addressed this server."""
    headers = request.headers
    scheme, host, prefix = request.url.scheme, _host(request), ""
    if _from_trusted_proxy(request):
        scheme = _first(headers.get("x-forwarded-proto")) or scheme
        host = _first(headers.get("x-forwarded-host")) or host
        prefix = (_first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
    return f"{scheme}://{host}{prefix}{request.scope.get('root_path', '')}"


def _from_trusted_proxy(request: Request) -> bool:
    allowed = service_of(request).settings.forwarded_allow_ips
    trusted = {ip.strip() for ip in allowed.split(",")}
    return "*" in trusted or (request.client is not None and request.client.host in trusted)


def _host(request: Request) -> str:
    """The Host header; some clients (dicomweb-client) leave out the port, which on a
    direct connection (Host names the socket's own address) is the socket's."""
    host = request.headers.get("host") or request.url.netloc
    server = request.scope.get("server")
    if server and ":" not in host and host == server[0] and server[1] not in (80, 443):
        host = f"{host}:{server[1]}"
    return host


def _first(value: str | None) -> str | None:
    """The first of a comma-separated list (each proxy in a chain appends its own)."""
    return value.split(",")[0].strip() if value else None
