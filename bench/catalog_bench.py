"""Reopen a catalog of 1,000 slides and serve each slide's first tile.

Targets (issue 2): under 50 ms per slide from a freshly opened catalog, and a bounded number
of open slides (frame tables of idle slides are not kept in RAM).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from bench.report import markdown_table, section_preamble, update_section
from bench.synthetic import ensure_level
from tileserver.catalog import Catalog, SlideLibrary

DATA = Path(__file__).resolve().parent / "data"


def write_slides(directory: Path, count: int) -> Path:
    """``count`` single-level slides (8x8 frames each), each its own series; cached."""
    target = directory / f"catalog-{count}"
    done = target / ".complete"
    if done.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    template = pydicom.dcmread(ensure_level(directory, 8, extended_offset_table=False).path)
    for i in range(count):
        template.SeriesInstanceUID = generate_uid()
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.save_as(target / f"slide-{i:04d}.dcm", enforce_file_format=True)
    done.touch()
    return target


def run(count: int, max_open: int) -> tuple[list[list[str]], str]:
    slides = write_slides(DATA, count)
    catalog_path = DATA / f"catalog-{count}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{catalog_path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    SlideLibrary(Catalog(catalog_path), [slides]).refresh()
    index_s = time.perf_counter() - started

    started = time.perf_counter()
    library = SlideLibrary(Catalog(catalog_path), [slides], max_open=max_open)
    ids = library.ids()
    open_ms = (time.perf_counter() - started) * 1000
    per_slide = []
    for slide_id in ids:
        t0 = time.perf_counter()
        library.get(slide_id).read_tile_bytes(0, 0, 0)
        per_slide.append((time.perf_counter() - t0) * 1000)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    values = np.asarray(per_slide)
    rows = [
        [
            f"{len(ids):,}",
            f"{index_s:.1f}",
            f"{open_ms:.1f}",
            f"{np.median(values):.2f}",
            f"{np.percentile(values, 99):.2f}",
            f"{values.max():.2f}",
            f"{len(library._open)} / {max_open}",
            f"{rss_mb:.0f}",
        ]
    ]
    verdict = "met" if np.percentile(values, 99) < 50 else "NOT met"
    return rows, verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--max-open", type=int, default=64)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    rows, verdict = run(args.slides, args.max_open)
    header = [
        "slides",
        "index all s",
        "open catalog ms",
        "first tile per slide median ms",
        "p99 ms",
        "max ms",
        "open slides / bound",
        "peak RSS MB",
    ]
    table = markdown_table(header, rows)
    summary = (
        f"Each slide: 8x8 JPEG frames of 256 px, its own series. A fresh `Catalog` + "
        f"`SlideLibrary` (bounded to {args.max_open} open slides) reads tile (0, 0) of "
        f"every slide once: catalog rows -> frame tables -> one pread. Target: under "
        f"50 ms per slide: **{verdict}**."
    )
    print(table + "\n\n" + summary)
    if not args.no_docs:
        body = section_preamble(f"Catalog: reopen {args.slides:,} slides", "make bench")
        update_section("catalog", f"{body}\n\n{summary}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
