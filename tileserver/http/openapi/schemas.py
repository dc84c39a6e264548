"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the API's JSON bodies.

Objects allow further properties: a client must ignore what it does not know, and a
server may add fields without a new document version.
"""

from __future__ import annotations

from tileserver.http.openapi.spec import Json, ref

_INT: Json = {"type": "integer"}
_NUM: Json = {"type": "number"}
_STR: Json = {"type": "string"}
_PAIR: Json = {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2}


def _object(required: tuple[str, ...], **properties: Json) -> Json:
    return {"type": "object", "required": list(required), "properties": properties}


def _nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


LEVEL = _object(
    ("index", "width", "height", "tile_width", "tile_height"),
    index=_INT,
    width=_INT,
    height=_INT,
    tile_width=_INT,
    tile_height=_INT,
    grid={"type": "array", "items": _INT, "minItems": 2, "maxItems": 2},
    downsample=_PAIR,
    mpp=_nullable(_PAIR),
)

SLIDE_ENTRY = _object(
    ("id", "name", "levels"),
    id=_STR,
    name=_STR,
    path=_nullable(_STR),
    size=_INT,
    width=_nullable(_INT),
    height=_nullable(_INT),
    levels={"type": "array", "items": ref("Level")},
    tile_size=_nullable({"type": "array", "items": _INT}),
    transfer_syntax=_nullable(_STR),
    associated={"type": "array", "items": _STR},
)

SLIDE_DETAIL = {
    "allOf": [
        ref("SlideEntry"),
        _object(
            ("focal_planes", "optical_paths", "warnings"),
            mpp=_nullable(_PAIR),
            focal_planes={"type": "array", "items": _NUM},
            optical_paths={"type": "array"},
            associated_images={
                "type": "array",
                "items": _object(("name", "width", "height"), name=_STR, width=_INT, height=_INT),
            },
            icc_profile={"type": "boolean"},
            attributes={"type": "object"},
            warnings={"type": "array"},
        ),
    ]
}

BATCH_REQUEST = _object(
    ("tiles",),
    tiles={
        "type": "array",
        "description": "[level, col, row] of each tile",
        "items": {"type": "array", "items": _INT, "minItems": 3, "maxItems": 3},
    },
    format={"type": "string", "enum": ["raw", "npy"], "default": "raw"},
    z={"type": "integer", "minimum": 0, "default": 0},
    path={"type": "integer", "minimum": 0, "default": 0},
)

#: One DICOM JSON dataset (PS3.18 F.2): 8-hex-digit tags to {vr, Value | BulkDataURI}.
DICOM_DATASET: Json = {
    "type": "object",
    "propertyNames": {"pattern": "^[0-9A-F]{8}$"},
    "additionalProperties": _object(("vr",), vr={"type": "string", "pattern": "^[A-Z]{2}$"}),
}

SCHEMAS: Json = {
    "Error": _object(("error",), error=_STR),
    "Level": LEVEL,
    "SlideEntry": SLIDE_ENTRY,
    "SlideList": _object(("slides",), slides={"type": "array", "items": ref("SlideEntry")}),
    "SlideDetail": SLIDE_DETAIL,
    "BatchRequest": BATCH_REQUEST,
    "Health": _object(("status",), status=_STR),
    "Ready": _object(("status", "ready"), status=_STR, ready={"type": "boolean"}),
    "Purged": _object(("purged",), purged=_STR, entries=_INT),
    "TissueFacts": {"type": "object"},
    "DicomDataset": DICOM_DATASET,
    "DicomDatasets": {"type": "array", "items": ref("DicomDataset")},
}
