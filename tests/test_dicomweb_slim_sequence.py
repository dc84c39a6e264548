"""The DICOMweb requests the Slim viewer makes to open a slide, replayed over a real socket.

Slim (ImagingDataCommons/slim) talks to the server only through dicomweb-client (JS) and
dicom-microscopy-viewer (dmv), from another origin. Read from their sources, opening a
study and its slide is this sequence (every request carries ``Origin`` and, when Slim is
configured with a sign-in, ``Authorization``; JSON requests send
``Accept: application/dicom+json``):

1. Worklist: ``Worklist.fetchStudies`` (src/components/Worklist.tsx)
   ``GET /studies?ModalitiesInStudy=SM`` -- no ``includefield``, no ``limit``. Only for a
   study whose result lacks ModalitiesInStudy (0008,0061) does
   ``runModalitiesEnrichment`` follow with ``GET /studies/{s}/series``.
2. The study's slides: ``fetchImageMetadata`` (src/services/fetchImageMetadata.ts, from
   ``useSlides`` in CaseViewer) ``GET /series?Modality=SM&StudyInstanceUID={s}`` (the
   root ``/series`` resource), then per series ``GET /studies/{s}/series/{se}/metadata``;
   items whose SOPClassUID is VL WSI become ``VLWholeSlideMicroscopyImage`` and
   ``createSlides`` (src/data/slides.tsx) sorts them by ImageType[2]: VOLUME and
   THUMBNAIL are the pyramid, LABEL and OVERVIEW are shown apart. Slim never searches
   the SM instances: the series metadata is all it reads.
3. Slide list preview: ``SlideItem.mountOverviewViewer`` (src/components/SlideItem.tsx)
   builds dmv's ``OverviewImageViewer`` with ``computeOverviewPreviewResizeFactor``
   (src/utils/computeOverviewPreviewResizeFactor.ts, a 280x100 px tile); dmv's
   ``_NonVolumeImageViewer`` (src/viewer.js) calls ``retrieveInstanceRendered``:
   ``GET .../instances/{overview}/rendered[?viewport=W%2CH]`` with ``Accept: image/png``
   (``viewport`` only when the factor is below 1; W,H = TotalPixelMatrix x factor).
4. The viewer: ``SlideViewer.populateViewports`` (src/components/SlideViewer.tsx) renders
   the viewers made by ``constructViewers`` (src/components/SlideViewer/utils/viewerUtils.ts):
   * ``VolumeImageViewer.render`` -> ``_getIccProfiles`` (dmv src/pyramid.js): for each
     pyramid image whose ICC Profile is a ``BulkDataURI``, ``retrieveBulkData`` ->
     ``GET {BulkDataURI}`` with ``Accept: multipart/related; type="application/octet-stream"``;
   * tiles: ``_createTileLoadFunction`` (dmv src/pyramid.js) maps a tile to a frame with
     ``getFrameMapping`` (dmv src/metadata.js) and calls ``retrieveInstanceFrames`` for
     one frame per request: ``GET .../instances/{i}/frames/{n}`` with
     ``Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*``;
     the reply is split by dicomweb-client's ``multipartDecode`` (src/message.js), which
     takes the boundary from the body's first ``--`` line, not from Content-Type;
   * ``LabelImageViewer`` (resizeFactor 1): ``GET .../instances/{label}/rendered`` with
     ``Accept: image/png`` and no query;
   * derived data, expected empty here: ``loadPresentationStates``
     ``GET /studies/{s}/instances?Modality=PR``, ``addAnnotations`` ``...?Modality=SR``,
     ``addAnnotationGroups`` / ``addSegmentations`` / ``addParametricMaps``
     ``GET /studies/{s}/series?Modality=ANN|SEG|OT`` (200 with ``[]`` or 204 both work).

A browser sends a CORS preflight before every request whose headers are not
"simple" (``Authorization``, or an ``Accept`` with a quote as in the multipart types):
``OPTIONS`` with ``Access-Control-Request-Headers: accept, authorization``. The replay
sends it before each request, as Chromium does on a cold cache. dmv fetches only the
frames in view; the replay fetches every frame of the pyramid, one request each.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames
from serverproc import ServerProcess

from fixtures import FixtureSet

CASES = ("jpeg_bot", "sparse", "j2k_lossless")
REAL_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "real-slides"
# The only real files dmv can show: a study of four series (native, JPEG-LS, JPEG-LS without
# BOT, 16-bit grey) whose ICC profiles are BulkDataURIs. The converter files in real-slides
# lack the (type 1) Optical Path Sequence, without which dmv's getFrameMapping throws
# "Could not determine the number of image channels".
REAL_STUDY_FILE = "highdicom-sm_image.dcm"

ORIGIN = "http://slim.example"
AUTHORIZATION = "Bearer slim-session-token"
DICOM_JSON = "application/dicom+json"
FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
BULK_ACCEPT = 'multipart/related; type="application/octet-stream"'
PNG = "image/png"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
DERIVED_SEARCHES = (
    ("instances", "PR"),
    ("instances", "SR"),
    ("series", "ANN"),
    ("series", "SEG"),
    ("series", "OT"),
)
PREVIEW_TILE = (280, 100)  # SLIDE_PREVIEW_FALLBACK_WIDTH_PX, SLIDE_PREVIEW_HEIGHT_PX


# -- how dicomweb-client (JS) and Slim shape requests and read replies --------------------


def encode_uri_component(value: str) -> str:
    """JavaScript's ``encodeURIComponent`` (dicomweb-client's ``_parseQueryParameters``)."""
    return quote(value, safe="-_.!~*'()")


def js_number(value: float) -> str:
    """``String(x)`` in JavaScript: integral doubles print without a fraction."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def overview_resize_factor(columns: int, rows: int, tile: tuple[int, int]) -> float:
    """Slim's ``computeOverviewPreviewResizeFactor``: a factor giving integral sizes, or 1."""
    fit = min(tile[0] / columns, tile[1] / rows, 1)
    if fit >= 1:
        return 1
    step = rows / math.gcd(columns, rows)
    target = math.floor(max(1, math.floor(rows * fit)) / step) * step
    return 1 if target < 1 else target / rows


def js_multipart_decode(body: bytes) -> list[bytes]:
    """dicomweb-client's ``multipartDecode``: boundary = first ``--`` line of the body."""
    end = body.find(b"\r\n\r\n", 0, 1000 + 3)
    assert end != -1, "no part header in the first 1000 bytes"
    lines = body[:end].decode("latin-1").split("\r\n")
    boundary = next(line for line in lines if line.startswith("--")).encode()
    parts, offset = [], len(boundary)
    while (index := body.find(boundary, offset)) != -1:
        header_end = body.find(b"\r\n\r\n", offset, offset + 1000 + 3)
        assert header_end != -1, "part header not within 1000 bytes of its boundary"
        parts.append(body[header_end + 4 : index - 2])
        offset = index + len(boundary)
    return parts


def strict_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """RFC 2046 parts, by the Content-Type boundary; no preamble allowed (JS needs none)."""
    params = dict(p.strip().split("=", 1) for p in response.headers["content-type"].split(";")[1:])
    delimiter = b"--" + params["boundary"].strip('"').encode()
    body = response.content
    assert body.startswith(delimiter + b"\r\n"), body[:80]
    assert body.rstrip(b"\r\n").endswith(delimiter + b"--")
    parts = []
    for chunk in body[len(delimiter) + 2 : body.rindex(b"\r\n" + delimiter + b"--")].split(
        b"\r\n" + delimiter + b"\r\n"
    ):
        head, _, payload = chunk.partition(b"\r\n\r\n")
        fields = (line.split(b":", 1) for line in head.split(b"\r\n"))
        parts.append(({k.strip().lower().decode(): v.strip().decode() for k, v in fields}, payload))
    return parts


def media_params(content_type: str) -> tuple[str, dict[str, str]]:
    kind, *rest = (p.strip() for p in content_type.split(";"))
    return kind.lower(), {k.lower(): v.strip('"') for k, v in (p.split("=", 1) for p in rest)}


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


# -- the replay ---------------------------------------------------------------------------


@dataclass
class SlimSession:
    """Requests as Slim's dicomweb-client sends them from its own origin, each preflighted."""

    http: httpx.Client
    root: str
    log: list[str] = field(default_factory=list)

    def get(self, path: str, accept: str, query: dict[str, str] | None = None) -> httpx.Response:
        url = path if path.startswith("http") else self.root + path
        if query:
            url += "?" + "&".join(f"{k}={encode_uri_component(v)}" for k, v in query.items())
        self._preflight(url)
        response = self.http.get(
            url, headers={"Origin": ORIGIN, "Accept": accept, "Authorization": AUTHORIZATION}
        )
        self.log.append(url.removeprefix(self.root))
        assert 200 <= response.status_code < 300, (url, response.status_code, response.text)
        assert response.headers["access-control-allow-origin"] in ("*", ORIGIN), url
        return response

    def _preflight(self, url: str) -> None:
        response = self.http.options(
            url,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept, authorization",
            },
        )
        assert 200 <= response.status_code < 300, (url, response.status_code)
        assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
        assert "GET" in response.headers["access-control-allow-methods"]
        allowed = {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert {"accept", "authorization"} <= allowed

    def search(self, path: str, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
        response = self.get(path, DICOM_JSON, query)
        if response.status_code == 204:
            return []
        assert media_params(response.headers["content-type"])[0] == DICOM_JSON
        found: list[dict[str, Any]] = response.json()
        return found


@dataclass
class OpenedStudy:
    """What the replay fetched: series metadata, frames, rendered images, ICC profiles."""

    study: str
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # SOP -> metadata
    frames: dict[tuple[str, int], bytes] = field(default_factory=dict)
    rendered: dict[str, bytes] = field(default_factory=dict)  # SOP -> PNG
    icc: dict[str, bytes] = field(default_factory=dict)

    def flavour(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.images.values() if m["00080008"]["Value"][2] == kind]


def fetch_image_metadata(slim: SlimSession, opened: OpenedStudy) -> None:
    """Slim's ``fetchImageMetadata``: the study's SM series, then each one's metadata."""
    series = slim.search("/series", {"Modality": "SM", "StudyInstanceUID": opened.study})
    assert series, opened.study
    for item in series:
        uid = value(item, "0020000E")
        for meta in slim.search(f"/studies/{opened.study}/series/{uid}/metadata"):
            if meta.get("00080016", {}).get("Value", [None])[0] == VL_WSI:
                opened.images[value(meta, "00080018")] = meta


def instance_path(meta: dict[str, Any]) -> str:
    study, series, sop = (value(meta, t) for t in ("0020000D", "0020000E", "00080018"))
    return f"/studies/{study}/series/{series}/instances/{sop}"


def render_preview(slim: SlimSession, opened: OpenedStudy, meta: dict[str, Any]) -> None:
    """dmv's ``_NonVolumeImageViewer`` image load, with Slim's preview resize factor."""
    columns, rows = value(meta, "00480006"), value(meta, "00480007")
    factor = overview_resize_factor(columns, rows, PREVIEW_TILE)
    query = None
    if factor != 1:
        query = {"viewport": f"{js_number(columns * factor)},{js_number(rows * factor)}"}
    response = slim.get(f"{instance_path(meta)}/rendered", PNG, query)
    assert response.headers["content-type"] == PNG
    opened.rendered[value(meta, "00080018")] = response.content


def frame_mapping(meta: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """dmv's ``getFrameMapping`` for one optical path: frame number -> (row, column), 1-based."""
    rows, columns = value(meta, "00280010"), value(meta, "00280011")
    across = math.ceil(value(meta, "00480006") / columns)
    frames = int(value(meta, "00280008")) if "00280008" in meta else 1
    if meta.get("00209311", {}).get("Value", ["TILED_SPARSE"])[0] == "TILED_FULL":
        return {n: ((n - 1) // across + 1, (n - 1) % across + 1) for n in range(1, frames + 1)}
    mapping = {}
    for n, group in enumerate(meta["52009230"]["Value"], start=1):
        position = group["0048021A"]["Value"][0]
        row = (value(position, "0048021F") - 1) // rows + 1
        mapping[n] = (row, (value(position, "0048021E") - 1) // columns + 1)
    return mapping


def load_tiles(slim: SlimSession, opened: OpenedStudy, meta: dict[str, Any]) -> None:
    """dmv's tile loader: one ``retrieveInstanceFrames`` per tile, read as JS reads it."""
    stored = value(meta, "00083002")
    for number in frame_mapping(meta):
        response = slim.get(f"{instance_path(meta)}/frames/{number}", FRAMES_ACCEPT)
        kind, params = media_params(response.headers["content-type"])
        assert (kind, params["type"]) == ("multipart/related", "application/octet-stream")
        assert params.get("transfer-syntax", stored) == stored
        ((headers, payload),) = strict_multipart(response)
        assert media_params(headers["content-type"])[0] == "application/octet-stream"
        assert js_multipart_decode(response.content) == [payload]
        opened.frames[(value(meta, "00080018"), number)] = payload


def load_icc_profile(slim: SlimSession, opened: OpenedStudy, meta: dict[str, Any]) -> None:
    """dmv's ``_getIccProfiles``: a BulkDataURI profile is fetched, an inline one is not."""
    profile = meta["00480105"]["Value"][0].get("00282000", {})
    if "BulkDataURI" not in profile:
        return
    response = slim.get(profile["BulkDataURI"], BULK_ACCEPT)
    (payload,) = js_multipart_decode(response.content)
    opened.icc[value(meta, "00080018")] = payload


def open_study(slim: SlimSession, study: str) -> OpenedStudy:
    """Steps 2-4 of the module docstring, in Slim's order."""
    opened = OpenedStudy(study)
    fetch_image_metadata(slim, opened)
    for meta in opened.flavour("OVERVIEW")[:1] or opened.flavour("THUMBNAIL")[:1]:
        render_preview(slim, opened, meta)
    pyramid = opened.flavour("VOLUME") + opened.flavour("THUMBNAIL")
    for meta in pyramid:
        load_icc_profile(slim, opened, meta)
    for meta in pyramid:
        load_tiles(slim, opened, meta)
    for meta in opened.flavour("LABEL")[:1]:
        response = slim.get(f"{instance_path(meta)}/rendered", PNG)
        assert response.headers["content-type"] == PNG
        opened.rendered[value(meta, "00080018")] = response.content
    for resource, modality in DERIVED_SEARCHES:
        assert slim.search(f"/studies/{study}/{resource}", {"Modality": modality}) == []
    return opened


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    fixture_dir: dict[str, FixtureSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slim-slides")
    for case in CASES:
        shutil.copytree(fixture_dir[case].directory, root / case)
    roots = [root, *([REAL_SLIDES] if REAL_SLIDES.is_dir() else [])]
    process = ServerProcess(roots, tmp_path_factory.mktemp("slim-server")).start()
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture
def slim(server: str) -> Iterator[SlimSession]:
    with httpx.Client(timeout=30) as http:
        yield SlimSession(http, f"{server}/dicomweb")


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


# -- tests --------------------------------------------------------------------------------


def test_worklist_search_lists_every_slide_study(
    slim: SlimSession, fixture_dir: dict[str, FixtureSet]
) -> None:
    studies = slim.search("/studies", {"ModalitiesInStudy": "SM"})
    by_uid = {value(s, "0020000D"): s for s in studies}
    for case in CASES:
        study = by_uid[fixture_dir[case].study_uid]
        # Present and holding SM, so Slim's runModalitiesEnrichment sends no series search.
        assert "SM" in study["00080061"]["Value"]
        assert study["00081190"]["Value"][0].startswith(slim.root + "/studies/")
    assert slim.log == ["/studies?ModalitiesInStudy=SM"]


@pytest.mark.parametrize("case", CASES)
def test_slim_opens_a_fixture_slide(
    slim: SlimSession, fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    opened = open_study(slim, fs.study_uid)

    expected = {i.sop_instance_uid: i for i in fs.instances}
    assert set(opened.images) == set(expected)
    for sop, meta in opened.images.items():
        assert meta["00080008"]["Value"][2] == expected[sop].image_type
    pyramid = [i for i in fs.instances if i.image_type in ("VOLUME", "THUMBNAIL")]
    assert len(opened.frames) == sum(i.number_of_frames for i in pyramid)
    for inst in pyramid:
        mapping = frame_mapping(opened.images[inst.sop_instance_uid])
        for number, (row, column) in mapping.items():
            assert inst.frame_tiles[number - 1][2:] == (column - 1, row - 1)
            assert opened.frames[(inst.sop_instance_uid, number)] == inst.read_frame(number - 1)
    for associated in fs.associated:
        sop = associated.instance.sop_instance_uid
        if associated.kind in ("LABEL", "OVERVIEW"):
            pixels = decode_png(opened.rendered[sop])
            assert pixels.shape == associated.pixels.shape  # Slim's factor is 1 here
            assert np.abs(pixels.astype(int) - associated.pixels.astype(int)).mean() < 4
    assert_slim_order(slim.log, fs.study_uid, opened)


def request_kind(entry: str) -> str:
    for marker, kind in (("/series?Modality=SM", "series-search"), ("/frames/", "frame")):
        if marker in entry:
            return kind
    for suffix, kind in (("/metadata", "metadata"), ("/rendered", "rendered")):
        if entry.split("?")[0].endswith(suffix):
            return kind
    return "bulk" if "/bulk/" in entry else "derived"


def assert_slim_order(log: list[str], study: str, opened: OpenedStudy) -> None:
    """The log is Slim's sequence: series search, metadata, preview, ICC, frames, label,
    derived-data searches."""
    assert log[0] == f"/series?Modality=SM&StudyInstanceUID={study}"
    kinds = [request_kind(entry) for entry in log]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    preview = opened.flavour("OVERVIEW") or opened.flavour("THUMBNAIL")
    assert collapsed == [
        "series-search",
        "metadata",
        *(["rendered"] if preview else []),
        *(["bulk"] if opened.icc else []),
        "frame",
        *(["rendered"] if opened.flavour("LABEL") else []),
        "derived",
    ]
    assert log[-5:] == [f"/studies/{study}/{r}?Modality={m}" for r, m in DERIVED_SEARCHES]


def test_overview_preview_with_a_viewport(
    slim: SlimSession, fixture_dir: dict[str, FixtureSet]
) -> None:
    """The preview request when Slim's factor is below 1: ``viewport=W%2CH``, PNG inside it.

    The fixtures' overview sizes admit no integral downscale (Slim then omits the
    viewport), so this asks for the box a 14:5 overview in the 280x100 tile gets."""
    fs = fixture_dir["jpeg_bot"]
    overview = fs.associated_image("OVERVIEW")
    sop = overview.instance.sop_instance_uid
    path = f"/studies/{fs.study_uid}/series/{fs.series_uid}/instances/{sop}"
    assert overview_resize_factor(1400, 500, PREVIEW_TILE) == 0.2
    response = slim.get(f"{path}/rendered", PNG, {"viewport": "280,100"})
    assert slim.log == [f"{path}/rendered?viewport=280%2C100"]
    assert response.headers["content-type"] == PNG
    height, width, _ = decode_png(response.content).shape
    assert width <= 280 and height <= 100 and (width == 280 or height == 100)


def real_frame_reader(path: Path) -> Callable[[int], bytes]:
    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames", 1))
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    else:
        size = len(ds.PixelData) // count
        frames = [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]
    return lambda number: frames[number - 1]


def test_slim_opens_a_real_study(slim: SlimSession, real_slides: Path) -> None:
    study = pydicom.dcmread(real_slides / REAL_STUDY_FILE, stop_before_pixels=True).StudyInstanceUID
    files = {}
    for path in real_slides.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.StudyInstanceUID == study:
            files[ds.SOPInstanceUID] = (path, ds)

    opened = open_study(slim, study)

    assert set(opened.images) == set(files)
    readers = {sop: real_frame_reader(path) for sop, (path, _) in files.items()}
    for (sop, number), payload in opened.frames.items():
        assert payload == readers[sop](number), (sop, number)
    for sop, icc in opened.icc.items():
        assert icc == bytes(files[sop][1].OpticalPathSequence[0].ICCProfile)
    assert len(opened.icc) == 3  # the colour series' 3 KiB profiles are BulkDataURIs
    assert_slim_order(slim.log, study, opened)
