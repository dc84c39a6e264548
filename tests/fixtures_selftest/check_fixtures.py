"""Self-check of the fixtures package against wsidicom and pydicom (a script, not a test).

.venv/bin/python tests/fixtures_selftest/check_fixtures.py [OUT_DIR] [--big]
"""

from __future__ import annotations

import struct
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import pydicom
from wsidicom import WsiDicom

from fixtures import FixtureSet, LevelInfo, generate_all, write_big_sparse
from fixtures.broken import write_broken

LOSSLESS = {
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.5",
}


def check_layout(fixture: FixtureSet) -> list[str]:
    """Every recorded fragment span is preceded by an item header of that length."""
    problems = []
    for info in fixture.instances:
        with info.path.open("rb") as f:
            for n, frame in enumerate(info.frames):
                if info.offset_table is None:
                    continue
                for span in frame.fragments:
                    f.seek(span.offset - 8)
                    group, element, length = struct.unpack("<HHI", f.read(8))
                    if (group, element, length) != (0xFFFE, 0xE000, span.length):
                        problems.append(f"{info.path.name} frame {n}: bad item header")
                f.seek(frame.offset)
                head = f.read(2)
                if info.transfer_syntax.endswith(".4.50") and head != b"\xff\xd8":
                    problems.append(f"{info.path.name} frame {n}: no SOI at offset")
    return problems


def check_pydicom(fixture: FixtureSet) -> list[str]:
    problems = []
    for path in fixture.paths:
        ds = pydicom.dcmread(path)
        info = next((i for i in fixture.instances if i.path == path), None)
        if info and int(ds.NumberOfFrames) != info.number_of_frames:
            problems.append(f"{path.name}: NumberOfFrames {ds.NumberOfFrames}")
    return problems


def _tolerance(transfer_syntax: str) -> tuple[float, int]:
    if transfer_syntax in LOSSLESS:
        return 0.0, 0
    return 4.0, 80  # mean, max absolute difference


def check_wsidicom(fixture: FixtureSet) -> list[str]:
    problems = []
    with WsiDicom.open(fixture.directory) as wsi:
        if len(wsi.levels) != len(fixture.levels):
            problems.append(f"levels {len(wsi.levels)} != {len(fixture.levels)}")
        for expected, level in zip(fixture.levels, wsi.levels, strict=False):
            if (level.size.width, level.size.height) != (expected.width, expected.height):
                problems.append(f"level {expected.index} size {level.size}")
            problems += _check_tiles(wsi, fixture, expected.index, level)
        for image in fixture.associated:
            problems += _check_associated(wsi, image)
    return problems


def _check_tiles(wsi: WsiDicom, fixture: FixtureSet, index: int, level: object) -> list[str]:
    expected = fixture.levels[index]
    mean_tol, max_tol = _tolerance(expected.transfer_syntax)
    problems = []
    for (p, z), pixels in expected.planes.items():
        for row in range(expected.tiles_down):
            for col in range(expected.tiles_across):
                if (p, z, col, row) in expected.absent_tiles or _is_huge(expected, col):
                    continue
                tile = wsi.read_tile(
                    index,
                    (col, row),
                    z=expected.focal_planes_um[z],
                    path=expected.optical_paths[p],
                    as_array=True,
                )
                x0, y0 = col * expected.tile_width, row * expected.tile_height
                want = pixels[y0 : y0 + expected.tile_height, x0 : x0 + expected.tile_width]
                if tile.shape != want.shape:
                    problems.append(f"L{index} {p},{z},{col},{row} shape {tile.shape}")
                    continue
                diff = np.abs(tile.astype(int) - want.astype(int))
                if diff.mean() > mean_tol or diff.max() > max_tol:
                    problems.append(
                        f"L{index} {p},{z},{col},{row} diff mean {diff.mean():.2f} max {diff.max()}"
                    )
                encoded = wsi.read_encoded_tile(
                    index,
                    (col, row),
                    z=expected.focal_planes_um[z],
                    path=expected.optical_paths[p],
                    crop_to_image_boundary=False,
                )
                if encoded != _frame_bytes(expected, (p, z, col, row)):
                    problems.append(f"L{index} {p},{z},{col},{row} encoded bytes differ")
    return problems


def _is_huge(level: LevelInfo, col: int) -> bool:
    """The big sparse file's 4 GiB frame (row 0 only there): never read it whole."""
    info = level.instances[0]
    key = (0, 0, col, 0)
    return key in info.frame_tiles and info.frames[info.frame_tiles.index(key)].length > 1 << 30


def _frame_bytes(level: LevelInfo, key: tuple[int, int, int, int]) -> bytes:
    for info in level.instances:
        if key in info.frame_tiles:
            return info.read_frame(info.frame_tiles.index(key))
    raise KeyError(key)


def _check_associated(wsi: WsiDicom, image: object) -> list[str]:
    kind = image.kind  # type: ignore[attr-defined]
    want = image.pixels  # type: ignore[attr-defined]
    if kind == "LABEL":
        got = wsi.read_label(as_array=True)
    elif kind == "OVERVIEW":
        got = wsi.read_overview(as_array=True)
    else:
        got = wsi.read_thumbnail(size=(want.shape[1], want.shape[0]), as_array=True)
        return [] if got is not None else ["thumbnail missing"]
    if got.shape != want.shape:
        return [f"{kind} shape {got.shape} != {want.shape}"]
    diff = np.abs(got.astype(int) - want.astype(int))
    return [f"{kind} diff {diff.mean():.2f}"] if diff.mean() > 4 else []


def check_broken(out: Path) -> None:
    for name, path in write_broken(out / "broken").items():
        try:
            ds = pydicom.dcmread(path)
            outcome = f"read: SOP {ds.get('SOPClassUID', '-')}"
            if "PixelData" in ds and ds.get("NumberOfFrames"):
                try:
                    frames = list(
                        pydicom.encaps.generate_frames(
                            ds.PixelData, number_of_frames=int(ds.NumberOfFrames)
                        )
                    )
                    outcome += f", {len(frames)} frames"
                except Exception as error:
                    outcome += f", frames fail: {type(error).__name__}: {error}"[:160]
        except Exception as error:
            outcome = f"dcmread fails: {type(error).__name__}: {error}"[:160]
        try:
            with WsiDicom.open([path]) as wsi:
                wsi.read_tile(0, (0, 0))
                wsi_outcome = "wsidicom reads tile 0"
        except Exception as error:
            wsi_outcome = f"wsidicom: {type(error).__name__}: {str(error)[:80]}"
        print(f"  broken/{name:26} {outcome} | {wsi_outcome}")


def main() -> int:
    warnings.simplefilter("ignore")
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="fixtures-"))
    fixtures = generate_all(out)
    if "--big" in sys.argv:
        fixtures.update(write_big_sparse(out))
    failed = 0
    for name, fixture in fixtures.items():
        problems = check_layout(fixture) + check_pydicom(fixture)
        try:
            problems += check_wsidicom(fixture)
        except Exception as error:
            problems.append(f"wsidicom: {type(error).__name__}: {error}")
            if "-v" in sys.argv:
                traceback.print_exc()
        status = "ok" if not problems else "PROBLEMS"
        expected_odd = "" if fixture.wsidicom_readable else " (expected unreadable)"
        print(f"{name:26} {status}{expected_odd}")
        for problem in problems[:6]:
            print(f"    {problem}")
        failed += bool(problems) and fixture.wsidicom_readable
    check_broken(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
