"""Path items of the DICOMweb front (``/dicomweb``): QIDO-RS, WADO-RS, STOW-RS.

PS3.18 negotiates most answers by ``Accept``; each operation lists the media types this
server sends (details in ``docs/dicomweb.md``).
"""

from __future__ import annotations

from tileserver.http.openapi.spec import (
    RENDERED,
    STORED,
    Json,
    content,
    error,
    integer,
    json_body,
    op,
    path,
    query,
    ref,
    resp,
)

DICOM_JSON = "application/dicom+json"
_UID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": 64}
STUDY = path("study", "Study Instance UID", _UID)
SERIES = path("series", "Series Instance UID", _UID)
INSTANCE = path("instance", "SOP Instance UID", _UID)
FRAMES = path(
    "frames",
    "Frame numbers from 1, comma-separated",
    {"type": "string", "pattern": r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*$"},
)
_ERRORS = {
    "400": error("A bad parameter"),
    "404": error("No such study, series, instance, frame or element"),
    "406": error("No acceptable media type (see `Accept`)"),
}
_DATASETS = {"200": resp("Matches", json_body(ref("DicomDatasets"), DICOM_JSON)), **_ERRORS}


def _search(summary: str, level: str) -> Json:
    keys = {
        "study": (
            "PatientID",
            "PatientName",
            "StudyDate",
            "AccessionNumber",
            "ModalitiesInStudy",
            "StudyInstanceUID",
        ),
        "series": ("Modality", "SeriesInstanceUID", "StudyInstanceUID"),
        "instance": ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"),
    }[level]
    params = [
        query("limit", "At most this many results", integer(0)),
        query("offset", "Skip this many results", integer(0)),
        query("fuzzymatching", "Fuzzy person-name matching", {"type": "boolean"}),
        {
            **query(
                "includefield",
                "Attributes to return (keyword or tag), or `all`",
                {"type": "array", "items": {"type": "string"}},
            ),
            "explode": True,
        },
        *(
            query(key, f"Match {key} (`*` and `?` wildcards, date ranges)", {"type": "string"})
            for key in keys
        ),
    ]
    return op(summary, "dicomweb", _DATASETS, params)


_INSTANCES = ("multipart/related", "application/dicom")


def _retrieve(summary: str, params: list[Json]) -> Json:
    ok = resp(
        'Instances as stored: multipart/related; type="application/dicom" (one instance also bare)',
        content(_INSTANCES),
    )
    return op(summary, "dicomweb", {"200": ok, **_ERRORS}, params)


def _metadata(summary: str, params: list[Json]) -> Json:
    return op(
        summary,
        "dicomweb",
        {
            "200": resp(
                "DICOM JSON with absolute BulkDataURIs", json_body(ref("DicomDatasets"), DICOM_JSON)
            ),
            **_ERRORS,
        },
        params,
    )


_RENDER_PARAMS = [
    query("quality", "JPEG quality", integer(1, 100)),
    query("viewport", "width,height of the box the image is fitted into", {"type": "string"}),
    query(
        "iccprofile",
        "Embed the ICC profile, or convert to sRGB",
        {"type": "string", "enum": ["no", "yes", "srgb"]},
    ),
]


def _rendered(summary: str, params: list[Json]) -> Json:
    ok = resp("The rendered image", content(RENDERED))
    return op(
        summary,
        "dicomweb",
        {"200": ok, **_ERRORS, "422": error("The slide's files are damaged")},
        [*params, *_RENDER_PARAMS],
    )


def _bulk() -> Json:
    rng = {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "One bytes= range",
        "schema": {"type": "string"},
    }
    tag = path(
        "tag",
        "Tag (8 hex digits) whose value is asked for",
        {"type": "string", "pattern": "^[0-9A-Fa-f]{8}$"},
    )
    responses = {
        "200": resp("The value", content(("application/octet-stream", "multipart/related"))),
        "206": resp("The range asked for", content(("application/octet-stream",))),
        "416": error("The range lies outside the value"),
        **_ERRORS,
    }
    return op(
        "Bulk data (Pixel Data, ICC profile, ...)",
        "dicomweb",
        responses,
        [STUDY, SERIES, INSTANCE, tag, rng],
    )


def _frames() -> Json:
    ok = resp(
        "Frames, stored or transcoded as `Accept` asks", content(("multipart/related", *STORED))
    )
    return op("Frames", "dicomweb", {"200": ok, **_ERRORS}, [STUDY, SERIES, INSTANCE, FRAMES])


def _store(params: list[Json]) -> Json:
    body = {"required": True, "content": content(('multipart/related; type="application/dicom"',))}
    answer = json_body(ref("DicomDataset"), DICOM_JSON)
    responses = {
        "200": resp("Every instance stored", answer),
        "202": resp("Some instances stored, some failed (see FailedSOPSequence)", answer),
        "409": resp("No instance stored", answer),
        "400": error("Not a multipart body"),
        "408": error("The body went silent for longer than --body-timeout"),
        "413": error("The body or one part is over --max-upload-bytes / --max-part-bytes"),
        "415": error("Not multipart/related; type=application/dicom"),
        "501": error("The server has no directory to store into"),
    }
    return op("Store instances (STOW-RS)", "dicomweb", responses, params, body=body)


def paths() -> Json:
    s, se, i = (
        "/dicomweb/studies/{study}",
        "/dicomweb/studies/{study}/series/{series}",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
    )
    f = i + "/frames/{frames}"
    st, sr, ins = [STUDY], [STUDY, SERIES], [STUDY, SERIES, INSTANCE]
    return {
        "/dicomweb/studies": {"get": _search("Search studies", "study"), "post": _store([])},
        "/dicomweb/series": {"get": _search("Search series", "series")},
        "/dicomweb/instances": {"get": _search("Search instances", "instance")},
        s: {"get": _retrieve("Retrieve a study", st), "post": _store(st)},
        s + "/series": {"get": op("Search a study's series", "dicomweb", _DATASETS, st)},
        s + "/instances": {"get": op("Search a study's instances", "dicomweb", _DATASETS, st)},
        s + "/metadata": {"get": _metadata("Study metadata", st)},
        s + "/thumbnail": {"get": _rendered("Study thumbnail", st)},
        se: {"get": _retrieve("Retrieve a series", sr)},
        se + "/instances": {"get": op("Search a series' instances", "dicomweb", _DATASETS, sr)},
        se + "/metadata": {"get": _metadata("Series metadata", sr)},
        se + "/rendered": {"get": _rendered("Rendered series", sr)},
        se + "/thumbnail": {"get": _rendered("Series thumbnail", sr)},
        i: {"get": _retrieve("Retrieve an instance", ins)},
        i + "/metadata": {"get": _metadata("Instance metadata", ins)},
        i + "/bulk/{tag}": {"get": _bulk()},
        i + "/rendered": {"get": _rendered("Rendered instance", ins)},
        i + "/thumbnail": {"get": _rendered("Instance thumbnail", ins)},
        f: {"get": _frames()},
        f + "/rendered": {"get": _rendered("Rendered frame", [*ins, FRAMES])},
        f + "/thumbnail": {"get": _rendered("Frame thumbnail", [*ins, FRAMES])},
    }
