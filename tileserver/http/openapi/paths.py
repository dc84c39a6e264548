"""Path items of the native API, Deep Zoom, IIIF, the viewer and operations."""

from __future__ import annotations

from tileserver.http.openapi.spec import (
    IMAGE_FORMAT,
    PLANE,
    RENDERED,
    SLIDE_ERRORS,
    SLIDE_ID,
    STORED,
    Json,
    content,
    enum,
    image_ok,
    integer,
    json_body,
    op,
    path,
    query,
    ref,
    resp,
)

_NOT_MODIFIED = {"304": resp("The client's copy (`If-None-Match`) is current")}
_TILE_PARAMS = [
    SLIDE_ID,
    path("level", "Level index (0 = full resolution)", integer(0)),
    path("col", "Tile column", integer(0)),
    path("row", "Tile row", integer(0)),
]


def _slides() -> Json:
    slide_ok = {"200": resp("The slide", json_body(ref("SlideDetail"))), **SLIDE_ERRORS}
    tile = op(
        "A stored tile",
        "slides",
        {
            "200": resp("Stored frame bytes, or the valid area in `format`", content(STORED)),
            **_NOT_MODIFIED,
            **SLIDE_ERRORS,
        },
        [*_TILE_PARAMS, query("format", "Transcode", enum("jpeg", "jpg", "png", "webp")), *PLANE],
        "Without `format` the stored frame's bytes, unchanged; an absent sparse tile is a "
        "background tile.",
    )
    return {
        "/slides": {"get": op("List slides", "slides", _list_ok())},
        "/slides/{slide_id}": {"get": op("One slide", "slides", slide_ok, [SLIDE_ID])},
        "/slides/{slide_id}/tiles/{level}/{col}/{row}": {"get": tile},
        "/slides/{slide_id}/region": {"get": _region()},
        "/slides/{slide_id}/thumbnail": {"get": _thumbnail()},
        "/slides/{slide_id}/associated/{name}": {"get": _associated()},
        "/slides/{slide_id}/tissue": {"get": _tissue()},
        "/slides/{slide_id}/tiles:batch": {"post": _batch()},
    }


def _list_ok() -> Json:
    return {"200": resp("Every slide served", json_body(ref("SlideList")))}


def _region() -> Json:
    fmt = enum("jpeg", "jpg", "png", "webp", "npy", default="jpeg")
    params = [
        SLIDE_ID,
        query("level", "Level index", integer(0, default=0)),
        query("x", "Left edge in level pixels", integer(default=0)),
        query("y", "Top edge in level pixels", integer(default=0)),
        query("width", "Width in level pixels", integer(1), required=True),
        query("height", "Height in level pixels", integer(1), required=True),
        query("format", "`npy`: a raw uint8 (height, width, 3) array", fmt),
        *PLANE,
    ]
    ok = resp("The rectangle, composed across tiles", content((*RENDERED, "application/x-npy")))
    return op("Any rectangle of a level", "slides", {"200": ok, **SLIDE_ERRORS}, params)


def _thumbnail() -> Json:
    params = [SLIDE_ID, query("max", "Longest side", integer(1, 4096, 512)), IMAGE_FORMAT]
    return op("A thumbnail", "slides", {**image_ok("The thumbnail"), **SLIDE_ERRORS}, params)


def _associated() -> Json:
    name = path("name", "Associated image", enum("label", "overview", "thumbnail"))
    responses = {**image_ok("The image"), **_NOT_MODIFIED, **SLIDE_ERRORS}
    return op(
        "Label, overview or thumbnail image", "slides", responses, [SLIDE_ID, name, IMAGE_FORMAT]
    )


def _tissue() -> Json:
    params = [
        SLIDE_ID,
        query("level", "Level whose tiles are flagged (json)", integer(0, default=0)),
        query("format", "Mask image or facts", enum("png", "json", default="png")),
    ]
    body = {**content(("image/png",)), **json_body(ref("TissueFacts"))}
    ok = resp("Tissue mask (Otsu on HSV saturation of a low-resolution level)", body)
    return op("Tissue mask", "slides", {"200": ok, **SLIDE_ERRORS}, params)


def _batch() -> Json:
    ok = resp(
        "`raw`: stored bytes as streamed multipart/mixed parts; `npy`: a decoded tile stack",
        content(("multipart/mixed", "application/x-npy")),
    )
    body = {"required": True, "content": json_body(ref("BatchRequest"))}
    return op(
        "Many tiles in one request", "slides", {"200": ok, **SLIDE_ERRORS}, [SLIDE_ID], body=body
    )


def _sign() -> Json:
    request = {
        "type": "object",
        "required": ["slide"],
        "properties": {
            "slide": {"type": "string"},
            "expires_in": {"type": "integer", "minimum": 1, "maximum": 604800},
        },
    }
    signed = {
        "type": "object",
        "required": ["slide", "expires", "query"],
        "properties": {
            "slide": {"type": "string"},
            "expires": {"type": "integer"},
            "query": {"type": "string"},
            "viewer": {"type": "string"},
            "dzi": {"type": "string"},
            "tiles": {"type": "string"},
        },
    }
    return op(
        "Signed URLs of one slide",
        "operations",
        {
            "200": resp(
                "The signature, to add to the query of any URL of the slide", json_body(signed)
            ),
            **SLIDE_ERRORS,
            "404": resp(
                "No such slide for this credential, or URL signing is off (no --url-signing-key)",
                json_body({"type": "object"}),
            ),
        },
        description="Read access to one slide's URLs without a credential, until `expires`.",
        body={"required": True, "content": json_body(request)},
    )


def _dzi() -> Json:
    dzi_id = path("slide_id", "Slide id")
    descriptor = op(
        "Deep Zoom descriptor",
        "dzi",
        {"200": resp("DZI XML", content(("application/xml",), {"type": "string"})), **SLIDE_ERRORS},
        [dzi_id],
    )
    name = path(
        "name",
        "`COL_ROW.FORMAT`",
        {"type": "string", "pattern": r"^[0-9]+_[0-9]+\.(jpeg|jpg|png|webp)$"},
    )
    tile = op(
        "Deep Zoom tile",
        "dzi",
        {**image_ok("The tile"), **_NOT_MODIFIED, **SLIDE_ERRORS},
        [dzi_id, path("level", "Deep Zoom level", integer(0)), name],
    )
    return {
        "/dzi/{slide_id}.dzi": {"get": descriptor},
        "/dzi/{slide_id}_files/{level}/{name}": {"get": tile},
    }


def _iiif() -> Json:
    version = path("version", "Image API version", enum("2", "3"))
    base = [version, SLIDE_ID]
    info_body = {
        **json_body({"type": "object"}),
        **json_body({"type": "object"}, "application/ld+json"),
    }
    info = op(
        "IIIF image information",
        "iiif",
        {"200": resp("info.json", info_body), **SLIDE_ERRORS},
        base,
    )
    redirect = op(
        "IIIF base URI",
        "iiif",
        {"303": resp("See info.json", Location="info.json URL"), **SLIDE_ERRORS},
        base,
    )
    params = [
        *base,
        path("region", "full, square, x,y,w,h or pct:x,y,w,h"),
        path("size", "max, w,, ,h, pct:n, w,h or !w,h (3.0: ^ to upscale)"),
        path("rotation", "0, 90, 180, 270, optionally mirrored with !"),
        path("quality_format", "QUALITY.FORMAT: default, color, gray or bitonal; jpg, png or webp"),
    ]
    image = op(
        "IIIF image request",
        "iiif",
        {**image_ok("The image"), **_NOT_MODIFIED, **SLIDE_ERRORS},
        params,
    )
    return {
        "/iiif/{version}/{slide_id}": {"get": redirect},
        "/iiif/{version}/{slide_id}/info.json": {"get": info},
        "/iiif/{version}/{slide_id}/{region}/{size}/{rotation}/{quality_format}": {"get": image},
    }


def _html(description: str) -> Json:
    return resp(description, content(("text/html",), {"type": "string"}))


def _viewer() -> Json:
    source = query("source", "Tile source", enum("dzi", "iiif", default="dzi"))
    page = op(
        "Viewer page",
        "viewer",
        {"200": _html("The viewer"), "404": _html("An HTML error page")},
        [SLIDE_ID, source],
    )
    icon = resp("The icon", content(("image/vnd.microsoft.icon",)))
    return {
        "/": {"get": op("Landing page: slides, search", "viewer", {"200": _html("The page")})},
        "/favicon.ico": {"get": op("Favicon", "viewer", {"200": icon})},
        "/viewer/{slide_id}": {"get": page},
    }


def _operations() -> Json:
    ready = json_body(ref("Ready"))
    metrics = resp("Prometheus text format", content(("text/plain",), {"type": "string"}))
    purged = {
        "200": resp("What was purged", json_body(ref("Purged"))),
        "503": resp("The shared cache (Redis) could not finish the purge", json_body(ref("Error"))),
    }
    return {
        "/healthz": {
            "get": op("Liveness", "operations", {"200": resp("Alive", json_body(ref("Health")))})
        },
        "/readyz": {
            "get": op(
                "Readiness",
                "operations",
                {"200": resp("Ready", ready), "503": resp("Not yet", ready)},
            )
        },
        "/metrics": {"get": op("Prometheus metrics", "operations", {"200": metrics})},
        "/cache": {"delete": op("Purge every derived image", "operations", purged)},
        "/cache/slides/{slide_id}": {
            "delete": op(
                "Purge one slide's derived images",
                "operations",
                {**purged, **SLIDE_ERRORS},
                [SLIDE_ID],
            )
        },
        "/auth/sign": {"post": _sign()},
        "/openapi.json": {
            "get": op(
                "This document",
                "operations",
                {"200": resp("OpenAPI 3.1", json_body({"type": "object"}))},
            )
        },
        "/docs": {
            "get": op("This document as a page", "operations", {"200": _html("API reference")})
        },
    }


def paths() -> Json:
    """Every path item but DICOMweb's."""
    return {**_slides(), **_dzi(), **_iiif(), **_viewer(), **_operations()}
