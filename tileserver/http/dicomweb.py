"""DICOMweb front under ``/dicomweb``: QIDO-RS, WADO-RS (metadata, frames, bulk data,
instances, rendered, thumbnail) and STOW-RS. Logic lives in ``tileserver.dicomweb``; this
module maps requests onto it and streams the answers.

Most of that logic needs pydicom, which is slow to import: those modules are imported by
the handlers that use them (``_DEFERRED``), so a server that is never asked for DICOMweb
never loads pydicom, and the first DICOMweb request loads it in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tileserver.dicomweb import accept
from tileserver.dicomweb.accept import Offer
from tileserver.dicomweb.multipart import (
    PART_END,
    closing,
    content_type,
    new_boundary,
    part_header,
)
from tileserver.errors import InvalidRequestError, NotAcceptableError
from tileserver.http.forwarded import public_origin
from tileserver.http.params import int_param
from tileserver.http.responses import json_response
from tileserver.http.state import service_of
from tileserver.service import TileService, importing

if TYPE_CHECKING:
    from tileserver.dicomweb import qido
    from tileserver.dicomweb.instances import FrameSource, InstanceRef
    from tileserver.dicomweb.rendered import RenderOptions

DICOM_JSON = "application/dicom+json"
Handler = Callable[[Request], Awaitable[Response]]
#: Frames per worker-thread hop when streaming frames.
FRAMES_PER_CHUNK = 32
#: What the handlers import when called; ``_deferred`` imports it off the event loop first.
_DEFERRED = (
    "tileserver.dicomweb.instances",
    "tileserver.dicomweb.metadata",
    "tileserver.dicomweb.qido",
    "tileserver.dicomweb.rendered",
)
_deferred = importing(*_DEFERRED)


def base_url(request: Request) -> str:
    """The absolute DICOMweb root for URLs in responses, as the client addressed us."""
    return f"{public_origin(request)}/dicomweb"


def _accepted(request: Request) -> list[accept.AcceptEntry]:
    return accept.parse_accept(request.headers.get("accept"))


def _uids(request: Request) -> tuple[str, str, str]:
    p = request.path_params
    return p.get("study", ""), p.get("series", ""), p.get("instance", "")


# -- QIDO-RS ----------------------------------------------------------------------------


def _search(level: qido.Level) -> Handler:
    @_deferred
    async def handler(request: Request) -> Response:
        from tileserver.dicomweb import qido
        from tileserver.dicomweb.dicomjson import SERIES_UID, STUDY_UID

        _check_json_accept(request)
        scope = {STUDY_UID: request.path_params.get("study"), SERIES_UID: None}
        scope[SERIES_UID] = request.path_params.get("series")
        query = qido.parse_query(
            level,
            request.query_params.multi_items(),
            {tag: uid for tag, uid in scope.items() if uid},
        )
        service = service_of(request)
        result = await service.run(qido.search, service.library.catalog, query, base_url(request))
        headers = {}
        warnings = []
        if query.ignored:
            names = ", ".join(query.ignored)
            warnings.append(f'299 tileserver "Attributes not supported for matching: {names}"')
        if result.truncated:
            warnings.append(
                '299 tileserver "The number of results exceeded the maximum supported by the '
                'server. Additional results can be requested."'
            )
        if warnings:
            headers["Warning"] = ", ".join(warnings)
        return json_response(result.matches, headers=headers, media_type=DICOM_JSON)

    return handler


def _check_json_accept(request: Request) -> None:
    for entry in _accepted(request):
        if entry.q > 0 and (
            accept.type_matches(entry.media_type, DICOM_JSON)
            or entry.media_type in ("application/json", "application/*")
        ):
            return
    raise NotAcceptableError("this resource is available as application/dicom+json")


# -- WADO-RS: metadata, instances, bulk data ---------------------------------------------


async def _refs(request: Request) -> list[InstanceRef]:
    from tileserver.dicomweb.instances import find_instance, find_instances

    study, series, instance = _uids(request)
    service = service_of(request)
    catalog = service.library.catalog
    if instance:
        return [await service.run(find_instance, catalog, study, series, instance)]
    return await service.run(find_instances, catalog, study, series or None)


@_deferred
async def metadata(request: Request) -> Response:
    from tileserver.dicomweb.metadata import iter_metadata

    _check_json_accept(request)
    refs = await _refs(request)
    body = iter_metadata(service_of(request).library.catalog, refs, base_url(request))
    return StreamingResponse(body, media_type=DICOM_JSON)


@_deferred
async def retrieve(request: Request) -> Response:
    """Whole instances as multipart/related; type="application/dicom", streamed from disk
    (one instance asked for as bare application/dicom is sent bare)."""
    from tileserver.dicomweb.instances import iter_file

    refs = await _refs(request)
    multipart = accept.negotiate_dicom(_accepted(request), {r.header.transfer_syntax for r in refs})
    if not multipart and len(refs) == 1:
        media = f"{accept.DICOM}; transfer-syntax={refs[0].header.transfer_syntax}"
        return StreamingResponse(iter_file(refs[0].path), media_type=media)
    boundary = new_boundary()
    media = content_type(boundary, accept.DICOM)
    return StreamingResponse(_dicom_parts(refs, boundary), media_type=media)


def _dicom_parts(refs: Sequence[InstanceRef], boundary: str) -> Iterator[bytes]:
    from tileserver.dicomweb.instances import iter_file

    for ref in refs:
        part_type = f"{accept.DICOM}; transfer-syntax={ref.header.transfer_syntax}"
        yield part_header(boundary, part_type)
        yield from iter_file(ref.path)
        yield PART_END
    yield closing(boundary)


@_deferred
async def bulkdata(request: Request) -> Response:
    """A bulk value; ``Range`` (one range) is honoured for a bare octet-stream answer only."""
    from tileserver.dicomweb.instances import bulk_value, iter_file

    (ref,) = await _refs(request)
    multipart = accept.negotiate_bulk(_accepted(request))
    value = await service_of(request).run(bulk_value, ref, request.path_params["tag"])
    headers = {"Accept-Ranges": "bytes"}
    span = None if multipart else _byte_range(request.headers.get("range"), value.length)
    if span == _UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{value.length}"
        error = {"error": f"Range outside the {value.length}-byte value"}
        return json_response(error, status_code=416, headers=headers)
    start, length = span or (0, value.length)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{value.length}"
    if value.data is not None:
        chunks: Iterator[bytes] = iter([value.data[start : start + length]])
    else:
        chunks = iter_file(value.path, value.offset + start, length)
    if multipart:
        boundary = new_boundary()
        parts = _single_part(chunks, boundary, "application/octet-stream")
        media = content_type(boundary, "application/octet-stream")
        return StreamingResponse(parts, headers=headers, media_type=media)
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        chunks,
        status_code=206 if span else 200,
        headers=headers,
        media_type="application/octet-stream",
    )


def _single_part(chunks: Iterator[bytes], boundary: str, part_type: str) -> Iterator[bytes]:
    yield part_header(boundary, part_type)
    yield from chunks
    yield PART_END + closing(boundary)


_UNSATISFIABLE = (-1, -1)
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
_BEYOND_ANY_SIZE = 1 << 62


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``bytes=`` range (RFC 9110 14.1.2); ``None`` to send the
    whole value (no, several or invalid ranges are ignored); ``_UNSATISFIABLE`` for 416."""
    m = _RANGE.fullmatch((header or "").strip())
    if m is None or m.groups() == ("", ""):
        return None
    first, last = (_position(g) for g in m.groups())
    if first is None:
        assert last is not None
        return (max(0, size - last), min(last, size)) if last and size else _UNSATISFIABLE
    if last is not None and last < first:
        return None
    if first >= size:
        return _UNSATISFIABLE
    end = size - 1 if last is None else min(size - 1, last)
    return first, end - first + 1


def _position(digits: str) -> int | None:
    """A byte position; beyond any size when too long for ``int`` to be sensible."""
    digits = digits.lstrip("0") or ("0" if digits else "")
    if not digits:
        return None
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_SIZE


# -- WADO-RS: frames ---------------------------------------------------------------------


async def _source(request: Request) -> tuple[TileService, FrameSource]:
    from tileserver.dicomweb.instances import FrameSource

    service = service_of(request)
    (ref,) = await _refs(request)
    slide = await service.slide(ref.series_uid)
    return service, FrameSource(slide, ref)


@_deferred
async def frames(request: Request) -> Response:
    from tileserver import codec
    from tileserver.dicomweb.instances import deliver, is_eight_bit, parse_frame_list

    service, source = await _source(request)
    numbers = parse_frame_list(request.path_params["frames"])
    source.check(numbers)
    syntax = source.ref.header.transfer_syntax
    offers = accept.frame_offers(syntax, codec.can_decode(syntax), is_eight_bit(source.ref.header))
    choice = accept.negotiate(_accepted(request), offers, len(numbers))
    offer, quality = choice.offer, service.settings.jpeg_quality
    if not choice.multipart:
        data = await service.run(lambda: deliver(source.read(numbers[0]), offer, quality))
        return Response(data, media_type=_part_type(offer))
    boundary = new_boundary()
    body = _frame_parts(source, numbers, offer, quality, boundary)
    media = content_type(boundary, offer.media_type, transfer_syntax=offer.transfer_syntax)
    return StreamingResponse(body, media_type=media)


def _frame_parts(
    source: FrameSource, numbers: list[int], offer: Offer, quality: int, boundary: str
) -> Iterator[bytes]:
    """Parts in batches: each ``next`` runs in a worker thread (Starlette), one hop a batch."""
    from tileserver.dicomweb.instances import deliver

    part_type = _part_type(offer)
    for start in range(0, len(numbers), FRAMES_PER_CHUNK):
        chunk = []
        for number in numbers[start : start + FRAMES_PER_CHUNK]:
            data = deliver(source.read(number), offer, quality)
            chunk += [part_header(boundary, part_type), data, PART_END]
        yield b"".join(chunk)
    yield closing(boundary)


def _part_type(offer: Offer) -> str:
    return f"{offer.media_type}; transfer-syntax={offer.transfer_syntax}"


# -- rendered and thumbnail --------------------------------------------------------------


def _render_options(request: Request, service: TileService, viewport: str | None) -> RenderOptions:
    from tileserver.dicomweb.rendered import RenderOptions, parse_viewport

    fmt = accept.negotiate_rendered(_accepted(request))
    quality = int_param(request, "quality", service.settings.jpeg_quality, minimum=1, maximum=100)
    icc = request.query_params.get("iccprofile", "no").lower()
    if icc not in ("no", "yes", "srgb"):
        raise InvalidRequestError("iccprofile must be no, yes or srgb")
    vp = parse_viewport(request.query_params.get("viewport", viewport))
    return RenderOptions(fmt, quality, vp, icc)


def _image(data: bytes, fmt: str) -> Response:
    media = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[fmt]
    return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=86400"})


def _rendered_instance(default_viewport: str | None) -> Handler:
    @_deferred
    async def handler(request: Request) -> Response:
        from tileserver.dicomweb.rendered import render_instance as render_whole

        service, source = await _source(request)
        options = _render_options(request, service, default_viewport)
        limit = service.settings.max_output_pixels
        data = await service.run(render_whole, source, options, limit)
        return _image(data, options.fmt)

    return handler


def _rendered_frame(default_viewport: str | None) -> Handler:
    @_deferred
    async def handler(request: Request) -> Response:
        from tileserver.dicomweb.instances import parse_frame_list
        from tileserver.dicomweb.rendered import render_frame

        service, source = await _source(request)
        numbers = parse_frame_list(request.path_params["frames"])
        if len(numbers) != 1:
            raise InvalidRequestError("rendered frames are retrieved one at a time")
        options = _render_options(request, service, default_viewport)
        data = await service.run(render_frame, source, numbers[0], options)
        return _image(data, options.fmt)

    return handler


@_deferred
async def series_thumbnail(request: Request) -> Response:
    service = service_of(request)
    refs = await _refs(request)
    options = _render_options(request, service, "256,256")
    viewport = options.viewport
    max_side = max(viewport.width, viewport.height) if viewport else 256
    slide = await service.slide(refs[0].series_uid)
    rendered = await service.thumbnail(slide, min(max_side, 4096), options.fmt)
    return _image(rendered.data, options.fmt)


S = "/dicomweb/studies/{study}"
SE = S + "/series/{series}"
IN = SE + "/instances/{instance}"
F = IN + "/frames/{frames}"

routes = [
    Route("/dicomweb/studies", _search("study"), methods=["GET"]),
    Route("/dicomweb/series", _search("series"), methods=["GET"]),
    Route("/dicomweb/instances", _search("instance"), methods=["GET"]),
    Route(S, retrieve, methods=["GET"]),
    Route(S + "/series", _search("series"), methods=["GET"]),
    Route(S + "/instances", _search("instance"), methods=["GET"]),
    Route(S + "/metadata", metadata, methods=["GET"]),
    Route(S + "/thumbnail", series_thumbnail, methods=["GET"]),
    Route(SE, retrieve, methods=["GET"]),
    Route(SE + "/instances", _search("instance"), methods=["GET"]),
    Route(SE + "/metadata", metadata, methods=["GET"]),
    Route(SE + "/rendered", series_thumbnail, methods=["GET"]),
    Route(SE + "/thumbnail", series_thumbnail, methods=["GET"]),
    Route(IN, retrieve, methods=["GET"]),
    Route(IN + "/metadata", metadata, methods=["GET"]),
    Route(IN + "/bulk/{tag}", bulkdata, methods=["GET"]),
    Route(IN + "/rendered", _rendered_instance(None), methods=["GET"]),
    Route(IN + "/thumbnail", _rendered_instance("256,256"), methods=["GET"]),
    Route(F, frames, methods=["GET"]),
    Route(F + "/rendered", _rendered_frame(None), methods=["GET"]),
    Route(F + "/thumbnail", _rendered_frame("256,256"), methods=["GET"]),
]

__all__ = ["base_url", "routes"]
