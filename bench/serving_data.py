"""Data for the serving benchmark, written once to ``bench/data/serving/``.

* the DICOM level (``bench/synthetic.py``; one level only, so every DZI level below the
  top is composed);
* the same frame bytes as static files for nginx;
* (start, end) byte offsets of every frame in the DICOM file, for the bare handler;
* a libvips pyramidal JPEG TIFF of the same pixels for IIPImage: the level is streamed to
  ``vips tiffsave`` as a PPM on stdin, one row of tiles at a time.

Also the tile URL paths the benchmarks request (``grid_paths`` over a ``Template``).
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.baselines import have
from bench.report import DATA
from bench.synthetic import SyntheticLevel, ensure_level
from tileserver.dzi import DeepZoom

SERVING = DATA / "serving"
#: A tile's URL path from its (column, row).
Template = Callable[[int, int], str]


@dataclass(frozen=True)
class ServingData:
    level: SyntheticLevel
    static: Path  # nginx root: tiles/{col}_{row}.jpg
    spans: Path  # .npy, (frames, 2) start/end offsets into level.path
    tiff: Path | None
    notes: tuple[str, ...]

    @property
    def dzi_top(self) -> int:
        """The DZI level of the stored frames (full resolution); every level below is composed."""
        size = self.level.grid * self.level.tile_size
        return DeepZoom(size, size, self.level.tile_size).max_level


def grid_paths(grid: int, template: Template) -> list[str]:
    """Every tile of a ``grid`` x ``grid`` level, row by row."""
    return [template(c, r) for r in range(grid) for c in range(grid)]


def bare_path(col: int, row: int) -> str:
    """A stored frame on the bare handler (``bench/bare_app.py``)."""
    return f"/tiles/{col}/{row}"


def stored_path(slide_id: str) -> Template:
    """Stored frames of level 0 on tileserver's native URL."""
    return lambda c, r: f"/slides/{slide_id}/tiles/0/{c}/{r}"


def prepare(grid: int, tiff_timeout: float = 600, want_tiff: bool = True) -> ServingData:
    """The level, its static files and frame spans; with ``want_tiff``, the pyramidal TIFF."""
    level = ensure_level(SERVING / f"dicom-{grid}", grid, extended_offset_table=True)
    notes = []
    tiff = SERVING / f"pyramid-{grid}.tif"
    if want_tiff and not tiff.exists() and have("vips"):
        start = time.perf_counter()
        try:
            write_tiff(level, tiff, tiff_timeout)
            notes.append(f"pyramidal TIFF written in {time.perf_counter() - start:.0f} s")
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"no pyramidal TIFF for IIPImage: {exc}")
    return ServingData(
        level,
        ensure_static(level),
        ensure_spans(level),
        tiff if tiff.exists() else None,
        tuple(notes),
    )


def ensure_static(level: SyntheticLevel) -> Path:
    static = SERVING / f"static-{level.grid}"
    done = static / "tiles" / "done"
    if not done.exists():
        (static / "tiles").mkdir(parents=True, exist_ok=True)
        for row in range(level.grid):
            for col in range(level.grid):
                (static / "tiles" / f"{col}_{row}.jpg").write_bytes(level.expected(col, row))
        done.touch()
    return static


def ensure_spans(level: SyntheticLevel) -> Path:
    """Frame byte ranges, from the layout ``write_level`` uses: items packed back to back,
    each an 8-byte item header and the tile, then the 8-byte sequence delimiter."""
    path = level.path.with_suffix(".spans.npy")
    if path.exists():
        return path
    lengths = np.asarray([len(t) for t in level.tiles], dtype=np.int64)[level.frame_tiles]
    end_of_items = level.path.stat().st_size - 8
    starts = end_of_items - int(np.sum(lengths + 8)) + np.cumsum(lengths + 8) - lengths
    spans = np.stack([starts, starts + lengths], axis=1)
    with level.path.open("rb") as fp:
        fp.seek(int(spans[-1, 0]))
        if fp.read(int(lengths[-1])) != level.expected(level.grid - 1, level.grid - 1):
            raise RuntimeError(f"frame offsets do not match {level.path}")
    np.save(path, spans)
    return path


def write_tiff(level: SyntheticLevel, tiff: Path, timeout: float) -> None:
    """``vips tiffsave`` (tiled 256 px, pyramid, JPEG q90) fed the level as a PPM stream."""
    t = level.tile_size
    size = level.grid * t
    decoded = np.stack(
        [np.asarray(Image.open(io.BytesIO(tile)).convert("RGB")) for tile in level.tiles]
    )
    partial = tiff.with_suffix(".partial.tif")
    argv = ["vips", "tiffsave", "stdin", str(partial), "--tile", "--pyramid"]
    argv += ["--compression", "jpeg", "-Q", "90", "--tile-width", str(t), "--tile-height", str(t)]
    deadline = time.monotonic() + timeout
    with subprocess.Popen(argv, stdin=subprocess.PIPE) as vips:
        assert vips.stdin is not None
        try:
            vips.stdin.write(b"P6\n%d %d\n255\n" % (size, size))
            for row in range(level.grid):
                tiles = decoded[level.frame_tiles[row * level.grid : (row + 1) * level.grid]]
                vips.stdin.write(tiles.transpose(1, 0, 2, 3).tobytes())
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
            vips.stdin.close()
            code = vips.wait(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            vips.kill()
            partial.unlink(missing_ok=True)
            raise
    if code != 0:
        partial.unlink(missing_ok=True)
        raise subprocess.CalledProcessError(code, argv)
    os.replace(partial, tiff)
