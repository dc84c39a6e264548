"""STOW-RS must not change what is served behind its back, nor take unbounded bodies.

A real server serves a slide from its slide directory and stores uploads in ``stow/`` under
it, with small limits. After every request the whole slide directory, the server's private
TMPDIR and the STOW temporary directory are listed: nothing may be written outside the
STOW directory, and nothing left behind half-received.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from serverproc import ServerProcess

import fixtures
from fixtures import FixtureSet

BOUNDARY = "integrity"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
MAX_PART, MAX_UPLOAD = 100_000, 200_000
DUPLICATE, NOT_AUTHORIZED, CANNOT_UNDERSTAND = 0x0111, 0x0124, 0xC000
MAGIC = b"\0" * 128 + b"DICM"


class Site:
    """A running server over ``slides`` (one served slide, ``stow/`` for uploads)."""

    def __init__(self, work: Path, served: FixtureSet, *flags: str) -> None:
        self.slides, self.tmp = work / "slides", work / "tmp"
        self.tmp.mkdir()
        shutil.copytree(served.directory, self.slides / "served")
        self.served = served
        flags += ("--max-part-bytes", str(MAX_PART), "--max-upload-bytes", str(MAX_UPLOAD))
        env = {"TILESERVER_RESCAN_INTERVAL": "0", "TMPDIR": str(self.tmp)}
        self.process = ServerProcess([self.slides], work, extra_args=flags, env=env).start()
        self.url = self.process.url

    @property
    def stow(self) -> Path:
        return self.slides / "stow"

    def files(self) -> dict[str, bytes]:
        """Every file under the slide directory (served and stored), by relative path."""
        found = (p for p in sorted(self.slides.rglob("*")) if p.is_file())
        return {str(p.relative_to(self.slides)): p.read_bytes() for p in found}

    def served_file(self, name: str) -> Path:
        return self.slides / "served" / name

    def assert_nothing_left(self) -> None:
        assert list((self.stow / ".incoming").iterdir()) == []
        assert list(self.tmp.iterdir()) == []


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureSet]:
    made: dict[str, FixtureSet] = fixtures.generate_all(
        tmp_path_factory.mktemp("integrity-fixtures"), ["jpeg_bot", "sparse"]
    )
    return made


@pytest.fixture(scope="module")
def site(sets: dict[str, FixtureSet], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("integrity"), sets["jpeg_bot"], "--body-timeout", "5")
    yield running
    running.process.stop()


@pytest.fixture(scope="module")
def overwriting(
    sets: dict[str, FixtureSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("overwrite"), sets["jpeg_bot"], "--stow-overwrite")
    yield running
    running.process.stop()


def body(*parts: bytes, close: bool = True) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    out = b"".join(head + part + b"\r\n" for part in parts)
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def post(site: Site, data: bytes | Iterator[bytes], **headers: str) -> httpx.Response:
    headers = {"Content-Type": CONTENT_TYPE, **headers}
    return httpx.post(f"{site.url}/dicomweb/studies", content=data, headers=headers, timeout=30)


def failures(response: httpx.Response) -> list[tuple[int, str]]:
    items = response.json().get("00081198", {}).get("Value", [])
    return [(i["00081197"]["Value"][0], i["00091001"]["Value"][0]) for i in items]


def variant(path: Path, **changes: str) -> bytes:
    """``path``'s instance with some attributes changed (a new study and series by default)."""
    ds = pydicom.dcmread(path)
    values = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(), **changes}
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def in_served(site: Site) -> dict[str, str]:
    """The served slide's Study and Series UIDs, as ``variant`` takes them."""
    return {"StudyInstanceUID": site.served.study_uid, "SeriesInstanceUID": site.served.series_uid}


def uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


# -- integrity ---------------------------------------------------------------------------------


def test_other_content_under_a_stored_sop_instance_is_refused(site: Site, sets: dict) -> None:
    first = variant(sets["sparse"].paths[0], SOPInstanceUID=generate_uid())
    study, series, sop = uids(first)
    assert post(site, body(first)).status_code == 200
    before = site.files()
    other = variant(sets["sparse"].paths[0], StudyInstanceUID=study, SeriesInstanceUID=series,
                    SOPInstanceUID=sop, SeriesDescription="tampered")  # fmt: skip
    response = post(site, body(other))
    assert response.status_code == 409
    ((code, reason),) = failures(response)
    assert code == DUPLICATE and "--stow-overwrite" in reason
    assert site.files() == before  # the stored file keeps its bytes
    assert before[f"stow/{study}/{series}/{sop}.dcm"] == first
    assert post(site, body(first)).status_code == 200  # the same bytes again: harmless
    assert site.files() == before
    site.assert_nothing_left()


def test_a_served_instance_with_other_content_is_refused(site: Site) -> None:
    path = site.served_file("level1.dcm")
    before = site.files()
    tampered = variant(path, **in_served(site), PatientName="Tampered^Again")
    response = post(site, body(tampered))
    assert response.status_code == 409
    ((code, reason),) = failures(response)
    assert code == DUPLICATE and "outside the STOW directory" in reason
    assert site.files() == before
    site.assert_nothing_left()


def test_a_served_instance_sent_as_is_is_not_copied(site: Site) -> None:
    before = site.files()
    response = post(site, body(site.served_file("level2.dcm").read_bytes()))
    assert response.status_code == 200, response.json()
    assert site.files() == before


def test_joining_a_served_series_is_refused(site: Site, sets: dict) -> None:
    slide = f"{site.url}/slides/{site.served.series_uid}"
    detail = httpx.get(slide).json()
    before = site.files()
    hijack = variant(sets["sparse"].paths[0], **in_served(site), SOPInstanceUID=generate_uid())
    good = variant(sets["sparse"].paths[1], SOPInstanceUID=generate_uid())
    response = post(site, body(hijack, good))
    assert response.status_code == 202  # the good part is stored, the hijack refused
    ((code, reason),) = failures(response)
    assert code == NOT_AUTHORIZED and site.served.series_uid in reason
    assert httpx.get(slide).json() == detail  # neither renamed nor merged
    added = set(site.files()) - set(before)
    study, series, sop = uids(good)
    assert added == {f"stow/{study}/{series}/{sop}.dcm"}
    site.assert_nothing_left()


# -- limits ----------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_unread(site: Site) -> None:
    before = site.files()
    response = post(site, b"x" * (MAX_UPLOAD + 1))
    assert response.status_code == 413 and "--max-upload-bytes" in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert site.files() == before
    site.assert_nothing_left()


def chunks(data: bytes, size: int = 16_384) -> Iterator[bytes]:
    """A body without a declared length (sent chunked)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_streamed_body_over_the_limit_is_refused(site: Site, sets: dict) -> None:
    good = variant(sets["sparse"].paths[1], SOPInstanceUID=generate_uid())
    before = site.files()
    filler = MAGIC + b"x" * (MAX_PART - 1000)
    response = post(site, chunks(body(good, filler, filler)))
    assert response.status_code == 413
    assert "--max-upload-bytes" in response.json()["error"]
    assert response.json()["stored"] == [uids(good)[2]]  # complete before the limit
    study, series, sop = uids(good)
    assert set(site.files()) - set(before) == {f"stow/{study}/{series}/{sop}.dcm"}
    site.assert_nothing_left()


def test_a_part_over_the_limit_is_refused(site: Site) -> None:
    before = site.files()
    response = post(site, chunks(body(MAGIC + b"x" * MAX_PART)))
    assert response.status_code == 413 and "--max-part-bytes" in response.json()["error"]
    assert site.files() == before
    site.assert_nothing_left()


def test_a_large_part_that_is_not_dicom_fails_alone(site: Site) -> None:
    before = site.files()
    response = post(site, body(b"y" * (MAX_PART - 1000)))
    assert response.status_code == 409
    ((code, reason),) = failures(response)
    assert code == CANNOT_UNDERSTAND and "DICM" in reason
    assert site.files() == before
    site.assert_nothing_left()


# -- --stow-overwrite --------------------------------------------------------------------------


def test_overwrite_replaces_a_stored_instance_only(overwriting: Site, sets: dict) -> None:
    first = variant(sets["sparse"].paths[0], SOPInstanceUID=generate_uid())
    study, series, sop = uids(first)
    assert post(overwriting, body(first)).status_code == 200
    other = variant(sets["sparse"].paths[0], StudyInstanceUID=study, SeriesInstanceUID=series,
                    SOPInstanceUID=sop, SeriesDescription="second")  # fmt: skip
    assert post(overwriting, body(other)).status_code == 200
    assert overwriting.files()[f"stow/{study}/{series}/{sop}.dcm"] == other
    found = httpx.get(f"{overwriting.url}/dicomweb/studies/{study}/series/{series}/metadata")
    assert [item["0008103E"]["Value"] for item in found.json()] == [["second"]]
    served = overwriting.served_file("level1.dcm")
    before = overwriting.files()
    tampered = variant(served, **in_served(overwriting), PatientName="X^Y")
    response = post(overwriting, body(tampered))
    assert response.status_code == 409 and failures(response)[0][0] == DUPLICATE
    assert overwriting.files() == before
    overwriting.assert_nothing_left()
