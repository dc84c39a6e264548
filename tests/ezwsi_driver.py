"""Drive Google's EZ-WSI DICOMweb client against a tileserver (run in EZ-WSI's own venv).

Not a test module: ``tests/test_ezwsi.py`` runs this file with the interpreter of a
virtual environment that has ``ez-wsi-dicomweb`` installed, so it imports nothing from
tileserver or the test suite. Usage::

    python ezwsi_driver.py DICOMWEB_URL OUT_DIR < series.json

``series.json`` is a list of ``{"name", "study", "series"}``. For each series it opens a
``DicomSlide``, then reads every pyramid level whole and one patch that starts off the
tile grid, the label, overview and thumbnail images it finds, each level whole again
through EZ-WSI's two other frame paths (``_slide``), and the slide's ICC profile. Pixels
go to ``OUT_DIR/<name>.npz``; the report (levels, instance UIDs, EZ-WSI's errors by class
and message) is printed as one JSON object.
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


def _read_level(
    slide: Any, level: Any, key: str, pixels: dict[str, np.ndarray], whole_only: bool = False
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "key": key,
        "width": level.width,
        "height": level.height,
        "tiled_full": level.tiled_full,
        "instances": [i.dicom_object.path.instance_uid for i in level.instances.values()],
        "patches": [],
    }
    boxes = [(0, 0, level.width, level.height)]
    if not whole_only:
        boxes.append(_offset_patch(level.width, level.height))
    try:
        for x, y, w, h in boxes:
            patch = slide.get_patch(level, x, y, w, h).image_bytes()
            pixels[f"{key}/{x}/{y}/{w}/{h}"] = np.asarray(patch)
            info["patches"].append([x, y, w, h])
    except Exception as exc:  # report EZ-WSI's own reason, keep reading other levels
        info["error"] = _error(exc)
    return info


def _slide(dwi: Any, path: Any, mode: str) -> Any:
    """``client``: EZ-WSI decodes stored frames (its default); ``server``: it asks for
    frames transcoded to Explicit VR Little Endian; ``cache``: its slide frame cache, which
    downloads whole instances and cuts frames out itself."""
    slide = dicom_slide.DicomSlide(
        dwi, path, enable_client_slide_frame_decompression=mode != "server"
    )
    if mode == "cache":
        slide.init_slide_frame_cache()
    return slide


def _read_mode(dwi: Any, path: Any, mode: str, pixels: dict[str, np.ndarray]) -> list[Any]:
    slide = _slide(dwi, path, mode)
    return [_read_level(slide, lv, f"{mode}{lv.level_index}", pixels, True) for lv in slide.levels]


def _read_series(base: str, item: dict[str, str], out: Path) -> dict[str, Any]:
    dwi = dicom_web_interface.DicomWebInterface(credential_factory.NoAuthCredentialsFactory())
    path = dicom_path.FromString(f"{base}/studies/{item['study']}/series/{item['series']}")
    try:
        slide = _slide(dwi, path, "client")
    except Exception as exc:
        return {"name": item["name"], "error": _error(exc)}
    pixels: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {"name": item["name"]}
    report["levels"] = [
        _read_level(slide, lv, f"level{lv.level_index}", pixels) for lv in slide.levels
    ]
    report["associated"] = [
        _read_level(slide, getattr(slide, name), name, pixels)
        for name in ("label", "overview", "thumbnail")
        if getattr(slide, name) is not None
    ]
    report["modes"] = {mode: _read_mode(dwi, path, mode, pixels) for mode in ("server", "cache")}
    try:
        pixels["icc"] = np.frombuffer(slide.get_icc_profile_bytes(), np.uint8)
    except Exception as exc:
        report["icc_error"] = _error(exc)
    np.savez(out / f"{item['name']}.npz", **pixels)
    return report


def main() -> int:
    base, out = sys.argv[1], Path(sys.argv[2])
    items = json.load(sys.stdin)
    report = [_read_series(base, item, out) for item in items]
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
