"""`tileserver convert`: real inputs, real readers of the output (wsidicom, OpenSlide,
pydicom, dciodvfy, tileserver itself, a STOW through a real server), no mocks."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
import tifffile
import wsidicom
from pydicom.encaps import encapsulate_extended, generate_frames
from pydicom.uid import generate_uid
from serverproc import ServerProcess

from fixtures.vendor import VendorSlide, write_vendor
from tileserver import codec
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.convert import convert
from tileserver.convert.writer import write_instance
from tileserver.readers.base import StoredFile
from tileserver.readers.source import LocalFile
from tileserver.readers.tiff_backend import TiffBackend

SVS = "aperio-cmu1-small-region.svs"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
LOSSLESS = ["svs_j2k", "tiled_deflate", "tiled_lzw", "subifd_j2k"]
LOSSY = ["svs_jpeg", "subifd_jpeg"]


def run_convert(*args: str | Path, **options: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tileserver.cli", "convert", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **options)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def svs(real_slides: Path) -> Path:
    path = real_slides / SVS
    if not path.is_file():
        pytest.skip(f"{SVS} not present in ../shared/real-slides")
    return path


@pytest.fixture(scope="module")
def svs_out(svs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SVS converted by the command line, as a user would."""
    out = tmp_path_factory.mktemp("svs") / "converted"
    done = run_convert(svs, out, "--no-progress")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VendorSlide]:
    return write_vendor(tmp_path_factory.mktemp("vendor"))


@pytest.fixture(scope="module")
def converted(
    vendor: dict[str, VendorSlide], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each vendor case converted: the lossless ones with ``lossless``."""
    root = tmp_path_factory.mktemp("converted")
    return {
        name: convert(case.path, root / name, lossless=name in LOSSLESS).output_dir
        for name, case in vendor.items()
    }


def datasets(out: Path) -> dict[str, pydicom.Dataset]:
    return {p.name: pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))}


def frames_of(ds: pydicom.Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))


def read_level(out: Path, level: int) -> np.ndarray:
    with wsidicom.WsiDicom.open(out) as wsi:
        size = wsi.levels[level].size
        image = wsi.read_region((0, 0), level, (size.width, size.height))
    return np.asarray(image)


# --- the real Aperio SVS ----------------------------------------------------------------


def test_svs_reads_in_wsidicom_as_openslide_reads_the_svs(svs: Path, svs_out: Path) -> None:
    source = openslide.OpenSlide(str(svs))
    with wsidicom.WsiDicom.open(svs_out) as wsi:
        sizes = [(lv.size.width, lv.size.height) for lv in wsi.levels]
    assert sizes == list(source.level_dimensions)
    for level, (width, height) in enumerate(sizes):
        expected = np.asarray(source.read_region((0, 0), level, (width, height)).convert("RGB"))
        got = read_level(svs_out, level)[..., :3]
        assert np.abs(got.astype(int) - expected.astype(int)).mean() <= 2, f"level {level}"


def test_svs_output_opens_in_openslide(svs: Path, svs_out: Path) -> None:
    source = openslide.OpenSlide(str(svs))
    out = openslide.OpenSlide(str(svs_out / "level-0.dcm"))
    assert out.properties["openslide.vendor"] == "dicom"
    assert out.level_count == source.level_count
    assert out.level_dimensions == source.level_dimensions
    assert set(out.associated_images) == {"label", "macro", "thumbnail"}
    assert float(out.properties["openslide.mpp-x"]) == pytest.approx(0.499)
    width, height = out.level_dimensions[0]
    got = np.asarray(out.read_region((0, 0), 0, (width, height)).convert("RGB")).astype(int)
    expected = np.asarray(source.read_region((0, 0), 0, (width, height)).convert("RGB"))
    assert np.abs(got - expected.astype(int)).mean() <= 2


def test_svs_level_0_frames_are_the_stored_tiles(svs: Path, svs_out: Path) -> None:
    """No re-encode: every frame is byte for byte the TIFF backend's stored tile."""
    backend = TiffBackend()
    source = LocalFile.at(str(svs))
    found = backend.index(source)
    opened = backend.open([StoredFile(source.identity, "", "tiff", None, found.record)], print)
    level = opened.reader.levels[0]
    grid = level.size.ceil_div(level.tile_size)
    stored = [
        opened.reader.read_tile(0, col, row).data
        for row in range(grid.height)
        for col in range(grid.width)
    ]
    ds = pydicom.dcmread(svs_out / "level-0.dcm")
    assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert ds.PhotometricInterpretation == "RGB"  # Aperio's RGB-coded tiles, as stored
    assert frames_of(ds) == [tile + b"\x00" * (len(tile) % 2) for tile in stored]


def test_svs_headers(svs_out: Path) -> None:
    found = datasets(svs_out)
    assert set(found) == {"level-0.dcm", "label.dcm", "overview.dcm", "thumbnail.dcm"}
    assert len({ds.StudyInstanceUID for ds in found.values()}) == 1
    assert len({ds.SeriesInstanceUID for ds in found.values()}) == 1
    types = {name: list(ds.ImageType) for name, ds in found.items()}
    assert types["level-0.dcm"] == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert types["label.dcm"][2] == "LABEL" and types["overview.dcm"][2] == "OVERVIEW"
    assert types["thumbnail.dcm"] == ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"]
    level = found["level-0.dcm"]
    assert level.SOPClassUID == VL_WSI and level.DimensionOrganizationType == "TILED_FULL"
    assert (level.TotalPixelMatrixColumns, level.TotalPixelMatrixRows) == (2220, 2967)
    assert (level.Columns, level.Rows) == (240, 240) and level.NumberOfFrames == 130
    measures = level.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.000499, 0.000499])
    assert float(level.ImagedVolumeWidth) == pytest.approx(2220 * 0.000499)
    assert level.OpticalPathSequence[0].OpticalPathIdentifier == "1"
    assert level.TotalPixelMatrixOriginSequence[0].XOffsetInSlideCoordinateSystem == 0


def test_extended_offset_table_locates_every_frame(svs_out: Path) -> None:
    raw = (svs_out / "level-0.dcm").read_bytes()
    ds = pydicom.dcmread(svs_out / "level-0.dcm")
    offsets = np.frombuffer(ds.ExtendedOffsetTable, "<u8")
    lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8")
    assert len(offsets) == len(lengths) == ds.NumberOfFrames
    first_item = raw.index(b"\xe0\x7f\x10\x00OB") + 12 + 8  # after the empty offset table
    for frame, offset, length in zip(frames_of(ds), offsets, lengths, strict=True):
        at = first_item + int(offset) + 8
        assert raw[at : at + int(length)] == frame


def test_dciodvfy_finds_no_error(svs_out: Path) -> None:
    """David Clunie's IOD checker: the files are valid VL Whole Slide Microscopy images."""
    tool = Path(sys.executable).parent / "dciodvfy"
    for path in sorted(svs_out.glob("*.dcm")):
        report = subprocess.run([tool, path], capture_output=True, text=True, timeout=60)
        text = report.stdout + report.stderr
        assert "VLWholeSlideMicroscopyImage" in text
        assert [line for line in text.splitlines() if line.startswith("Error")] == [], path.name


# --- synthetic vendor files ------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_conversion_is_exact(
    name: str, vendor: dict[str, VendorSlide], converted: dict[str, Path]
) -> None:
    case = vendor[name]
    for level, expected in enumerate(case.levels):
        got = read_level(converted[name], level)
        if got.ndim == 3:  # wsidicom gives RGB(A), or L for a grey image
            got = got[..., 0] if expected.ndim == 2 else got[..., :3]
        assert np.array_equal(got, expected), f"{name} level {level}"


@pytest.mark.parametrize("name", LOSSY)
def test_stored_jpeg_is_kept_and_reads_as_tifffile_decodes_it(
    name: str, vendor: dict[str, VendorSlide], converted: dict[str, Path]
) -> None:
    with tifffile.TiffFile(vendor[name].path) as tiff:
        if tiff.pages[0].subifds:
            expected = [level.asarray() for level in tiff.series[0].levels]
        else:
            expected = [page.asarray() for page in tiff.pages if page.is_tiled]
    for level, reference in enumerate(expected):
        got = read_level(converted[name], level)[..., :3]
        assert np.abs(got.astype(int) - reference.astype(int)).mean() <= 1, f"level {level}"


@pytest.mark.parametrize("name", ["svs_jpeg", "svs_j2k", "tiled_deflate", "subifd_j2k"])
def test_openslide_reads_the_vendor_conversions(
    name: str, vendor: dict[str, VendorSlide], converted: dict[str, Path]
) -> None:
    """RGB-coded JPEG kept as stored, and JPEG 2000 lossless (YBR_RCT) frames."""
    case = vendor[name]
    out = openslide.OpenSlide(str(converted[name] / "level-0.dcm"))
    assert out.level_dimensions == tuple((lv.shape[1], lv.shape[0]) for lv in case.levels)
    for level, expected in enumerate(case.levels):
        size = (expected.shape[1], expected.shape[0])
        got = np.asarray(out.read_region((0, 0), level, size).convert("RGB")).astype(int)
        diff = np.abs(got - expected.astype(int))
        assert (diff.max() == 0) if case.lossless else (diff.mean() <= 2), f"level {level}"


def test_vendor_associated_images_and_spacing(
    vendor: dict[str, VendorSlide], converted: dict[str, Path]
) -> None:
    found = datasets(converted["svs_jpeg"])
    assert set(found) >= {"label.dcm", "overview.dcm", "thumbnail.dcm"}
    with wsidicom.WsiDicom.open(converted["svs_jpeg"]) as wsi:
        label = np.asarray(wsi.read_label())[..., :3]
    expected = vendor["svs_jpeg"].associated["label"]  # LZW: lossless, then JPEG q90
    assert label.shape == expected.shape
    assert np.abs(label.astype(int) - expected.astype(int)).mean() <= 3
    spacing = found["level-1.dcm"].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(spacing.PixelSpacing[0]) == pytest.approx(0.2527 * 2 / 1000)


def test_sparse_input_gets_every_frame(tmp_path: Path) -> None:
    """TILED_FULL needs a frame per tile: absent ones are the glass colour."""
    import fixtures

    sparse = fixtures.generate_all(tmp_path / "in", ["sparse"])["sparse"]
    result = convert(sparse.directory, tmp_path / "out")
    level = result.files[0]
    assert level.counts.filled > 0 and level.frames == level.counts.kept + level.counts.filled
    ds = pydicom.dcmread(level.path)
    assert len(frames_of(ds)) == ds.NumberOfFrames == 24


def test_dicom_input_keeps_its_frames_and_study(tmp_path: Path) -> None:
    """A DICOM file brings its series from its folder; JPEG frames are kept and the new
    series joins the input's study."""
    import fixtures

    source = fixtures.generate_all(tmp_path / "in", ["jpeg_eot"])["jpeg_eot"]
    result = convert(source.paths[0], tmp_path / "out")
    levels = [f for f in result.files if f.flavor == "VOLUME"]
    assert [f.width for f in levels] == [lv.width for lv in source.levels]
    assert all(f.counts.kept == f.frames for f in levels)
    assert result.study_uid == source.study_uid and result.series_uid != source.series_uid
    (base,) = [p for p in source.paths if pydicom.dcmread(p).TotalPixelMatrixColumns == 900]
    expected = frames_of(pydicom.dcmread(base))
    assert frames_of(pydicom.dcmread(tmp_path / "out" / "level-0.dcm")) == expected


def test_openslide_input_reads_as_openslide_reads_it(tmp_path: Path) -> None:
    """A MIRAX slide (OpenSlide's raw RGB, encoded here; edge tiles padded)."""
    from fixtures.openslide_mrxs import openslide_mrxs

    openslide_mrxs(tmp_path / "in")
    main = tmp_path / "in" / "slide.mrxs"
    result = convert(main, tmp_path / "out")
    assert all(f.counts.encoded == f.frames for f in result.files)
    source = openslide.OpenSlide(str(main))
    for level, (width, height) in enumerate(source.level_dimensions):
        expected = np.asarray(source.read_region((0, 0), level, (width, height)).convert("RGB"))
        got = read_level(tmp_path / "out", level)[..., :3]
        assert np.abs(got.astype(int) - expected.astype(int)).mean() <= 2, f"level {level}"


# --- served and stored ------------------------------------------------------------------


def test_output_is_served_by_tileserver(
    converted: dict[str, Path], vendor: dict[str, VendorSlide], tmp_path: Path
) -> None:
    name = "tiled_deflate"
    root = tmp_path / "root"
    shutil.copytree(converted[name], root / name)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [root])
    try:
        library.refresh()
        (slide_id,) = library.ids()
        slide = library.get(slide_id)
        expected = vendor[name].levels
        assert [lv.size.width for lv in slide.levels] == [e.shape[1] for e in expected]
        for level, pixels in zip(slide.levels, expected, strict=True):
            for row in range(level.grid.height):
                for col in range(level.grid.width):
                    tile = codec.decode(slide.read_tile_bytes(level.index, col, row))
                    area = level.tile_region(col, row)
                    want = pixels[area.y : area.y + area.height, area.x : area.x + area.width]
                    assert np.array_equal(tile[: area.height, : area.width], want)
    finally:
        library.close()


def test_svs_output_is_served_as_the_svs(svs: Path, svs_out: Path, tmp_path: Path) -> None:
    """Both scanned into one catalog: the same levels and associated images, and every
    level-0 tile of the output decodes to the SVS's."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(svs, root / svs.name)
    shutil.copytree(svs_out, root / "converted")
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [root])
    try:
        library.refresh()
        slides = {library.get(i).path: library.get(i) for i in library.ids()}
        source, output = slides[svs.name], slides["converted"]
        assert [lv.size for lv in output.levels] == [lv.size for lv in source.levels]
        assert set(output.associated) == set(source.associated)
        assert output.mpp == pytest.approx(source.mpp)
        grid = source.levels[0].grid
        for row in range(grid.height):
            for col in range(grid.width):
                want = codec.decode(source.read_tile_bytes(0, col, row))
                assert np.array_equal(codec.decode(output.read_tile_bytes(0, col, row)), want)
    finally:
        library.close()


def test_output_is_accepted_by_stow(converted: dict[str, Path], tmp_path: Path) -> None:
    from dicomweb_client import DICOMwebClient

    out = converted["svs_jpeg"]
    (tmp_path / "slides").mkdir()
    server = ServerProcess([tmp_path / "slides"], tmp_path).start()
    try:
        client = DICOMwebClient(url=f"{server.url}/dicomweb")
        found = datasets(out)
        result = client.store_instances(list(found.values()))
        client._session.close()
        assert len(result.ReferencedSOPSequence) == len(found)
        assert "FailedSOPSequence" not in result
        series = next(iter(found.values())).SeriesInstanceUID
        import httpx

        detail = httpx.get(f"{server.url}/slides/{series}", timeout=30).json()
        assert [lv["width"] for lv in detail["levels"]] == [1000, 500, 250]
    finally:
        server.stop()


# --- the command ------------------------------------------------------------------------


def test_not_a_slide_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a slide\n")
    out = tmp_path / "out"
    done = run_convert(text, out)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "not a TIFF file" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_truncated_svs_is_one_line_and_leaves_nothing(svs: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.svs"
    data = svs.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    out.mkdir()
    done = run_convert(cut, out)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "truncated" in done.stderr
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.svs", "out"]


def test_failure_midway_leaves_nothing(vendor: dict[str, VendorSlide], tmp_path: Path) -> None:
    """The last tile of level 0 cannot be inflated: the run fails after writing frames,
    and neither the output nor its staging directory is left."""
    broken = tmp_path / "broken.tif"
    shutil.copy(vendor["tiled_deflate"].path, broken)
    with tifffile.TiffFile(broken) as tiff:
        page = tiff.pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    with broken.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * count)
    done = run_convert(broken, tmp_path / "out")
    assert done.returncode == 1 and "deflate" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tif"]


def test_an_output_directory_in_use_is_refused(svs_out: Path, svs: Path) -> None:
    before = sorted(p.name for p in svs_out.iterdir())
    done = run_convert(svs, svs_out)
    assert done.returncode == 1 and "not empty" in done.stderr
    assert sorted(p.name for p in svs_out.iterdir()) == before


def test_progress_is_drawn_on_a_terminal_only(
    vendor: dict[str, VendorSlide], tmp_path: Path
) -> None:
    quiet = run_convert(vendor["svs_jpeg"].path, tmp_path / "quiet")
    assert quiet.returncode == 0 and "tiles" not in quiet.stderr
    leader, follower = pty.openpty()
    # A new pty is 0 columns wide, in which tqdm draws nothing: size it as a terminal.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    command = [sys.executable, "-m", "tileserver.cli", "convert"]
    process = subprocess.Popen(
        [*command, str(vendor["svs_jpeg"].path), str(tmp_path / "shown")],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    try:
        drawn = _read_terminal(leader)
    finally:
        os.close(leader)
    assert process.wait(timeout=300) == 0
    assert "tiles" in drawn


def _read_terminal(fd: int) -> str:
    """What a terminal showed until its program closed it (read while it runs: Linux
    drops what is unread once the other end closes)."""
    chunks = []
    while select.select([fd], [], [], 300)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the program's end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


# --- the writer -------------------------------------------------------------------------


def test_streamed_pixel_data_is_pydicom_encapsulation(tmp_path: Path) -> None:
    """Frames of odd and even lengths, streamed: Pixel Data and both offset tables equal
    what ``pydicom.encaps.encapsulate_extended`` makes of the same frames."""
    frames = [b"\xff\xd8" + bytes([n]) * (n * 7 + 1) + b"\xff\xd9" for n in range(1, 6)]
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = VL_WSI, generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.NumberOfFrames = 8, 8, 3, len(frames)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG_BASELINE
    write_instance(tmp_path / "x.dcm", ds, iter(frames), len(frames))
    read = pydicom.dcmread(tmp_path / "x.dcm")
    data, offsets, lengths = encapsulate_extended(frames)
    assert read.PixelData == data
    assert read.ExtendedOffsetTable == offsets and read.ExtendedOffsetTableLengths == lengths
