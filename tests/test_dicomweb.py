"""The DICOMweb front over a real socket, checked with dicomweb-client, wsidicom and pydicom."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames
from serverproc import ServerProcess
from wsidicom import WsiDicom, WsiDicomWebClient

from fixtures import FixtureSet
from tileserver import codec
from tileserver.dicomweb.instances import InstanceRef, bulk_value
from tileserver.errors import NotFoundError
from tileserver.formats import EncodedTile, PixelFormat

# wsidicom parses metadata with Dataset.from_json and no bulk data handler: pydicom warns
# once per BulkDataURI (Pixel Data, ICC profile). Those URIs are what this front promises.
pytestmark = pytest.mark.filterwarnings("ignore:No bulk data URI handler:UserWarning")

CASES = ("jpeg_bot", "j2k_lossless", "sparse", "native_explicit", "concatenation")
REAL_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "real-slides"
REAL_DICOM = sorted(p.name for p in REAL_SLIDES.glob("*.dcm")) if REAL_SLIDES.is_dir() else []
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


class BytesClient(DICOMwebClient):  # type: ignore[misc]
    """dicomweb-client yields ``bytearray`` frames, which pydicom turns into a list when
    wsidicom assigns one to PixelData (native frames); hand wsidicom ``bytes``."""

    def iter_instance_frames(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        return (bytes(f) for f in super().iter_instance_frames(*args, **kwargs))


@pytest.fixture(scope="module")
def slide_root(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Path:
    root = tmp_path_factory.mktemp("dicomweb-slides")
    for case in CASES:
        shutil.copytree(fixture_dir[case].directory, root / case)
    return root


@pytest.fixture(scope="module")
def server(slide_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    roots = [slide_root, *([REAL_SLIDES] if REAL_DICOM else [])]
    process = ServerProcess(roots, tmp_path_factory.mktemp("dicomweb-server")).start()
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def dw(server: str) -> Iterator[DICOMwebClient]:
    client = DICOMwebClient(url=f"{server}/dicomweb")
    yield client
    client._session.close()


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=30) as client:
        yield client


def uid(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def instances_of(dw: DICOMwebClient, fs: FixtureSet) -> dict[str, dict[str, Any]]:
    found = dw.search_for_instances(fs.study_uid, fs.series_uid)
    return {uid(i, "00080018"): i for i in found}


def level0_instance(fs: FixtureSet) -> Any:
    return fs.level(0).instances[0]


# -- QIDO-RS -----------------------------------------------------------------------------


def test_search_levels_find_every_fixture(dw: DICOMwebClient, fixture_dir: dict) -> None:
    studies = {uid(s, "0020000D"): s for s in dw.search_for_studies()}
    series = {uid(s, "0020000E") for s in dw.search_for_series()}
    for case in CASES:
        fs = fixture_dir[case]
        assert uid(studies[fs.study_uid], "00201208") == len(fs.paths)
        assert uid(studies[fs.study_uid], "00080061") == "SM"
        assert fs.series_uid in series
        found = instances_of(dw, fs)
        expected = {i.sop_instance_uid: i for lv in fs.levels for i in lv.instances}
        expected.update({a.instance.sop_instance_uid: a.instance for a in fs.associated})
        assert set(found) == set(expected)
        for sop, inst in found.items():
            assert uid(inst, "00083002") == expected[sop].transfer_syntax


def test_search_matching_through_the_client(dw: DICOMwebClient, fixture_dir: dict) -> None:
    fs = fixture_dir["jpeg_bot"]
    filters = {
        "PatientID": "FIXTURE-PATIENT",
        "PatientName": "Fixture^*",
        "StudyDate": "20240101-20240131",
        "AccessionNumber": "ACC0001",
        "ModalitiesInStudy": "SM",
    }
    studies = {uid(s, "0020000D") for s in dw.search_for_studies(search_filters=filters)}
    assert {fixture_dir[c].study_uid for c in CASES} <= studies
    assert dw.search_for_studies(search_filters={"StudyDate": "19000101-19000102"}) == []
    fuzzy = dw.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "fixt"})
    assert fs.study_uid in {uid(s, "0020000D") for s in fuzzy}
    page = dw.search_for_series(limit=2, offset=1)
    assert len(page) == 2


def test_wsidicom_style_instance_search(dw: DICOMwebClient, fixture_dir: dict) -> None:
    fs = fixture_dir["concatenation"]
    found = dw.search_for_instances(
        fs.study_uid,
        fields=["AvailableTransferSyntaxUID"],
        search_filters={
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.6",
            "SeriesInstanceUID": [fs.series_uid, "1.2.3.4"],
            "Modality": "SM",
        },
    )
    assert len(found) == len(fs.paths)
    assert all(uid(i, "0020000E") == fs.series_uid for i in found)


def test_search_rejects_unsatisfiable_accept_and_bad_dates(http: httpx.Client) -> None:
    assert http.get("/studies", headers={"Accept": "application/dicom+xml"}).status_code == 406
    assert http.get("/studies", params={"StudyDate": "2024-01-01"}).status_code == 400
    warned = http.get("/studies", params={"StudyDescription": "x"})
    assert warned.status_code == 200 and "StudyDescription" in warned.headers["warning"]


def test_search_numbers_dates_and_unknown_keys(http: httpx.Client) -> None:
    for params in ({"limit": "\u00b2"}, {"offset": "99999999999999999999"}):
        assert http.get("/studies", params=params).status_code == 400, params
    assert http.get("/studies", params={"StudyDate": "2024011520240116"}).status_code == 400
    busted = http.get("/studies", params={"_": "1700000000000"})  # jQuery-style cache-buster
    assert busted.status_code == 200 and busted.json() and "_" in busted.headers["warning"]


def test_instance_search_carries_study_and_series_attributes(
    http: httpx.Client, fixture_dir: dict
) -> None:
    fs = fixture_dir["jpeg_bot"]
    found = http.get("/instances", params={"SeriesInstanceUID": fs.series_uid}).json()
    assert len(found) == len(fs.paths)
    for tag in ("00100020", "00100010", "00080020", "0020000D", "00200011", "00201209"):
        assert all(tag in item for item in found), tag
    assert {uid(item, "00080056") for item in found} == {"ONLINE"}
    (study,) = http.get("/studies", params={"StudyInstanceUID": fs.study_uid}).json()
    assert uid(study, "00080056") == "ONLINE"


# -- WADO-RS metadata and bulk data ---------------------------------------------------------


def test_metadata_parses_and_bulk_uris_resolve(
    dw: DICOMwebClient, http: httpx.Client, fixture_dir: dict
) -> None:
    fs = fixture_dir["jpeg_bot"]
    inst = level0_instance(fs)
    md = dw.retrieve_instance_metadata(fs.study_uid, fs.series_uid, inst.sop_instance_uid)
    ds = pydicom.Dataset.from_json(md)
    local = pydicom.dcmread(inst.path, stop_before_pixels=True)
    assert ds.TotalPixelMatrixColumns == local.TotalPixelMatrixColumns
    assert ds.DimensionOrganizationType == local.DimensionOrganizationType
    assert ds.ContainerIdentifier == local.ContainerIdentifier
    assert ds.FrameOfReferenceUID == local.FrameOfReferenceUID
    assert md["00083002"]["Value"] == [inst.transfer_syntax]
    icc = md["00480105"]["Value"][0]["00282000"]
    if "BulkDataURI" in icc:  # small profiles are inline
        got = httpx.get(icc["BulkDataURI"], headers={"Accept": "application/octet-stream"}).content
    else:
        got = base64.b64decode(icc["InlineBinary"])
    assert got == bytes(local.OpticalPathSequence[0].ICCProfile)
    pixel_uri = md["7FE00010"]["BulkDataURI"]
    part = httpx.get(pixel_uri, headers={"Range": "bytes=8-99"})
    assert part.status_code == 206
    frame0 = inst.frames[0].fragments[0]
    raw = inst.path.read_bytes()
    start = raw.index(b"\xe0\x7f\x10\x00") + 12
    assert part.content == raw[start + 8 : start + 100]
    assert frame0.offset > start


def test_bulk_icc_profile_of_a_real_slide(dw: DICOMwebClient) -> None:
    if "highdicom-sm_image.dcm" not in REAL_DICOM:
        pytest.skip("../shared/real-slides not present")
    local = pydicom.dcmread(REAL_SLIDES / "highdicom-sm_image.dcm", stop_before_pixels=True)
    md = dw.retrieve_instance_metadata(
        local.StudyInstanceUID, local.SeriesInstanceUID, local.SOPInstanceUID
    )
    uri = md["00480105"]["Value"][0]["00282000"]["BulkDataURI"]
    assert uri.startswith("http")
    (multipart,) = dw.retrieve_bulkdata(uri)
    whole = httpx.get(uri, headers={"Accept": "application/octet-stream"})
    tail = httpx.get(uri, headers={"Range": "bytes=-10"})
    expected = bytes(local.OpticalPathSequence[0].ICCProfile)
    assert bytes(multipart) == whole.content == expected and tail.content == expected[-10:]


def pixel_data_url(fs: FixtureSet) -> str:
    inst = level0_instance(fs)
    base = f"/studies/{fs.study_uid}/series/{fs.series_uid}/instances/{inst.sop_instance_uid}"
    return base + "/bulk/7FE00010"


def test_bulk_data_ranges_follow_rfc_9110(http: httpx.Client, fixture_dir: dict) -> None:
    url = pixel_data_url(fixture_dir["jpeg_bot"])
    whole = http.get(url)
    size = len(whole.content)
    for spec in ("bytes=-0", "bytes=99999999-", f"bytes={size}-", "bytes=" + "9" * 40 + "-"):
        response = http.get(url, headers={"Range": spec})
        assert response.status_code == 416, spec
        assert response.headers["content-range"] == f"bytes */{size}"
    for spec in ("bytes=5-3", "bytes=0-1,4-5", "items=0-3", "bytes=x-1"):
        ignored = http.get(url, headers={"Range": spec})
        assert ignored.status_code == 200 and ignored.content == whole.content, spec
    tail = http.get(url, headers={"Range": f"bytes=-{size + 10}"})
    assert tail.status_code == 206 and tail.content == whole.content
    assert tail.headers["content-range"] == f"bytes 0-{size - 1}/{size}"


def test_multipart_bulk_data_ignores_range(http: httpx.Client, fixture_dir: dict) -> None:
    url = pixel_data_url(fixture_dir["jpeg_bot"])
    size = len(http.get(url).content)
    multipart = {"Accept": 'multipart/related; type="application/octet-stream"'}
    response = http.get(url, headers={**multipart, "Range": "bytes=0-9"})
    assert response.status_code == 200 and "content-range" not in response.headers
    assert response.headers["content-type"].startswith("multipart/related")
    assert len(response.content) > size


def test_bulk_data_accept_q_zero_is_406(http: httpx.Client, fixture_dir: dict) -> None:
    url = pixel_data_url(fixture_dir["jpeg_bot"])
    for header in ("*/*;q=0", "image/gif", "application/octet-stream;q=0"):
        assert http.get(url, headers={"Accept": header}).status_code == 406, header


def test_series_and_study_metadata_list_every_instance(
    dw: DICOMwebClient, fixture_dir: dict
) -> None:
    fs = fixture_dir["sparse"]
    series = dw.retrieve_series_metadata(fs.study_uid, fs.series_uid)
    study = dw.retrieve_study_metadata(fs.study_uid)
    assert len(series) == len(study) == len(fs.paths)
    level0 = next(m for m in series if uid(m, "00080018") == level0_instance(fs).sop_instance_uid)
    assert "52009230" in level0  # per-frame functional groups of a TILED_SPARSE image


def test_unknown_uids_are_404(http: httpx.Client, fixture_dir: dict) -> None:
    fs = fixture_dir["jpeg_bot"]
    sop = level0_instance(fs).sop_instance_uid
    for path in (
        "/studies/1.2.3/metadata",
        f"/studies/{fs.study_uid}/series/1.2.3/metadata",
        f"/studies/{fs.study_uid}/series/{fs.series_uid}/instances/1.2.3/metadata",
        f"/studies/1.2.3/series/{fs.series_uid}/instances/{sop}/frames/1",
        f"/studies/{fs.study_uid}/series/{fs.series_uid}/instances/{sop}/bulk/00991000",
    ):
        assert http.get(path).status_code == 404, path


@pytest.mark.parametrize("tag", ["-1", "FFFFFFFFFF", "0x100010", "0028_0010"])
def test_bulk_tags_are_eight_hex_digits(tmp_path: Path, tag: str) -> None:
    # No file there: were the tag parsed and pydicom asked, it would raise FileNotFoundError.
    missing = tmp_path / "absent.dcm"
    with pytest.raises(NotFoundError):
        bulk_value(InstanceRef(str(missing), "", "", None), tag)  # type: ignore[arg-type]


# -- WADO-RS frames ------------------------------------------------------------------------


def frames_url(fs: FixtureSet, sop: str, frames: str) -> str:
    return f"/studies/{fs.study_uid}/series/{fs.series_uid}/instances/{sop}/frames/{frames}"


@pytest.mark.parametrize("case", CASES)
def test_single_frames_equal_the_file(dw: DICOMwebClient, fixture_dir: dict, case: str) -> None:
    fs = fixture_dir[case]
    inst = level0_instance(fs)
    for number in (1, inst.number_of_frames):
        (frame,) = dw.retrieve_instance_frames(
            fs.study_uid,
            fs.series_uid,
            inst.sop_instance_uid,
            [number],
            media_types=(("application/octet-stream", "*"),),
        )
        assert bytes(frame) == inst.read_frame(number - 1)


def test_a_batch_of_100_frames_is_one_request(dw: DICOMwebClient, fixture_dir: dict) -> None:
    fs = fixture_dir["concatenation"]
    inst = level0_instance(fs)
    numbers = [1 + i % inst.number_of_frames for i in range(100)]
    frames = dw.retrieve_instance_frames(
        fs.study_uid,
        fs.series_uid,
        inst.sop_instance_uid,
        numbers,
        media_types=(("application/octet-stream", "*"),),
    )
    assert len(frames) == 100
    assert all(bytes(f) == inst.read_frame(n - 1) for f, n in zip(frames, numbers, strict=True))


def test_jpeg_is_transcoded_from_jpeg_2000(dw: DICOMwebClient, fixture_dir: dict) -> None:
    fs = fixture_dir["j2k_lossless"]
    inst = level0_instance(fs)
    (jpeg,) = dw.retrieve_instance_frames(
        fs.study_uid, fs.series_uid, inst.sop_instance_uid, [2], media_types=("image/jpeg",)
    )
    assert bytes(jpeg[:2]) == b"\xff\xd8"
    fmt = PixelFormat(inst.tile_height, inst.tile_width, 3, inst.photometric)
    stored = codec.decode(EncodedTile(inst.read_frame(1), J2K_LOSSLESS, fmt))
    ours = np.asarray(Image.open(io.BytesIO(bytes(jpeg))).convert("RGB"))
    assert np.abs(ours.astype(int) - stored.astype(int)).mean() < 3


def test_q_values_pick_the_preferred_type(http: httpx.Client, fixture_dir: dict) -> None:
    fs = fixture_dir["j2k_lossless"]
    url = frames_url(fs, level0_instance(fs).sop_instance_uid, "1,2")
    jp2_first = 'multipart/related; type="image/jp2", multipart/related; type="image/jpeg";q=0.5'
    jpeg_first = 'multipart/related; type="image/jp2";q=0.2, multipart/related; type="image/jpeg"'
    assert (
        'type="image/jp2"' in http.get(url, headers={"Accept": jp2_first}).headers["content-type"]
    )
    response = http.get(url, headers={"Accept": jpeg_first})
    assert f"transfer-syntax={JPEG_BASELINE}" in response.headers["content-type"]


def test_q_zero_excludes_a_frame_media_type(http: httpx.Client, fixture_dir: dict) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = frames_url(fs, level0_instance(fs).sop_instance_uid, "1")
    response = http.get(url, headers={"Accept": "image/jpeg;q=0, */*"})
    assert response.status_code == 200
    assert 'type="application/octet-stream"' in response.headers["content-type"]
    assert http.get(url, headers={"Accept": "*/*;q=0"}).status_code == 406


def test_frame_errors(http: httpx.Client, fixture_dir: dict) -> None:
    fs = fixture_dir["jpeg_bot"]
    inst = level0_instance(fs)
    sop = inst.sop_instance_uid
    gif = {"Accept": 'multipart/related; type="image/gif"'}
    assert http.get(frames_url(fs, sop, "1"), headers=gif).status_code == 406
    assert http.get(frames_url(fs, sop, "0")).status_code == 400
    assert http.get(frames_url(fs, sop, "1,x")).status_code == 400
    assert http.get(frames_url(fs, sop, "%C2%B2")).status_code == 400  # "²".isdigit()
    assert http.get(frames_url(fs, sop, "9" * 5000)).status_code == 400  # int() digit limit
    assert http.get(frames_url(fs, sop, str(inst.number_of_frames + 1))).status_code == 404


# -- WADO-RS instances, rendered ------------------------------------------------------------


def test_retrieve_instance_and_series_as_dicom(dw: DICOMwebClient, fixture_dir: dict) -> None:
    fs = fixture_dir["j2k_lossless"]
    inst = level0_instance(fs)
    ds = dw.retrieve_instance(fs.study_uid, fs.series_uid, inst.sop_instance_uid)
    local = pydicom.dcmread(inst.path)
    assert ds.SOPInstanceUID == inst.sop_instance_uid and ds.PixelData == local.PixelData
    series = dw.retrieve_series(fs.study_uid, fs.series_uid)
    assert sorted(d.SOPInstanceUID for d in series) == sorted(
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in fs.paths
    )


def test_rendered_label_as_png_in_a_viewport(http: httpx.Client, fixture_dir: dict) -> None:
    fs = fixture_dir["jpeg_bot"]
    label = next(a for a in fs.associated if a.kind == "LABEL")
    sop = label.instance.sop_instance_uid
    url = f"/studies/{fs.study_uid}/series/{fs.series_uid}/instances/{sop}/rendered"
    response = http.get(url, params={"viewport": "100,100"}, headers={"Accept": "image/png"})
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) == 100
    full = http.get(url, headers={"Accept": "image/png"})
    pixels = np.asarray(Image.open(io.BytesIO(full.content)).convert("RGB")).astype(int)
    assert np.abs(pixels - label.pixels.astype(int)).mean() < 4  # JPEG-stored label


def test_rendered_frame_and_thumbnails(http: httpx.Client, fixture_dir: dict) -> None:
    fs = fixture_dir["jpeg_bot"]
    base = f"/studies/{fs.study_uid}/series/{fs.series_uid}"
    sop = level0_instance(fs).sop_instance_uid
    frame = http.get(f"{base}/instances/{sop}/frames/1/rendered", params={"quality": "50"})
    assert frame.headers["content-type"] == "image/jpeg"
    thumb = http.get(f"{base}/thumbnail", params={"viewport": "64,64"})
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64
    level = http.get(f"{base}/instances/{sop}/rendered", params={"viewport": "90,90"})
    assert Image.open(io.BytesIO(level.content)).size == (90, 70)


def test_cors_on_dicomweb_responses(http: httpx.Client) -> None:
    response = http.get("/studies", headers={"Origin": "https://slim.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    preflight = http.options(
        "/studies",
        headers={
            "Origin": "https://slim.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept, authorization",
        },
    )
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert preflight.status_code == 204 and "accept" in allowed and "authorization" in allowed


# -- wsidicom's DICOMweb source equals wsidicom on the files -----------------------------


def assert_same_wsi(web: WsiDicom, local: WsiDicom) -> None:
    assert [lv.size for lv in web.levels] == [lv.size for lv in local.levels]
    for level in range(len(local.levels)):
        size = local.levels[level].size
        region = (min(size.width, 600), min(size.height, 600))
        ours = np.asarray(web.read_region((0, 0), level, region))
        theirs = np.asarray(local.read_region((0, 0), level, region))
        np.testing.assert_array_equal(ours, theirs)
    for kind in ("label", "overview"):
        if getattr(local, f"{kind}s"):
            ours = np.asarray(getattr(web, f"read_{kind}")())
            np.testing.assert_array_equal(ours, np.asarray(getattr(local, f"read_{kind}")()))


@contextlib.contextmanager
def open_web(server: str, study: str, series: str) -> Iterator[WsiDicom]:
    client = BytesClient(url=f"{server}/dicomweb")
    try:
        with WsiDicom.open_web(WsiDicomWebClient(client), study, series) as wsi:
            yield wsi
    finally:
        client._session.close()


# wsidicom's web source merges concatenation parts into their first part's instance and
# asks for frames by the concatenation's numbering, which no single instance has.
@pytest.mark.parametrize("case", [c for c in CASES if c != "concatenation"])
def test_wsidicom_web_equals_local_fixture(server: str, fixture_dir: dict, case: str) -> None:
    fs = fixture_dir[case]
    with open_web(server, fs.study_uid, fs.series_uid) as web, WsiDicom.open(fs.paths) as local:
        assert_same_wsi(web, local)


@pytest.mark.parametrize("name", [n for n in REAL_DICOM if "label" not in n])
def test_wsidicom_web_equals_local_real_slide(server: str, name: str) -> None:
    path = REAL_SLIDES / name
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    with (
        open_web(server, ds.StudyInstanceUID, ds.SeriesInstanceUID) as web,
        WsiDicom.open(path) as local,
    ):
        assert_same_wsi(web, local)


def test_real_frames_equal_pydicom(dw: DICOMwebClient) -> None:
    if not REAL_DICOM:
        pytest.skip("../shared/real-slides not present")
    for name in REAL_DICOM:
        ds = pydicom.dcmread(REAL_SLIDES / name)
        n = int(ds.get("NumberOfFrames", 1))
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            expected = list(generate_frames(ds.PixelData, number_of_frames=n))
        else:
            size = len(ds.PixelData) // n
            expected = [ds.PixelData[i * size : (i + 1) * size] for i in range(n)]
        got = dw.retrieve_instance_frames(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            list(range(1, n + 1)),
            media_types=(("application/octet-stream", "*"),),
        )
        assert [bytes(f) for f in got] == expected, name
