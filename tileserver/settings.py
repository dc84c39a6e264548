"""One frozen settings object; every field is a CLI flag and a TILESERVER_* environment variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def default_catalog() -> Path:
    """Outside the slide directories: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tileserver" / "catalog.sqlite"


#: A local path, or a URL: a slide root such as ``s3://bucket/slides``, a catalog such as
#: ``postgresql://host/db``.
Location = Path | str
SlideRoot = Location


def location(text: str | Path) -> Location:
    """A ``--slides`` or ``--catalog`` value: a URL stays text (``Path`` would fold its
    ``//``), anything else is a local path."""
    text = str(text)
    head, sep, _ = text.partition("://")
    return text if sep and head.replace("+", "").isalnum() else Path(text)


slide_root = location


@dataclass(frozen=True)
class Settings:
    slides: tuple[SlideRoot, ...] = ()
    catalog: Location = field(default_factory=default_catalog)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    #: ASGI server: "uvicorn" (default) or "granian" (the ``fast`` extra).
    server: str = "uvicorn"
    redis_url: str | None = None
    #: Bytes of derived images kept in the in-process cache.
    cache_bytes: int = 256 * 1024 * 1024
    #: Seconds between rescans of the slide directories (0 disables).
    rescan_interval: float = 30.0
    #: Largest image (width x height) one request may produce.
    max_output_pixels: int = 25_000_000
    #: Origins whose pages may read responses (comma-separated, or "*"). Unset: "*" while
    #: no access check is configured, none once one is (``cors_policy``).
    cors_origins: str | None = None
    #: Proxies whose X-Forwarded-* headers are believed (comma-separated IPs, or "*").
    forwarded_allow_ips: str = "127.0.0.1"
    jpeg_quality: int = 90
    #: Convert colour to sRGB with the slide's ICC profile instead of embedding the profile.
    convert_to_srgb: bool = False
    max_open_slides: int = 64
    log_level: str = "info"
    #: Where STOW-RS stores uploaded instances (default: ``stow`` under the first slide dir).
    stow_dir: Path | None = None
    #: "module:factory" of the access check (``http/access.py``); every request by default.
    authorizer: str | None = None
    #: File of ``KEY ROLE`` lines (roles read < write < admin), reread when it changes.
    api_keys: Path | None = None
    #: The OIDC issuer's JWKS (a file or an https URL); bearer JWTs are checked against it.
    oidc_jwks: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    #: The token claim holding the role (a string or a list: the highest counts).
    oidc_role_claim: str = "role"
    #: The token claim listing the Study Instance UIDs it may see (absent: all).
    oidc_studies_claim: str = "studies"
    #: Serve /metrics without a credential (for a scraper inside the cluster).
    metrics_public: bool = False
    #: Where to write the access log, one JSON line per request ("-": stdout); none if unset.
    access_log: str | None = None
    #: Requests a second each client may make (bursts of twice as many); 0: no limit.
    rate_limit: float = 0.0
    #: Where to write the audit log (``tileserver/audit.py``; "-": stdout); none if unset.
    audit_log: str | None = None
    #: Secret of signed URLs (``http/signing.py``); unset: no URL is let in by a signature.
    url_signing_key: str | None = None
    #: Let STOW-RS replace a stored instance with other content under the same SOP Instance UID.
    stow_overwrite: bool = False
    #: Largest STOW-RS request body, and largest single part of one (bytes).
    max_upload_bytes: int = 2 * 1024**3
    max_part_bytes: int = 1024**3
    #: Seconds a request body may stay silent before it is refused (408; granian: STOW-RS only).
    body_timeout: float = 30.0
    #: Seconds a client has to send a request's headers (uvicorn and granian close it after).
    header_timeout: float = 30.0

    @property
    def stow_directory(self) -> Path | None:
        if self.stow_dir is not None:
            return self.stow_dir
        local = [p for p in self.slides if isinstance(p, Path)]
        return local[0] / "stow" if local else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``TILESERVER_<FIELD>`` variables, then explicit ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"TILESERVER_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "slides" in values:
            values["slides"] = tuple(slide_root(p) for p in values["slides"])
        if "catalog" in values:
            values["catalog"] = location(values["catalog"])
        for name in ("stow_dir", "api_keys"):
            if name in values:
                values[name] = Path(values[name])
        return cls(**values)


def access_checked(settings: Settings) -> bool:
    """Whether requests need a credential (``http/auth.load_authorizer``)."""
    return bool(settings.authorizer or settings.api_keys or settings.oidc_jwks)


def cors_origins(settings: Settings) -> str:
    """The CORS origins in force: with an access check on, "*" would let any page a
    clinician has open use their credential's reach, so origins must then be listed."""
    if settings.cors_origins is None:
        return "" if access_checked(settings) else "*"
    listed = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if "*" in listed and access_checked(settings):
        raise ValueError("with an access check on, --cors-origins must list origins, not '*'")
    return ",".join(listed)


def served_slide_roots(slides: tuple[SlideRoot, ...]) -> list[str]:
    """Slide roots as absolute local paths and object-storage URIs (no trailing slash)."""
    return [str(p.resolve()) if isinstance(p, Path) else p.rstrip("/") for p in slides]


def served_roots(settings: Settings) -> list[str]:
    """The slide roots (absolute local paths, object-storage URIs), plus the STOW directory
    when it lies outside all of them."""
    roots = served_slide_roots(settings.slides)
    stow = settings.stow_directory
    local = [Path(r) for r in roots if "://" not in r]
    if stow is not None and not any(stow.resolve().is_relative_to(r) for r in local):
        stow.mkdir(parents=True, exist_ok=True)
        roots.append(str(stow.resolve()))
    return roots


_INT = {
    "port",
    "workers",
    "cache_bytes",
    "max_output_pixels",
    "jpeg_quality",
    "max_open_slides",
    "max_upload_bytes",
    "max_part_bytes",
}
_FLOAT = {"rescan_interval", "body_timeout", "header_timeout", "rate_limit"}
_BOOL = {"convert_to_srgb", "metrics_public", "stow_overwrite"}


def _parse(name: str, raw: str) -> Any:
    if name in _INT:
        return int(raw)
    if name in _FLOAT:
        return float(raw)
    if name in _BOOL:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name == "slides":
        return _split_roots(raw)
    return raw


def _split_roots(raw: str) -> tuple[str, ...]:
    """``TILESERVER_SLIDES``: roots joined by ``os.pathsep``, where ``s3://b/p`` holds one
    too (a scheme part followed by a part starting with ``//`` is one root)."""
    parts, roots = raw.split(os.pathsep), []
    index = 0
    while index < len(parts):
        part = parts[index]
        following = parts[index + 1] if index + 1 < len(parts) else ""
        if part.isalnum() and following.startswith("//"):
            roots.append(f"{part}:{following}")
            index += 2
        else:
            roots.append(part)
            index += 1
    return tuple(r for r in roots if r)
