"""Drive Google's EZ-WSI DICOMweb client against a tileserver (run in EZ-WSI's own venv).

Not a test module: ``tests/test_ezwsi.py`` runs this file with the interpreter of a
virtual environment that has ``ez-wsi-dicomweb`` installed, so it imports nothing from
tileserver or the test suite. Usage::

    python ezwsi_driver.py DICOMWEB_URL OUT_DIR < series.json

``series.json`` is a list of ``{"name", "study", "series"}``. For each series it opens a
``DicomSlide``, then reads every pyramid level whole and one patch that starts off the
tile grid, plus the label, overview and thumbnail images it finds. Pixels go to
``OUT_DIR/<name>.npz``; the report (levels, instance UIDs, EZ-WSI's errors by class and
message) is printed as one JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ez_wsi_dicomweb import credential_factory, dicom_slide, dicom_web_interface
from ez_wsi_dicomweb.ml_toolkit import dicom_path


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)[:500]}


def _offset_patch(width: int, height: int) -> tuple[int, int, int, int]:
    """A patch that starts inside a tile and crosses tile edges when the level has them."""
    x, y = width // 3 + 1, height // 3 + 1
    return x, y, max(1, min(97, width - x)), max(1, min(83, height - y))


def _read_level(slide: Any, level: Any, key: str, pixels: dict[str, np.ndarray]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "key": key,
        "width": level.width,
        "height": level.height,
        "frame_width": level.frame_width,
        "frame_height": level.frame_height,
        "tiled_full": level.tiled_full,
        "instances": [i.dicom_object.path.instance_uid for i in level.instances.values()],
        "patches": [],
    }
    try:
        for x, y, w, h in [
            (0, 0, level.width, level.height),
            _offset_patch(level.width, level.height),
        ]:
            patch = slide.get_patch(level, x, y, w, h).image_bytes()
            pixels[f"{key}/{x}/{y}/{w}/{h}"] = np.asarray(patch)
            info["patches"].append([x, y, w, h])
    except Exception as exc:  # report EZ-WSI's own reason, keep reading other levels
        info["error"] = _error(exc)
    return info


def _read_series(base: str, item: dict[str, str], out: Path) -> dict[str, Any]:
    dwi = dicom_web_interface.DicomWebInterface(credential_factory.NoAuthCredentialsFactory())
    path = dicom_path.FromString(f"{base}/studies/{item['study']}/series/{item['series']}")
    try:
        slide = dicom_slide.DicomSlide(dwi, path, enable_client_slide_frame_decompression=True)
    except Exception as exc:
        return {"name": item["name"], "error": _error(exc)}
    pixels: dict[str, np.ndarray] = {}
    levels = [_read_level(slide, lv, f"level{lv.level_index}", pixels) for lv in slide.levels]
    associated = []
    for name in ("label", "overview", "thumbnail"):
        level = getattr(slide, name)
        if level is not None:
            associated.append(_read_level(slide, level, name, pixels))
    np.savez(out / f"{item['name']}.npz", **pixels)
    return {"name": item["name"], "levels": levels, "associated": associated}


def main() -> int:
    base, out = sys.argv[1], Path(sys.argv[2])
    items = json.load(sys.stdin)
    report = [_read_series(base, item, out) for item in items]
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
