"""STOW-RS over a real socket: store with dicomweb-client, then read through every front."""

from __future__ import annotations

import io
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from serverproc import ServerProcess

import fixtures
from fixtures import FixtureSet
from tileserver.catalog import Catalog
from tileserver.dicomweb import stow

pytestmark = pytest.mark.filterwarnings("ignore:No bulk data URI handler:UserWarning")

BOUNDARY = "stowboundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stow-slides")


@pytest.fixture(scope="module")
def server(slides: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("stow-server")
    process = ServerProcess([slides], work, env={"TILESERVER_RESCAN_INTERVAL": "0"}).start()
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureSet]:
    """Fixture slides the server has never seen, to be stored."""
    sets: dict[str, FixtureSet] = fixtures.generate_all(
        tmp_path_factory.mktemp("upload"), ["jpeg_eot", "j2k_lossless", "sparse"]
    )
    return sets


@pytest.fixture(scope="module")
def dw(server: str) -> Iterator[DICOMwebClient]:
    client = DICOMwebClient(url=f"{server}/dicomweb")
    yield client
    client._session.close()


def body(parts: list[tuple[str, bytes]], close: bool = True) -> bytes:
    out = b""
    for media_type, data in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {media_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def post(
    server: str, data: bytes, path: str = "/dicomweb/studies", **headers: str
) -> httpx.Response:
    headers = {"Content-Type": CONTENT_TYPE, **headers}
    return httpx.post(f"{server}{path}", content=data, headers=headers, timeout=30)


#: What every DICOM file opens with (the receiver refuses a part without it at once).
MAGIC = b"\0" * 128 + b"DICM"


def failures(response: httpx.Response) -> list[int]:
    items = response.json().get("00081198", {}).get("Value", [])
    return [item["00081197"]["Value"][0] for item in items]


def test_stored_pyramid_is_served_by_every_front(
    server: str, dw: DICOMwebClient, upload: dict[str, FixtureSet]
) -> None:
    fs = upload["jpeg_eot"]
    result = dw.store_instances([pydicom.dcmread(p) for p in fs.paths])
    assert len(result.ReferencedSOPSequence) == len(fs.paths)
    assert "FailedSOPSequence" not in result
    found = dw.search_for_instances(fs.study_uid, fs.series_uid)
    assert len(found) == len(fs.paths)
    inst = fs.level(0).instances[0]
    (frame,) = dw.retrieve_instance_frames(
        fs.study_uid,
        fs.series_uid,
        inst.sop_instance_uid,
        [3],
        media_types=(("application/octet-stream", "*"),),
    )
    assert bytes(frame) == inst.read_frame(2)
    with httpx.Client(base_url=server, timeout=30) as client:
        detail = client.get(f"/slides/{fs.series_uid}").json()
        assert [lv["width"] for lv in detail["levels"]] == [lv.width for lv in fs.levels]
        col, row = inst.frame_tiles[2][2], inst.frame_tiles[2][3]
        tile = client.get(f"/slides/{fs.series_uid}/tiles/0/{col}/{row}")
        assert tile.content == inst.read_frame(2)
        dzi = client.get(f"/dzi/{fs.series_uid}.dzi")
        assert dzi.status_code == 200 and f'Width="{fs.level(0).width}"' in dzi.text
        info = client.get(f"/iiif/3/{fs.series_uid}/info.json")
        assert info.status_code == 200 and info.json()["width"] == fs.level(0).width
        iiif = client.get(f"/iiif/3/{fs.series_uid}/0,0,256,256/256,/0/default.jpg")
        assert iiif.status_code == 200 and iiif.content[:2] == b"\xff\xd8"


def test_stored_files_land_in_the_stow_directory(
    server: str, dw: DICOMwebClient, upload: dict[str, FixtureSet], slides: Path
) -> None:
    fs = upload["j2k_lossless"]
    parts = [("application/dicom", p.read_bytes()) for p in fs.paths]
    response = post(server, body(parts), f"/dicomweb/studies/{fs.study_uid}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    refs = response.json()["00081199"]["Value"]
    urls = [r["00081190"]["Value"][0] for r in refs]
    assert all(u.startswith(f"{server}/dicomweb/studies/{fs.study_uid}/series/") for u in urls)
    again = post(server, body(parts))  # storing the same instances again is harmless
    assert again.status_code == 200
    assert len(dw.search_for_instances(fs.study_uid)) == len(fs.paths)
    stored = sorted((slides / "stow" / fs.study_uid / fs.series_uid).glob("*.dcm"))
    assert sorted(p.read_bytes() for p in stored) == sorted(p.read_bytes() for p in fs.paths)


def test_a_bad_part_fails_alone(server: str, dw: DICOMwebClient, upload: dict) -> None:
    fs = upload["sparse"]
    not_wsi = pydicom.dcmread(fs.paths[0])
    not_wsi.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    not_wsi.SOPInstanceUID = "1.2.3.4.5.6"
    buf = io.BytesIO()
    not_wsi.save_as(buf, enforce_file_format=True)
    good = [("application/dicom", p.read_bytes()) for p in fs.paths]
    parts = [
        ("application/dicom", b"this is not DICOM"),
        *good[:1],
        ("text/plain", b"hello"),
        ("application/dicom", buf.getvalue()),
        *good[1:],
    ]
    response = post(server, body(parts))
    assert response.status_code == 202
    assert sorted(failures(response)) == sorted([0xC000, 0xC000, 0x0122])
    assert len(response.json()["00081199"]["Value"]) == len(fs.paths)
    assert len(dw.search_for_instances(fs.study_uid)) == len(fs.paths)


def test_study_mismatch_is_409(server: str, upload: dict) -> None:
    fs = upload["sparse"]
    response = post(
        server, body([("application/dicom", fs.paths[0].read_bytes())]), "/dicomweb/studies/1.2.3"
    )
    assert response.status_code == 409 and failures(response) == [0xA900]


def test_malformed_requests(server: str) -> None:
    assert post(server, b"garbage without boundaries").status_code == 400
    assert post(server, b"--x\r\n", **{"Content-Type": "multipart/related"}).status_code == 400
    assert post(server, body([]), **{"Content-Type": "application/dicom"}).status_code == 415
    wrong_type = 'multipart/related; type="application/dicom+json"; boundary=stowboundary'
    assert post(server, body([]), **{"Content-Type": wrong_type}).status_code == 415


def test_truncated_upload_keeps_complete_parts(
    server: str, dw: DICOMwebClient, tmp_path: Path
) -> None:
    (fs,) = fixtures.generate_all(tmp_path, ["jpeg_bot"]).values()
    first, second = fs.paths[0].read_bytes(), fs.paths[1].read_bytes()
    data = body([("application/dicom", first), ("application/dicom", second)], close=False)
    cut = data[: len(data) - len(second) // 2]
    response = post(server, cut)
    assert response.status_code == 202 and failures(response) == [0xC000]
    assert len(dw.search_for_instances(fs.study_uid)) == 1


def test_client_disconnect_mid_upload_leaves_no_partial_file(
    server: str, dw: DICOMwebClient, slides: Path
) -> None:
    before = dw.search_for_instances()
    host, port = server.removeprefix("http://").split(":")
    payload = body([("application/dicom", MAGIC + b"x" * 1000)], close=False)
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST /dicomweb/studies HTTP/1.1\r\nHost: {host}\r\nContent-Type: {CONTENT_TYPE}"
            f"\r\nContent-Length: {len(payload) + 100000}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload)
    for _ in range(50):  # the server notices the disconnect asynchronously
        if not any((slides / "stow" / ".incoming").glob("*")):
            break
        time.sleep(0.05)
    assert not any((slides / "stow" / ".incoming").glob("*"))
    assert dw.search_for_instances() == before


def fresh_instance(path: Path, sop: str | None = None) -> tuple[bytes, str]:
    """``path``'s instance in a new study and series (and as ``sop``), and its study UID."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    with warnings.catch_warnings():  # an over-long UID on purpose
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = sop or generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), str(ds.StudyInstanceUID)


def incoming(stow: Path) -> list[Path]:
    """What a STOW directory still holds half-received (nothing, once a request ended)."""
    return list((stow / ".incoming").iterdir())


def test_an_over_long_uid_fails_alone(
    server: str, dw: DICOMwebClient, upload: dict, slides: Path
) -> None:
    path = upload["sparse"].paths[0]
    long_uid, _ = fresh_instance(path, sop="1." + "2" * 300)
    good, study = fresh_instance(path)
    response = post(server, body([("application/dicom", long_uid), ("application/dicom", good)]))
    assert response.status_code == 202 and failures(response) == [0xC000]
    assert len(dw.search_for_instances(study)) == 1
    assert incoming(slides / "stow") == []


def test_a_complete_part_before_a_malformed_one_is_stored(
    server: str, dw: DICOMwebClient, upload: dict
) -> None:
    good, study = fresh_instance(upload["sparse"].paths[0])
    malformed = f"--{BOUNDARY}\r\nnot a header line\r\n\r\nxxxx\r\n--{BOUNDARY}--\r\n".encode()
    response = post(server, body([("application/dicom", good)], close=False) + malformed)
    assert response.status_code == 202 and failures(response) == [0xC000]
    assert len(dw.search_for_instances(study)) == 1


# The first part is complete (its delimiter arrived); what follows it is cut off.
@pytest.mark.parametrize("tail", ["--stowboundary", "--stowboundary\r\nContent-Type: appl"])
def test_a_truncated_upload_is_never_all_stored(
    server: str, dw: DICOMwebClient, upload: dict, tail: str
) -> None:
    good, study = fresh_instance(upload["sparse"].paths[0])
    data = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + good + b"\r\n"
    response = post(server, data + tail.encode())
    assert response.status_code == 202 and failures(response) == [0xC000]
    reason = response.json()["00081198"]["Value"][0]["00091001"]["Value"][0]
    assert "truncated" in reason
    assert len(dw.search_for_instances(study)) == 1


def test_uid_validation() -> None:
    assert stow.valid_uid("1.2.3") and stow.valid_uid("1." + "2" * 62)
    for bad in ("1." + "2" * 63, "1.2.3\n", "1..2", "1.2.", "1.2.a", "\u00b2"):
        assert not stow.valid_uid(bad), bad


def test_an_unwritable_destination_is_a_processing_failure(upload: dict, tmp_path: Path) -> None:
    path = upload["sparse"].paths[0]
    study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
    stow_dir = tmp_path / "stow"
    stow_dir.mkdir()
    (stow_dir / study).write_bytes(b"a file where the study directory belongs")
    tmp = stow.incoming_path(stow_dir)
    tmp.write_bytes(path.read_bytes())
    catalog = Catalog(tmp_path / "catalog.sqlite")
    outcome = stow.store_part(tmp, stow_dir, str(tmp_path), catalog, None)
    assert outcome.failure == stow.PROCESSING_FAILURE and not tmp.exists()
