"""Index summaries and per-slide validation reports, as plain JSON-ready dicts."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tileserver.catalog.scanner import iter_files
from tileserver.dicom.instance import IndexedInstance
from tileserver.dicom.series import FrameGrid, SeriesLayout, assemble
from tileserver.slide import Slide

Progress = Callable[[Path], None]


def slide_summary(slide: Slide) -> dict[str, Any]:
    """The ``index --json`` entry of one slide."""
    return {
        "id": slide.id,
        "name": slide.name,
        "path": slide.path,
        "levels": [
            {
                "width": lv.size.width,
                "height": lv.size.height,
                "tile_width": lv.tile_size.width,
                "tile_height": lv.tile_size.height,
                "frames": lv.frames,
            }
            for lv in slide.levels
        ],
        "warnings": list(slide.warnings),
    }


def files_under(paths: Sequence[str | Path]) -> list[Path]:
    """Every file ``validate`` or ``index`` reads under ``paths`` (files or trees)."""
    return [f for root in paths for f in iter_files(Path(root))]


def validate(paths: Sequence[str | Path], progress: Progress | None = None) -> dict[str, Any]:
    """Index ``paths`` (files or trees) without a catalog, through the format backends, and
    report on every slide; ``progress`` is called after each file."""
    from tileserver.report_formats import Indexed

    found = Indexed()
    for path in files_under(paths):
        found.add(path)
        if progress is not None:
            progress(path)
    slides = [_series_report(assemble(instances)) for instances in found.dicom.values()]
    slides += found.other_reports()
    return {"slides": slides, "skipped": found.skipped}


def series_location(files: Sequence[str]) -> tuple[str, str]:
    """(name, path) of a series: its file, or the directory its files share; the name is
    the last part without suffix, as the server names slides."""
    paths = [Path(f) for f in files]
    if len(paths) == 1:
        return paths[0].stem, str(paths[0])
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return common.name or str(common), str(common)


def _series_report(layout: SeriesLayout) -> dict[str, Any]:
    name, path = series_location([i.path for i in layout.instances])
    return {
        "id": layout.series_uid,
        "name": name,
        "path": path,
        "files": [_instance_report(i) for i in layout.instances],
        "levels": [_grid_report(g) for g in layout.levels],
        "associated": {name: _grid_report(g) for name, g in layout.associated.items()},
        "concatenations": _concatenations(layout.instances),
        "icc_profile": any(i.header.icc_profile for i in layout.instances),
        "warnings": list(layout.warnings),
    }


def _instance_report(inst: IndexedInstance) -> dict[str, Any]:
    h, rows = inst.header, inst.frames.rows
    fragments = rows["fragments"] if len(rows) else np.zeros(1, dtype=np.uint32)
    return {
        "path": inst.path,
        "sop_instance_uid": h.sop_instance_uid,
        "role": h.role,
        "transfer_syntax": h.transfer_syntax,
        "photometric": h.pixel_format.photometric,
        "dimension_organization": h.dimension_organization,
        "frames": len(rows),
        "offset_table": inst.frames.kind,
        "fragments_per_frame": {"min": int(fragments.min()), "max": int(fragments.max())},
        "icc_profile": h.icc_profile is not None,
        "warnings": inst.warnings,
    }


def _grid_report(grid: FrameGrid) -> dict[str, Any]:
    return {
        "width": grid.size.width,
        "height": grid.size.height,
        "tile_width": grid.tile_size.width,
        "tile_height": grid.tile_size.height,
        "frames": len(grid.frames),
        "absent_tiles": grid.absent_tiles,
        "optical_paths": list(grid.optical_paths),
        "focal_planes": list(grid.focal_planes),
        "files": len(grid.files),
    }


def _concatenations(instances: Iterable[IndexedInstance]) -> list[dict[str, Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    totals: dict[str, int | None] = {}
    for inst in instances:
        concat = inst.header.concatenation
        if concat is not None:
            groups[concat.uid].append(concat.number)
            totals[concat.uid] = concat.total
    return [
        {
            "uid": uid,
            "parts": sorted(numbers),
            "total": totals[uid],
            "complete": totals[uid] is not None
            and sorted(numbers) == list(range(1, (totals[uid] or 0) + 1)),
        }
        for uid, numbers in groups.items()
    ]


def render_text(report: dict[str, Any]) -> str:
    """A human-readable validation report."""
    lines: list[str] = []
    for slide in report["slides"]:
        lines.append(f"slide {slide['name']}: {slide['path']}")
        lines.append(f"  id {slide['id']}")
        for lv_index, lv in enumerate(slide["levels"]):
            lines.append(
                f"  level {lv_index}: {lv['width']}x{lv['height']}, tiles "
                f"{lv['tile_width']}x{lv['tile_height']}, {lv['frames']} frames in "
                f"{lv['files']} file(s), {lv['absent_tiles']} absent tiles, "
                f"{len(lv['optical_paths'])} optical path(s), {len(lv['focal_planes'])} plane(s)"
            )
        for name, image in slide["associated"].items():
            lines.append(f"  {name}: {image['width']}x{image['height']}")
        for c in slide["concatenations"]:
            state = "complete" if c["complete"] else "INCOMPLETE"
            lines.append(f"  concatenation {c['uid']}: parts {c['parts']} of {c['total']} {state}")
        lines.append(f"  ICC profile: {'yes' if slide['icc_profile'] else 'no'}")
        for f in slide["files"]:
            frag = f["fragments_per_frame"]
            lines.append(
                f"  file {Path(f['path']).name}: {f['role'] or '?'}, {f['transfer_syntax']} "
                f"{f['photometric']}, {f['frames']} frames, offset table {f['offset_table']}, "
                f"fragments/frame {frag['min']}-{frag['max']}"
            )
            lines.extend(f"    warning: {w}" for w in f["warnings"])
        lines.extend(f"  warning: {w}" for w in slide["warnings"])
    for s in report["skipped"]:
        lines.append(f"skipped {s['path']}: {s['reason']}")
    return "\n".join(lines)


def index_summary(
    slides: Iterable[Slide], skipped: Iterable[tuple[str, str]], files: dict[str, int]
) -> dict[str, Any]:
    """The ``index --json`` document: slides, skipped (path, reason) and file counts."""
    return {
        "slides": [slide_summary(s) for s in slides],
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        "files": files,
    }


def render_index(summary: dict[str, Any], catalog: str | Path) -> str:
    """A human-readable ``index`` summary: one line per slide, then skipped files."""
    files = summary["files"]
    lines = [
        f"{len(summary['slides'])} slides ({files['indexed']} files indexed, "
        f"{files['unchanged']} unchanged, {files['removed']} removed), "
        f"{len(summary['skipped'])} files skipped; catalog {catalog}"
    ]
    for slide in summary["slides"]:
        levels = slide["levels"]
        size = f"{levels[0]['width']} x {levels[0]['height']} px" if levels else "no levels"
        lines.append(
            f"  {slide['name']}: {size}, {len(levels)} levels, path {slide['path']}, "
            f"id {slide['id']}"
        )
    lines.extend(f"  skipped {s['path']}: {s['reason']}" for s in summary["skipped"])
    return "\n".join(lines)
