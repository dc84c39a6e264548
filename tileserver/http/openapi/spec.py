"""Small builders for OpenAPI 3.1 objects: parameters, responses, operations."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

BINARY: Json = {"type": "string", "contentMediaType": "application/octet-stream"}
RENDERED = ("image/jpeg", "image/png", "image/webp")
#: Stored frames go out in their own coding (see ``tileserver.formats``).
STORED = (
    *RENDERED,
    "image/jp2",
    "image/jphc",
    "image/jls",
    "image/dicom-rle",
    "application/octet-stream",
)


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def content(media_types: tuple[str, ...], schema: Json | None = None) -> Json:
    return {m: {"schema": schema if schema is not None else BINARY} for m in media_types}


def json_body(schema: Json, media_type: str = "application/json") -> Json:
    return {media_type: {"schema": schema}}


def resp(description: str, content: Json | None = None, **headers: str) -> Json:
    out: Json = {"description": description}
    if content:
        out["content"] = content
    if headers:
        out["headers"] = {
            k.replace("_", "-"): {"description": v, "schema": {"type": "string"}}
            for k, v in headers.items()
        }
    return out


def error(description: str) -> Json:
    return resp(description, json_body(ref("Error")))


#: The 4xx answers every slide operation may give.
SLIDE_ERRORS = {
    "400": error("A bad parameter (the reason is in `error`)"),
    "404": error("No such slide, level, tile or image"),
    "422": error("The slide's files are damaged or inconsistent"),
}


def path(name: str, description: str, schema: Json | None = None) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def query(name: str, description: str, schema: Json, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def integer(
    minimum: int | None = None, maximum: int | None = None, default: int | None = None
) -> Json:
    schema: Json = {"type": "integer"}
    for key, value in (("minimum", minimum), ("maximum", maximum), ("default", default)):
        if value is not None:
            schema[key] = value
    return schema


def enum(*values: str, default: str | None = None) -> Json:
    schema: Json = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return schema


SLIDE_ID = path("slide_id", "Slide id, as listed by `GET /slides`")
PLANE = [
    query("z", "Focal plane index", integer(0, default=0)),
    query("path", "Optical path (channel) index", integer(0, default=0)),
]
IMAGE_FORMAT = query("format", "Output format", enum("jpeg", "jpg", "png", "webp", default="jpeg"))


def op(
    summary: str,
    tag: str,
    responses: Json,
    parameters: list[Json] | None = None,
    description: str | None = None,
    body: Json | None = None,
) -> Json:
    """One operation object."""
    out: Json = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        out["description"] = description
    if parameters:
        out["parameters"] = parameters
    if body:
        out["requestBody"] = body
    return out


def image_ok(description: str) -> Json:
    return {"200": resp(description, content(RENDERED), ETag="Strong validator")}
