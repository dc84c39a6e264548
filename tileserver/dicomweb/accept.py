"""Accept header parsing (media ranges, parameters, q-values) and DICOMweb negotiation.

Frames: each frame is offered as stored (its own media type, or application/octet-stream,
with the stored transfer syntax) and, when the frame can be decoded, transcoded to
baseline JPEG and to uncompressed Explicit VR Little Endian. A media type without a
``transfer-syntax`` parameter means its PS3.18 default (Table 8.7.3-5). The first
acceptable offer of the highest-q Accept entry wins; a ``q=0`` entry excludes what it
matches unless a more specific entry accepts it; ``NotAcceptableError`` when none matches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from tileserver.errors import InvalidRequestError, NotAcceptableError
from tileserver.formats import (
    DICOM_RLE,
    EXPLICIT_VR_LITTLE_ENDIAN,
    JLS,
    JP2,
    JPEG,
    JPEG_BASELINE,
    JPHC,
    OCTET_STREAM,
    TRANSFER_SYNTAXES,
)

MULTIPART = "multipart/related"
DICOM = "application/dicom"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"

#: The transfer syntax a frame media type means without a parameter (PS3.18 8.7.3-5).
DEFAULT_TRANSFER_SYNTAX = {
    OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG: JPEG_BASELINE,
    JP2: "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    JLS: "1.2.840.10008.1.2.4.80",
    JPHC: "1.2.840.10008.1.2.4.201",
    DICOM_RLE: "1.2.840.10008.1.2.5",
}


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

    def specificity(self, default: str) -> int:
        """How narrowly the entry names a part: ``*/*`` 0, ``type/*`` 1, a type 2, + syntax."""
        inner = self.inner(default)
        score = 0 if inner in ("*/*", "*") else 1 if inner.endswith("/*") else 2
        return score + (self.transfer_syntax not in (None, "*"))


def _split_q(entries: list[AcceptEntry]) -> tuple[list[AcceptEntry], list[AcceptEntry]]:
    """(acceptable entries in preference order, q=0 entries)."""
    return [e for e in entries if e.q > 0], [e for e in entries if e.q <= 0]


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
    """Media ranges, most preferred first; q=0 ranges (exclusions) last; none means */*."""
    if not header or not header.strip():
        return [AcceptEntry("*/*")]
    entries: list[tuple[float, int, AcceptEntry]] = []
    for order, item in enumerate(_split(header, ",")):
        entry = _entry(item)
        entries.append((-entry.q, order, entry))
    return [entry for *_, entry in sorted(entries, key=lambda e: (e[0], e[1]))]


def _entry(item: str) -> AcceptEntry:
    """One media range; a range without a media type (``;``, ``;q=1``) is a 400."""
    media_type, *raw_params = item.split(";")
    media_type = media_type.strip()
    if not media_type or '"' in media_type:
        raise InvalidRequestError(f"malformed Accept header: {item[:80]!r} names no media type")
    params: dict[str, str] = {}
    for raw in _split(";".join(raw_params), ";"):
        name, _, value = raw.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    try:
        q = float(params.pop("q", "1"))
    except ValueError:
        q = 1.0
    q = q if 0 <= q <= 1 else 1.0  # NaN and out-of-range weights count as the default
    return AcceptEntry(media_type.lower(), params, q)


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
    wanted = entry.transfer_syntax or DEFAULT_TRANSFER_SYNTAX.get(inner)
    if wanted == IMPLICIT_VR_LITTLE_ENDIAN:
        wanted = EXPLICIT_VR_LITTLE_ENDIAN  # same frame bytes
    return wanted in (None, "*") or wanted == offer.transfer_syntax


def _excluded(
    exclusions: list[AcceptEntry], by: AcceptEntry, default: str, hit: Callable[[AcceptEntry], bool]
) -> bool:
    """A q=0 entry at least as specific as the accepting entry ``by`` matches (``hit``)."""
    rank = by.specificity(default)
    return any(ex.specificity(default) >= rank and hit(ex) for ex in exclusions)


def negotiate(entries: list[AcceptEntry], offers: list[Offer], n_parts: int) -> Choice:
    """The first offer the most preferred entry accepts; a bare media type only for one part."""
    accepted, exclusions = _split_q(entries)
    for entry in accepted:
        if not entry.multipart and n_parts != 1:
            continue
        for offer in offers:
            hit = functools.partial(_offer_matches, offer=offer)
            if hit(entry) and not _excluded(exclusions, entry, OCTET_STREAM, hit):
                return Choice(offer, entry.multipart)
    wanted = ", ".join(_describe(e) for e in accepted)
    available = ", ".join(f"{o.media_type} ({o.transfer_syntax})" for o in offers)
    raise NotAcceptableError(f"cannot produce any of [{wanted}]; available: {available}")


def _describe(entry: AcceptEntry) -> str:
    params = "".join(f"; {k}={v}" for k, v in entry.params.items())
    return f"{entry.media_type}{params}"


def _dicom_matches(entry: AcceptEntry, stored: set[str]) -> bool:
    if not (entry.multipart or entry.media_type == DICOM):
        return False
    if not type_matches(entry.inner(DICOM), DICOM):
        return False
    wanted = entry.transfer_syntax
    return wanted in (None, "*") or {wanted} == stored


def negotiate_dicom(entries: list[AcceptEntry], stored: set[str]) -> bool:
    """Whole instances are sent as stored: accept when some entry allows that. False when
    the preferred entry is a bare ``application/dicom`` (one instance sent as is, as Google's
    store does for EZ-WSI's downloads); True for multipart/related."""
    accepted, exclusions = _split_q(entries)
    hit = functools.partial(_dicom_matches, stored=stored)
    for entry in accepted:
        if hit(entry) and not _excluded(exclusions, entry, DICOM, hit):
            return entry.media_type != DICOM
    raise NotAcceptableError(
        f"instances are available only as application/dicom in {', '.join(sorted(stored))}"
    )


def negotiate_bulk(entries: list[AcceptEntry]) -> bool:
    """Bulk data is application/octet-stream: True to wrap it in multipart/related."""
    accepted, exclusions = _split_q(entries)

    def hit(entry: AcceptEntry) -> bool:
        return type_matches(entry.inner(OCTET_STREAM), OCTET_STREAM)

    for entry in accepted:
        if hit(entry) and not _excluded(exclusions, entry, OCTET_STREAM, hit):
            return entry.media_type in (MULTIPART, "multipart/*")
    raise NotAcceptableError("bulk data is available as application/octet-stream")


RENDERED_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}


def negotiate_rendered(entries: list[AcceptEntry], default: str = "image/jpeg") -> str:
    """Output format name (jpeg, png, webp) for a rendered resource."""
    accepted, exclusions = _split_q(entries)
    candidates = [default, *(t for t in RENDERED_TYPES if t != default)]
    for entry in accepted:
        for media_type in candidates:

            def hit(e: AcceptEntry, media_type: str = media_type) -> bool:
                return type_matches(e.media_type, media_type)

            if hit(entry) and not _excluded(exclusions, entry, default, hit):
                return RENDERED_TYPES[media_type]
    raise NotAcceptableError("rendered images are available as image/jpeg, image/png, image/webp")
