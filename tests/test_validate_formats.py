"""``tileserver validate`` reports slides of every format backend, not only DICOM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real-slides"


def validate(*paths: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tileserver.cli", "validate", "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_an_svs_and_an_openslide_slide_are_reported(tmp_path: Path) -> None:
    from fixtures.openslide_vms import openslide_vms

    svs = REAL / "aperio-cmu1-small-region.svs"
    if not svs.exists():
        pytest.skip(f"real slides not found at {REAL}")
    vms = openslide_vms(tmp_path / "vms")
    report = validate(svs, vms.directory)
    slides = {s["format"]: s for s in report["slides"]}  # type: ignore[union-attr,index]
    assert set(slides) == {"tiff", "openslide"}
    tiff = slides["tiff"]
    assert tiff["levels"][0]["width"] == 2220 and tiff["levels"][0]["frames"] == 130
    assert set(tiff["associated"]) == {"label", "overview", "thumbnail"}
    assert abs(tiff["mpp"][0] - 0.499) < 1e-3
    assert slides["openslide"]["path"].endswith("slide.vms")
    assert report["skipped"] == []
