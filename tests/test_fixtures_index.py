"""Every synthetic case the standard allows: index, then check bytes and pixels.

Truth comes from three independent places: the generator's own record of where it wrote each
frame, wsidicom's ``read_encoded_tile`` (where wsidicom reads the case), and the exact pixels
the generator tiled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slidefiles import open_fixture
from wsidicom import WsiDicom

import fixtures
from fixtures import FixtureSet
from tileserver import codec
from tileserver.dicom import assemble, index_instance
from tileserver.errors import TileAbsentError
from tileserver.formats import transfer_syntax
from tileserver.readers.dicom import DicomReader
from tileserver.slide import Slide

CASES = sorted(fixtures.CASES)


def tiles(fs: FixtureSet, level: int):
    """(path index, plane index, col, row, expected frame bytes) for every written frame."""
    for inst in fs.level(level).instances:
        for number, (path, plane, col, row) in enumerate(inst.frame_tiles):
            yield path, plane, col, row, inst.read_frame(number)


@pytest.fixture(scope="module")
def sets(fixture_dir: dict[str, FixtureSet]) -> dict[str, FixtureSet]:
    return fixture_dir


@pytest.mark.parametrize("case", CASES)
def test_levels_match_the_generator(sets: dict[str, FixtureSet], case: str) -> None:
    fs = sets[case]
    slide = open_fixture(fs)
    assert slide.id == fs.series_uid
    if case == "no_image_type":
        # Without Image Type a same-aspect power-of-two thumbnail is indistinguishable from a
        # level by size; serving it as one more level is harmless.
        assert len(slide.levels) in (len(fs.levels), len(fs.levels) + 1)
    else:
        assert len(slide.levels) == len(fs.levels)
        assert sorted(slide.associated) == sorted(a.kind.lower() for a in fs.associated)
    for level, expected in zip(slide.levels, fs.levels, strict=False):
        assert (level.size.width, level.size.height) == (expected.width, expected.height)
        assert (level.tile_size.width, level.tile_size.height) == (
            expected.tile_width,
            expected.tile_height,
        )


@pytest.mark.parametrize("case", CASES)
def test_every_frame_equals_the_bytes_written(sets: dict[str, FixtureSet], case: str) -> None:
    fs = sets[case]
    slide = open_fixture(fs)
    for level in slide.levels[: len(fs.levels)]:
        expected_level = fs.level(level.index)
        path_ids = expected_level.optical_paths
        for path, plane, col, row, expected in tiles(fs, level.index):
            ours_path = slide.optical_paths.index(path_ids[path]) if path_ids else 0
            data = slide.read_tile_bytes(level.index, col, row, plane, ours_path).data
            assert data == expected, f"level {level.index} path {path} plane {plane} ({col},{row})"


@pytest.mark.parametrize("case", CASES)
def test_page_cache_reads_equal_the_bytes_written(sets: dict[str, FixtureSet], case: str) -> None:
    """The event-loop read (``read_tile_if_cached``, the tile fast path's) returns what the
    generator wrote, or declines (None): before a file is open, and for multi-fragment
    frames, which are joined in a thread. Absent tiles decline too; past the grid raises."""
    fs = sets[case]
    slide = open_fixture(fs)
    reader = slide.reader
    assert isinstance(reader, DicomReader)
    first = next(tiles(fs, 0))
    assert reader.read_tile_if_cached(0, first[2], first[3], first[1], 0) is None  # not open
    served = 0
    for level in slide.levels[: len(fs.levels)]:
        expected_level = fs.level(level.index)
        path_ids = expected_level.optical_paths
        for path, plane, col, row, expected in tiles(fs, level.index):
            ours_path = slide.optical_paths.index(path_ids[path]) if path_ids else 0
            slide.read_tile_bytes(level.index, col, row, plane, ours_path)  # opens, caches
            tile = reader.read_tile_if_cached(level.index, col, row, plane, ours_path)
            if expected_level.fragments_per_frame > 1:
                assert tile is None
                continue
            assert tile is not None and tile.data == expected, f"level {level.index} ({col},{row})"
            served += 1
        for path, plane, col, row in expected_level.absent_tiles:
            assert reader.read_tile_if_cached(level.index, col, row, plane, path) is None
        with pytest.raises(IndexError):
            reader.read_tile_if_cached(level.index, level.grid.width, 0)
    assert served > 0 or fs.level(0).fragments_per_frame > 1


@pytest.mark.parametrize("case", CASES)
def test_absent_tiles_are_absent_not_errors(sets: dict[str, FixtureSet], case: str) -> None:
    fs = sets[case]
    slide = open_fixture(fs)
    for level in slide.levels[: len(fs.levels)]:
        for path, plane, col, row in fs.level(level.index).absent_tiles:
            with pytest.raises(TileAbsentError):
                slide.read_tile_bytes(level.index, col, row, plane, path)


@pytest.mark.parametrize("case", CASES)
def test_bytes_equal_wsidicom(sets: dict[str, FixtureSet], case: str) -> None:
    fs = sets[case]
    if not fs.wsidicom_readable:
        pytest.skip(f"wsidicom cannot read this case: {fs.notes}")
    slide = open_fixture(fs)
    with WsiDicom.open(fs.directory) as wsi:
        for level in slide.levels[: len(fs.levels)]:
            expected_level = fs.level(level.index)
            for path, plane, col, row, _ in tiles(fs, level.index):
                path_id = expected_level.optical_paths[path]
                z = expected_level.focal_planes_um[plane]
                theirs = wsi.read_encoded_tile(
                    level.index, (col, row), z=z, path=path_id, crop_to_image_boundary=False
                )
                ours = slide.read_tile_bytes(
                    level.index, col, row, plane, slide.optical_paths.index(path_id)
                )
                assert ours.data == theirs


@pytest.mark.parametrize("case", CASES)
def test_decoded_pixels_equal_the_source_image(sets: dict[str, FixtureSet], case: str) -> None:
    fs = sets[case]
    slide = open_fixture(fs)
    for level in slide.levels[: len(fs.levels)]:
        expected_level = fs.level(level.index)
        lossy = transfer_syntax(expected_level.transfer_syntax).lossy
        for path, plane, col, row, _ in tiles(fs, level.index):
            ours_path = slide.optical_paths.index(expected_level.optical_paths[path])
            source = fs.level_pixels(level.index, path, plane)
            valid = level.tile_region(col, row)
            decoded = codec.decode(slide.read_tile_bytes(level.index, col, row, plane, ours_path))
            ours = decoded[: valid.height, : valid.width].astype(int)
            theirs = source[valid.y : valid.bottom, valid.x : valid.right].astype(int)
            assert ours.shape == theirs.shape
            diff = np.abs(ours - theirs)
            assert diff.mean() < 4.0 if lossy else diff.max() == 0


def test_multi_fragment_frames_are_recorded(sets: dict[str, FixtureSet]) -> None:
    for case, kind, warned in (
        ("jpeg_multifragment_bot", "bot", False),
        ("jpeg_multifragment_nobot", "empty", True),
    ):
        inst = index_instance(sets[case].level(0).instances[0].path)
        assert inst.frames.kind == kind
        assert set(inst.frames.rows["fragments"]) == {sets[case].level(0).fragments_per_frame}
        assert any("end-of-image" in w for w in inst.warnings) == warned


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("jpeg_bot", "bot"),
        ("jpeg_empty_bot", "empty"),
        ("jpeg_eot", "eot"),
        ("native_explicit", "native"),
    ],
)
def test_offset_table_kind(sets: dict[str, FixtureSet], case: str, kind: str) -> None:
    assert index_instance(sets[case].level(0).instances[0].path).frames.kind == kind


@pytest.mark.parametrize(
    ("case", "message"),
    [("wrong_bot", "Basic Offset Table disagrees"), ("wrong_eot_lengths", "Extended Offset Table")],
)
def test_wrong_tables_are_reported(sets: dict[str, FixtureSet], case: str, message: str) -> None:
    warnings = [w for p in sets[case].level(0).paths for w in index_instance(p).warnings]
    assert any(message in w for w in warnings)


def test_transfer_syntax_and_photometric_are_stored(sets: dict[str, FixtureSet]) -> None:
    for case in CASES:
        for inst in sets[case].instances:
            header = index_instance(inst.path).header
            assert header.transfer_syntax == inst.transfer_syntax
            assert header.pixel_format.photometric == inst.photometric


def test_duplicate_instance_is_kept_once_and_reported(sets: dict[str, FixtureSet]) -> None:
    slide = open_fixture(sets["duplicate_uid"])
    duplicates = [w for w in slide.warnings if "duplicate SOP Instance UID" in w]
    assert len(duplicates) == len(sets["duplicate_uid"].duplicate_paths)


def test_missing_image_type_falls_back_to_size(sets: dict[str, FixtureSet]) -> None:
    slide = open_fixture(sets["no_image_type"])
    assert len(slide.levels) >= len(sets["no_image_type"].levels)
    assert any("no Image Type" in w for w in slide.warnings)


def test_focal_planes_and_optical_paths(sets: dict[str, FixtureSet]) -> None:
    fs = sets["multi_focal_optical"]
    slide = open_fixture(fs)
    assert slide.focal_planes == pytest.approx(fs.level(0).focal_planes_um)
    assert slide.optical_paths == fs.level(0).optical_paths


def test_icc_profile_from_optical_path_sequence(sets: dict[str, FixtureSet]) -> None:
    slide = open_fixture(sets["jpeg_bot"])
    assert slide.icc_profile is not None and slide.icc_profile[36:40] == b"acsp"


def test_pixel_data_over_4_gib_in_a_sparse_file(tmp_path: Path) -> None:
    big = fixtures.write_big_sparse(tmp_path)
    for fs in big.values():
        inst_info = fs.level(0).instances[0]
        inst = index_instance(inst_info.path)
        rows = inst.frames.rows
        expected = [
            (f.fragments[0].offset, sum(s.length for s in f.fragments)) for f in inst_info.frames
        ]
        assert [(int(r["offset"]), int(r["length"])) for r in rows] == expected
        assert int(rows["offset"][2]) > 2**32
        slide = Slide(fs.series_uid, fs.name, DicomReader(assemble([inst])))
        last = inst_info.frame_tiles[2]
        assert slide.read_tile_bytes(0, last[2], last[3]).data == inst_info.read_frame(2)


def test_levels_with_fewer_planes_and_paths_map_by_value(
    sets: dict[str, FixtureSet], tmp_path: Path
) -> None:
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    from tileserver.errors import NotFoundError

    source = sets["multi_focal_optical"]
    level1 = pydicom.dcmread(source.level(1).paths[0])
    frames = list(generate_frames(level1.PixelData, number_of_frames=int(level1.NumberOfFrames)))
    per_plane = source.level(1).tiles_across * source.level(1).tiles_down
    level1.PixelData = encapsulate(frames[:per_plane])  # path 0, lowest plane only
    level1.NumberOfFrames = per_plane
    level1.TotalPixelMatrixFocalPlanes = 1
    level1.OpticalPathSequence = level1.OpticalPathSequence[:1]
    level1.save_as(tmp_path / "level1.dcm")
    instances = [index_instance(source.level(0).paths[0]), index_instance(tmp_path / "level1.dcm")]
    slide = Slide(source.series_uid, "partial", DicomReader(assemble(instances)))
    assert len(slide.focal_planes) == 3 and len(slide.optical_paths) == 2
    lowest = slide.read_tile_bytes(1, 0, 0, 0, 0).data
    assert lowest == frames[0]
    assert slide.read_tile_bytes(1, 0, 0, 2, 0).data == lowest  # nearest plane in z
    with pytest.raises(NotFoundError):
        slide.read_tile_bytes(1, 0, 0, 0, 1)
