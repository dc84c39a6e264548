"""The catalog and scanner: bad input, mixed trees, incremental rescans, the CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import orjson
import pytest

import fixtures
from fixtures import FixtureSet
from tileserver.catalog import Catalog, SlideLibrary, scan
from tileserver.cli import main
from tileserver.dicom import index_instance
from tileserver.errors import (
    CorruptSlideError,
    NotFoundError,
    NotWsiError,
    SlideError,
    TileAbsentError,
)

EXPECTED_SKIP_REASONS = {
    "text_file.dcm": "not a DICOM file",
    "empty_file.dcm": "empty file",
    "truncated_pixel_data.dcm": "truncated",
    "inconsistent_frame_count.dcm": "fragments for",
    "ct_image.dcm": "is not VL Whole Slide Microscopy",
    "basic_text_sr.dcm": "is not VL Whole Slide Microscopy",
    "segmentation.dcm": "is not VL Whole Slide Microscopy",
    "garbage_after_preamble.dcm": "SOP class missing",
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fixtures.write_broken(tmp_path_factory.mktemp("broken"))


@pytest.fixture
def mixed_tree(tmp_path: Path, fixture_dir: dict[str, FixtureSet], broken: dict[str, Path]) -> Path:
    """Good pyramids, every broken file and a duplicate, side by side in one tree."""
    tree = tmp_path / "slides"
    for case in ("jpeg_bot", "sparse", "duplicate_uid"):
        shutil.copytree(fixture_dir[case].directory, tree / case)
    (tree / "broken").mkdir()
    for path in broken.values():
        shutil.copy2(path, tree / "broken" / path.name)
    return tree


def run_index(tree: Path, catalog: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["index", str(tree), "--catalog", str(catalog), "--json"]) == 0
    return orjson.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(EXPECTED_SKIP_REASONS))
def test_bad_file_raises_a_clear_slide_error(broken: dict[str, Path], name: str) -> None:
    path = next(p for p in broken.values() if p.name == name)
    with pytest.raises(SlideError, match=EXPECTED_SKIP_REASONS[name]):
        index_instance(path)


def test_non_wsi_dicom_is_not_wsi_error(broken: dict[str, Path]) -> None:
    with pytest.raises(NotWsiError):
        index_instance(broken["ct_image"])


def test_truncated_file_is_corrupt(broken: dict[str, Path]) -> None:
    with pytest.raises(CorruptSlideError):
        index_instance(broken["truncated_pixel_data"])


def test_offset_table_past_end_of_file_is_walked_and_reported(broken: dict[str, Path]) -> None:
    inst = index_instance(broken["bot_past_end"])
    assert any("Basic Offset Table disagrees" in w for w in inst.warnings)


def test_mixed_tree_skips_bad_files_and_indexes_every_good_slide(
    mixed_tree: Path,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = run_index(mixed_tree, tmp_path / "catalog.sqlite", capsys)
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    for name, fragment in EXPECTED_SKIP_REASONS.items():
        assert name in reasons and fragment in reasons[name]
    ids = {s["id"] for s in summary["slides"]}
    for case in ("jpeg_bot", "sparse", "duplicate_uid"):
        assert fixture_dir[case].series_uid in ids
    duplicate = next(
        s for s in summary["slides"] if s["id"] == fixture_dir["duplicate_uid"].series_uid
    )
    assert any("duplicate SOP Instance UID" in w for w in duplicate["warnings"])
    jpeg = next(s for s in summary["slides"] if s["id"] == fixture_dir["jpeg_bot"].series_uid)
    assert [(lv["width"], lv["height"], lv["frames"]) for lv in jpeg["levels"]] == [
        (lv.width, lv.height, lv.number_of_frames) for lv in fixture_dir["jpeg_bot"].levels
    ]


def test_rescan_skips_unchanged_and_follows_changes(
    mixed_tree: Path, tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    library = SlideLibrary(catalog, [mixed_tree])
    first = library.refresh()
    assert first.indexed and first.unchanged == 0
    second = library.refresh()
    assert second.indexed == [] and second.skipped == [] and second.removed == []
    assert second.unchanged == len(catalog.files())

    slide_id = fixture_dir["jpeg_bot"].series_uid
    before = library.get(slide_id).version
    touched = mixed_tree / "jpeg_bot" / "level0.dcm"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = library.refresh()
    assert [Path(uri).name for uri, _ in third.indexed] == ["level0.dcm"]
    assert library.get(slide_id).version != before

    shutil.rmtree(mixed_tree / "sparse")
    fourth = library.refresh()
    assert len(fourth.removed) == len(fixture_dir["sparse"].paths)
    assert fixture_dir["sparse"].series_uid not in library.ids()


def test_interrupted_scan_leaves_only_complete_entries(mixed_tree: Path, tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    calls = iter(range(10**6))
    partial = scan(catalog, [mixed_tree], should_stop=lambda: next(calls) >= 3)
    assert len(partial.indexed) + len(partial.skipped) == 3
    assert len(catalog.files()) == 3
    for series_uid in catalog.series_uids():
        for stored in catalog.stored_files(series_uid):
            assert stored.instance is not None
            assert len(stored.instance.frames) == stored.instance.header.number_of_frames
    rest = scan(catalog, [mixed_tree])
    assert rest.unchanged == 3


def test_library_keeps_a_bounded_number_of_slides_open(mixed_tree: Path, tmp_path: Path) -> None:
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [mixed_tree], max_open=2)
    library.refresh()
    for slide_id in library.ids():
        library.get(slide_id)
    assert len(library._open) == 2


def test_validate_reports_offset_tables_and_absent_tiles(
    fixture_dir: dict[str, FixtureSet], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(fixture_dir["sparse"].directory), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    (slide,) = report["slides"]
    absent = sum(lv["absent_tiles"] for lv in slide["levels"])
    assert absent == sum(len(lv.absent_tiles) for lv in fixture_dir["sparse"].levels)
    assert {f["offset_table"] for f in slide["files"]} <= {"bot", "empty", "eot", "native"}
    assert main(["validate", str(fixture_dir["concatenation"].directory)]) == 0
    text = capsys.readouterr().out
    assert "concatenation" in text and "complete" in text and "INCOMPLETE" not in text


def test_validate_flags_an_incomplete_concatenation(
    fixture_dir: dict[str, FixtureSet], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(fixture_dir["concatenation"].directory, partial)
    part = next(
        i.path
        for i in fixture_dir["concatenation"].level(0).instances
        if i.concatenation_number == 2
    )
    (partial / part.name).unlink()
    assert main(["validate", str(partial)]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out


def test_evicted_slides_release_their_file_descriptors(mixed_tree: Path, tmp_path: Path) -> None:
    import gc

    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [mixed_tree], max_open=1)
    library.refresh()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for slide_id in library.ids():
            slide = library.get(slide_id)
            level = slide.levels[-1] if slide.levels else None
            if level is not None:
                with contextlib.suppress(TileAbsentError):
                    slide.read_tile_bytes(level.index, 0, 0)
    del slide
    library.flush_locators()  # the background writer's catalog connections are closed
    gc.collect()
    # Only the one slide still open may hold descriptors (one per file of that slide).
    opened = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
    assert len(opened) - before <= 6, opened


def test_tiled_full_with_more_frames_than_its_grid_is_skipped(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    import pydicom

    ds = pydicom.dcmread(fixture_dir["jpeg_bot"].level(0).paths[0])
    ds.TotalPixelMatrixColumns = 512  # 12 frames no longer fit a 2x3 grid
    ds.save_as(tmp_path / "too_many_frames.dcm")
    with pytest.raises(CorruptSlideError, match="exceed"):
        index_instance(tmp_path / "too_many_frames.dcm")


def test_a_library_serves_only_its_own_roots(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    catalog_path = tmp_path / "catalog.sqlite"
    for case in ("jpeg_bot", "sparse"):
        shutil.copytree(fixture_dir[case].directory, tmp_path / case)
        SlideLibrary(Catalog(catalog_path), [tmp_path / case]).refresh()
    mine = SlideLibrary(Catalog(catalog_path, [tmp_path / "jpeg_bot"]), [tmp_path / "jpeg_bot"])
    assert mine.ids() == [fixture_dir["jpeg_bot"].series_uid]
    with pytest.raises(NotFoundError):
        mine.get(fixture_dir["sparse"].series_uid)
    served = mine.catalog.query("SELECT DISTINCT series_uid FROM served_instances")
    assert [r[0] for r in served] == [fixture_dir["jpeg_bot"].series_uid]


def test_a_scan_during_a_load_never_leaves_a_stale_slide_cached(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tileserver.catalog.library as library_module
    import tileserver.readers.dicom_backend as backend_module

    root = tmp_path / "slides"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, root)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [root])
    library.refresh()
    level0 = root / fixture_dir["jpeg_bot"].level(0).paths[0].name
    real_assemble = backend_module.assemble
    calls = 0

    def assemble_while_the_file_changes(instances):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:  # another thread rewrites the file and rescans mid-load
            stat = level0.stat()
            os.utime(level0, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
            library.refresh()
        return real_assemble(instances)

    monkeypatch.setattr(backend_module, "assemble", assemble_while_the_file_changes)
    slide = library.get(fixture_dir["jpeg_bot"].series_uid)
    current = library_module.content_version(library.catalog.series_files()[slide.id])
    assert calls == 2 and slide.version == current
    assert library.get(slide.id) is slide


def test_a_file_rewritten_in_place_is_reindexed_before_it_is_read(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    root = tmp_path / "slides"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, root)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [root])
    library.refresh()
    slide_id = fixture_dir["jpeg_bot"].series_uid
    old = library.get(slide_id)
    assert old.read_tile_bytes(0, 1, 1).data
    import pydicom
    from pydicom.encaps import generate_frames

    target = root / fixture_dir["jpeg_bot"].level(0).paths[0].name
    replacement = pydicom.dcmread(fixture_dir["jpeg_empty_bot"].level(0).paths[0])
    original = pydicom.dcmread(target, stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(replacement, keyword, getattr(original, keyword))
    replacement.save_as(tmp_path / "replacement.dcm")
    shutil.copyfile(tmp_path / "replacement.dcm", target)  # same inode, other bytes
    new = library.get(slide_id)  # no rescan ran: the library notices by itself
    assert new is not old and new.version != old.version
    frames = list(
        generate_frames(replacement.PixelData, number_of_frames=int(replacement.NumberOfFrames))
    )
    across = -(-int(replacement.TotalPixelMatrixColumns) // int(replacement.Columns))
    assert new.read_tile_bytes(0, 1, 1).data == frames[across + 1]
    with pytest.raises(CorruptSlideError, match="changed since it was indexed"):
        old.read_tile_bytes(0, 1, 1)  # an in-flight reader of the old index never reads garbage


def test_a_set_up_catalog_opens_without_writing(tmp_path: Path) -> None:
    """Workers start together: once the schema is in place (``user_version``), opening the
    catalog must not need the write lock another process may hold; an older or foreign
    ``user_version`` runs the schema again."""
    import sqlite3
    import threading

    from tileserver.catalog.sqlite import SCHEMA_VERSION

    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    assert writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a scan in progress does
    opened: list[Catalog] = []
    opener = threading.Thread(target=lambda: opened.append(Catalog(path)), daemon=True)
    opener.start()
    opener.join(timeout=20)  # a hang guard only: blocked, it would wait out the busy timeout
    # Checked while the lock is still held: released first, a blocked open could succeed.
    assert not opener.is_alive() and opened, "opening a set-up catalog waited for the lock"
    writer.execute("ROLLBACK")
    opened[0].close()

    writer.execute("PRAGMA user_version=1")
    Catalog(path).close()
    assert writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    writer.close()


def test_servers_with_nested_roots_share_one_catalog_without_losing_slides(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    """Serve DIR/a alone, then DIR plus another root, then DIR alone, on one catalog: the
    slide under DIR/a is listed every time (the roots served decide, as path prefixes, not
    the root a file was first found under), and its path is relative to the root served."""
    tree, other = tmp_path / "DIR", tmp_path / "other"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, tree / "a" / "jpeg_bot")
    shutil.copytree(fixture_dir["j2k_lossless"].directory, other / "j2k")
    catalog_path = tmp_path / "catalog.sqlite"
    slide_a = fixture_dir["jpeg_bot"].series_uid

    def serve(*roots: Path) -> tuple[list[str], str]:
        catalog = Catalog(catalog_path, list(roots))
        library = SlideLibrary(catalog, list(roots))
        library.refresh()
        library.refresh()  # a rescan changes nothing
        ids = library.ids()
        path = library.get(slide_a).path if slide_a in ids else ""
        library.close()
        catalog.close()
        return ids, path

    assert serve(tree / "a") == ([slide_a], "jpeg_bot")
    ids, path = serve(tree, other)
    assert sorted(ids) == sorted([slide_a, fixture_dir["j2k_lossless"].series_uid])
    assert path == "a/jpeg_bot"
    assert serve(tree) == ([slide_a], "a/jpeg_bot")
    shutil.rmtree(tree / "a")
    assert serve(tree) == ([], "")  # gone under a served root: dropped, whoever found it
    assert serve(other)[0] == [fixture_dir["j2k_lossless"].series_uid]


def test_symbolic_links_out_of_a_slide_root_are_not_followed(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    """A link inside a root to files outside it serves nothing; a link that stays inside
    the root is followed."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, outside / "secret")
    shutil.copytree(fixture_dir["j2k_lossless"].directory, root / "real")
    (root / "escape").symlink_to(outside / "secret")
    (root / "file-escape.dcm").symlink_to(outside / "secret" / "level0.dcm")
    (root / "alias").symlink_to(root / "real")
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [root])
    library.refresh()
    assert library.ids() == [fixture_dir["j2k_lossless"].series_uid]
    paths = set(library.catalog.files())
    assert not any("escape" in p for p in paths)
    assert any("/alias/" in p for p in paths)


def test_a_truncated_level_file_is_reported_on_its_slide_and_in_the_log(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "slides"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, root / "s")
    level0 = root / "s" / "level0.dcm"
    level0.write_bytes(level0.read_bytes()[: level0.stat().st_size // 2])
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [root])
    with caplog.at_level("WARNING", logger="tileserver.catalog.scanner"):
        library.refresh()
    assert any("level0.dcm" in r.getMessage() for r in caplog.records)
    slide = library.get(fixture_dir["jpeg_bot"].series_uid)
    assert any(
        w.startswith("level0.dcm in this slide's folder is not served") for w in slide.warnings
    )
