"""Accept header parsing (media ranges, parameters, q-values) and DICOMweb negotiation.

Frames: each frame is offered as stored (its own media type, or application/octet-stream,
with the stored transfer syntax) and, when the frame can be decoded, transcoded to
baseline JPEG and to uncompressed Explicit VR Little Endian. The first acceptable offer
of the highest-q Accept entry wins; ``NotAcceptableError`` only when none matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tileserver.errors import NotAcceptableError
from tileserver.formats import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG,
    JPEG_BASELINE,
    OCTET_STREAM,
    TRANSFER_SYNTAXES,
)

MULTIPART = "multipart/related"
DICOM = "application/dicom"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


@dataclass(frozen=True)
class AcceptEntry:
    """One media range of an Accept header."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def multipart(self) -> bool:
        return self.media_type in (MULTIPART, "multipart/*", "*/*")

    def inner(self, default: str) -> str:
        """The part media type asked for (``type=``; a bare range is its own type)."""
        if self.media_type == MULTIPART:
            return self.params.get("type", default).lower()
        return "*/*" if self.multipart else self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_accept(header: str | None) -> list[AcceptEntry]:
    """Accepted media ranges, most preferred first; q=0 ranges dropped; none means */*."""
    if not header or not header.strip():
        return [AcceptEntry("*/*")]
    entries: list[tuple[float, int, AcceptEntry]] = []
    for order, item in enumerate(_split(header, ",")):
        media_type, *raw_params = _split(item, ";")
        params: dict[str, str] = {}
        for raw in raw_params:
            name, _, value = raw.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            entries.append((-q, order, AcceptEntry(media_type.lower(), params, q)))
    return [entry for *_, entry in sorted(entries, key=lambda e: (e[0], e[1]))]


def type_matches(pattern: str, media_type: str) -> bool:
    if pattern in ("*/*", "*"):
        return True
    if pattern.endswith("/*"):
        return media_type.startswith(pattern[:-1])
    return pattern == media_type


@dataclass(frozen=True)
class Offer:
    """One way to deliver a frame: part media type, transfer syntax, how to produce it."""

    media_type: str
    transfer_syntax: str
    transcode: str | None = None  # None: stored bytes; "jpeg" or "native": decode first


@dataclass(frozen=True)
class Choice:
    offer: Offer
    multipart: bool


def frame_offers(stored: str, decodable: bool, eight_bit: bool) -> list[Offer]:
    """Ways to deliver frames stored as ``stored``, stored bytes first."""
    syntax = TRANSFER_SYNTAXES.get(stored)
    if syntax is None or not syntax.encapsulated:
        return [Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)]
    offers = [Offer(syntax.media_type, stored), Offer(OCTET_STREAM, stored)]
    if decodable and stored != JPEG_BASELINE and eight_bit:
        offers.append(Offer(JPEG, JPEG_BASELINE, "jpeg"))
    if decodable and eight_bit:
        offers.append(Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, "native"))
    return offers


def _offer_matches(entry: AcceptEntry, offer: Offer) -> bool:
    inner = entry.inner(OCTET_STREAM)
    if not type_matches(inner, offer.media_type):
        return False
    wanted = entry.transfer_syntax
    if wanted is None and inner == OCTET_STREAM:
        wanted = EXPLICIT_VR_LITTLE_ENDIAN  # PS3.18's default for octet-stream frames
    if wanted == IMPLICIT_VR_LITTLE_ENDIAN:
        wanted = EXPLICIT_VR_LITTLE_ENDIAN  # same frame bytes
    return wanted in (None, "*") or wanted == offer.transfer_syntax


def negotiate(entries: list[AcceptEntry], offers: list[Offer], n_parts: int) -> Choice:
    """The first offer the most preferred entry accepts; a bare media type only for one part."""
    for entry in entries:
        if not entry.multipart and n_parts != 1:
            continue
        for offer in offers:
            if _offer_matches(entry, offer):
                return Choice(offer, entry.multipart)
    wanted = ", ".join(_describe(e) for e in entries)
    available = ", ".join(f"{o.media_type} ({o.transfer_syntax})" for o in offers)
    raise NotAcceptableError(f"cannot produce any of [{wanted}]; available: {available}")


def _describe(entry: AcceptEntry) -> str:
    params = "".join(f"; {k}={v}" for k, v in entry.params.items())
    return f"{entry.media_type}{params}"


def negotiate_dicom(entries: list[AcceptEntry], stored: set[str]) -> None:
    """Whole instances are sent as stored: accept when some entry allows that."""
    for entry in entries:
        if not (entry.multipart or entry.media_type == DICOM):
            continue
        if not type_matches(entry.inner(DICOM), DICOM):
            continue
        wanted = entry.transfer_syntax
        if wanted in (None, "*") or {wanted} == stored:
            return
    raise NotAcceptableError(
        f"instances are available only as application/dicom in {', '.join(sorted(stored))}"
    )


RENDERED_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}


def negotiate_rendered(entries: list[AcceptEntry], default: str = "image/jpeg") -> str:
    """Output format name (jpeg, png, webp) for a rendered resource."""
    for entry in entries:
        if entry.media_type in ("*/*", "image/*"):
            return RENDERED_TYPES[default]
        if entry.media_type in RENDERED_TYPES:
            return RENDERED_TYPES[entry.media_type]
    raise NotAcceptableError("rendered images are available as image/jpeg, image/png, image/webp")
