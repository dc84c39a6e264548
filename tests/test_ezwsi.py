"""Google's EZ-WSI DICOMweb client opens our pyramids through ``/dicomweb``.

EZ-WSI (``ez-wsi-dicomweb``) was written for Google's Healthcare API DICOM store. It runs
in its own virtual environment (``isolated_venv``: its unpinned numpy, pydicom and OpenCV
must not move ours), in a subprocess (``ezwsi_driver.py``), against a real tileserver
over a socket. For every fixture case and every real DICOM slide it opens a
``DicomSlide``, reads each pyramid level whole plus one patch off the tile grid, and the
label, overview and thumbnail images; then each level again through EZ-WSI's server-side
transcoding and its slide frame cache, and the slide's ICC profile.

Oracle: wsidicom reading the same files (mean |difference| <= 1 per sample). EZ-WSI reads
the first frames of an instance, which in TILED_FULL order are the first focal plane of
the instance's first optical path: the oracle reads that plane and path. For the fixture
cases wsidicom cannot read (``FixtureSet.wsidicom_readable``), the oracle is the fixture's
own record of each frame's bytes, decoded by Pillow and tiled.

What EZ-WSI cannot read is listed with EZ-WSI's own reason, and the test asserts that it
really fails that way (``OPEN_FAILS``, ``LEVEL_FAILS``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from isolated_venv import isolated_python
from PIL import Image
from pydicom.dataset import Dataset
from serverproc import ServerProcess
from wsidicom import WsiDicom

from fixtures import FixtureSet
from fixtures.cases import CASES
from fixtures.model import InstanceInfo

pytestmark = [
    pytest.mark.slow,
    # pydicom (under wsidicom, the oracle) on the native fixtures' odd-length Pixel Data.
    pytest.mark.filterwarnings("ignore:The odd length pixel data:UserWarning"),
]

EZWSI = ["ez-wsi-dicomweb==6.1.6"]
DRIVER = Path(__file__).with_name("ezwsi_driver.py")
REAL_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "real-slides"
REAL_DICOM = sorted(p.name for p in REAL_SLIDES.glob("*.dcm")) if REAL_SLIDES.is_dir() else []
TOLERANCE = 1.0

#: Series EZ-WSI refuses to open: (exception class, text of its message).
OPEN_FAILS = {"no_image_type": ("DicomTagNotFoundError", "DICOM tag 00080008 is missing")}
#: Series whose pyramid levels EZ-WSI refuses to read (their label, overview and
#: thumbnail are still read and checked).
LEVEL_FAILS = {
    "sparse": ("DicomPatchGenerationError", "do not have TILED_FULL Dimension Organization"),
    "no_dim_org": ("DicomPatchGenerationError", "do not have TILED_FULL Dimension Organization"),
    "highdicom-sm_image_grayscale.dcm": (
        "UnsupportedPixelFormatError",
        "Pixel format not supported. BITS_ALLOCATED = 16",
    ),
}

#: Levels one of EZ-WSI's other frame paths cannot read, by (path, series).
_CACHE_SPLIT = ("OSError", "image file is truncated")  # one fragment per frame assumed
MODE_FAILS = {
    ("cache", "jpeg_multifragment_bot"): _CACHE_SPLIT,
    ("cache", "jpeg_multifragment_nobot"): _CACHE_SPLIT,
}


@dataclass(frozen=True)
class Target:
    """One series EZ-WSI is asked to open: a fixture case or a real file."""

    name: str
    paths: tuple[Path, ...]
    study: str
    series: str
    fixture: FixtureSet | None = None


def _targets(fixture_dir: dict[str, FixtureSet], root: Path) -> list[Target]:
    targets = []
    for name in sorted(CASES):
        fs = fixture_dir[name]
        paths = tuple(root / name / p.relative_to(fs.directory) for p in fs.paths)
        targets.append(Target(name, paths, fs.study_uid, fs.series_uid, fs))
    for name in REAL_DICOM:
        ds = pydicom.dcmread(REAL_SLIDES / name, stop_before_pixels=True)
        paths = (REAL_SLIDES / name,)
        targets.append(Target(name, paths, ds.StudyInstanceUID, ds.SeriesInstanceUID))
    return targets


@dataclass(frozen=True)
class EzRun:
    targets: dict[str, Target]
    reports: dict[str, dict[str, Any]]
    pixels_dir: Path

    def pixels(self, name: str) -> Any:
        return np.load(self.pixels_dir / f"{name}.npz")


@pytest.fixture(scope="module")
def ez_run(tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict) -> Iterator[EzRun]:
    """EZ-WSI's reads of every target, from one driver run against one server."""
    python = isolated_python("ezwsi", EZWSI)
    work = tmp_path_factory.mktemp("ezwsi")
    root = work / "slides"
    for name in CASES:
        shutil.copytree(fixture_dir[name].directory, root / name)
    targets = _targets(fixture_dir, root)
    roots = [root, *([REAL_SLIDES] if REAL_DICOM else [])]
    server = ServerProcess(roots, work).start()
    try:
        items = [{"name": t.name, "study": t.study, "series": t.series} for t in targets]
        out = work / "pixels"
        out.mkdir()
        done = subprocess.run(
            [str(python), str(DRIVER), f"{server.url}/dicomweb", str(out)],
            input=json.dumps(items),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    reports = {r["name"]: r for r in json.loads(done.stdout)}
    yield EzRun({t.name: t for t in targets}, reports, out)


# -- oracles -------------------------------------------------------------------------------


@dataclass
class Headers:
    """What the oracle needs from the files' headers."""

    #: SOP Instance UID -> the identifier of the instance's first optical path.
    optical_paths: dict[str, str] = field(default_factory=dict)
    #: label, overview, thumbnail: the associated images present.
    kinds: set[str] = field(default_factory=set)
    #: Every ICC profile in the files (optical path sequences or top level).
    icc_profiles: set[bytes] = field(default_factory=set)


def _headers(paths: list[Path]) -> Headers:
    found = Headers()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sequence = ds.get("OpticalPathSequence") or [Dataset()]
        found.optical_paths[ds.SOPInstanceUID] = str(sequence[0].get("OpticalPathIdentifier", ""))
        image_type = list(ds.get("ImageType", []))
        if len(image_type) > 2 and image_type[2] in ("LABEL", "OVERVIEW", "THUMBNAIL"):
            found.kinds.add(image_type[2].lower())
        for item in [ds, *sequence]:
            if "ICCProfile" in item:
                found.icc_profiles.add(bytes(item.ICCProfile))
    return found


def _wsidicom_patch(wsi: WsiDicom, level: dict[str, Any], box: list[int], path: str) -> Any:
    sizes = [(lv.size.width, lv.size.height) for lv in wsi.levels]
    index = sizes.index((level["width"], level["height"]))
    x, y, w, h = box
    z = wsi.levels[index].focal_planes[0]
    return np.asarray(wsi.read_region((x, y), index, (w, h), z=z, path=path or None))


def _wsidicom_associated(wsi: WsiDicom, kind: str, size: tuple[int, int]) -> Any:
    if kind == "thumbnail":
        return np.asarray(wsi.read_thumbnail(size))
    return np.asarray(getattr(wsi, f"read_{kind}")())


def _decoded_frames(instances: tuple[InstanceInfo, ...], width: int, height: int) -> Any:
    """The first plane of a level (or image) from its recorded frame bytes, via Pillow."""
    first = instances[0]
    tw, th = first.tile_width, first.tile_height
    canvas = np.zeros((-(-height // th) * th, -(-width // tw) * tw, 3), np.uint8)
    for inst in instances:
        for index, (path, plane, col, row) in enumerate(inst.frame_tiles):
            if (path, plane) != (0, 0):
                continue
            tile = np.asarray(Image.open(io.BytesIO(inst.read_frame(index))).convert("RGB"))
            canvas[row * th : row * th + tile.shape[0], col * tw : col * tw + tile.shape[1]] = tile
    return canvas[:height, :width]


def _truth(fs: FixtureSet, level: dict[str, Any], key: str) -> Any:
    """The whole level or associated image ``level`` as the fixture recorded its frames."""
    w, h = level["width"], level["height"]
    if key in ("label", "overview", "thumbnail"):
        return _decoded_frames((fs.associated_image(key.upper()).instance,), w, h)
    (info,) = [lv for lv in fs.levels if (lv.width, lv.height) == (w, h)]
    return _decoded_frames(info.instances, w, h)


class Oracle:
    """wsidicom on the target's files, or the fixture's recorded frames where wsidicom
    cannot read the case; pydicom for a lone label (wsidicom needs a pyramid)."""

    def __init__(self, target: Target) -> None:
        self.target, self.fs = target, target.fixture
        paths = [p for p in target.paths if p.name not in self._copies()]
        self.wsi = WsiDicom.open(paths) if self._use_wsidicom() else None
        self.headers = _headers(paths)
        self._whole: dict[str, Any] = {}

    def _copies(self) -> set[str]:
        # wsidicom rejects a series holding one instance twice; the case's notes say to
        # open it without the copy (the server serves the copy once too).
        return {p.name for p in self.fs.duplicate_paths} if self.fs else set()

    def _use_wsidicom(self) -> bool:
        if self.fs is None:
            return "label" not in self.target.name
        return self.fs.wsidicom_readable or bool(self.fs.duplicate_paths)

    def level_sizes(self) -> set[tuple[int, int]]:
        if self.fs is not None:
            return {(lv.width, lv.height) for lv in self.fs.levels}
        return {(lv.size.width, lv.size.height) for lv in self.wsi.levels} if self.wsi else set()

    def patch(self, level: dict[str, Any], box: list[int]) -> Any:
        x, y, w, h = box
        if self.wsi is not None:
            path = self.headers.optical_paths[level["instances"][0]]
            return _wsidicom_patch(self.wsi, level, box, path)
        return self.whole(level)[y : y + h, x : x + w]

    def associated(self, image: dict[str, Any]) -> Any:
        size = (image["width"], image["height"])
        if self.wsi is not None:
            return _wsidicom_associated(self.wsi, image["key"], size)
        return self.whole(image)

    def whole(self, level: dict[str, Any]) -> Any:
        key = f"{level['key']}:{level['width']}x{level['height']}"
        if key not in self._whole:
            if self.fs is not None:
                self._whole[key] = _truth(self.fs, level, level["key"])
            else:
                (path,) = self.target.paths
                self._whole[key] = pydicom.dcmread(path).pixel_array
        return self._whole[key]


# -- checks --------------------------------------------------------------------------------


def _assert_fails(report: dict[str, Any], reason: tuple[str, str]) -> None:
    error = report.get("error")
    assert error is not None, f"EZ-WSI now reads this ({reason[0]} listed): update the list"
    assert error["type"] == reason[0] and reason[1] in error["message"], error


def _assert_close(ours: Any, theirs: Any, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: {ours.shape} != {theirs.shape}"
    diff = float(np.abs(ours.astype(np.int32) - theirs.astype(np.int32)).mean())
    assert diff <= TOLERANCE, f"{what}: mean |diff| {diff:.3f} > {TOLERANCE}"


def _check_levels(run: EzRun, name: str, oracle: Oracle) -> None:
    report, pixels = run.reports[name], run.pixels(name)
    sizes = {(lv["width"], lv["height"]) for lv in report["levels"]}
    assert sizes == oracle.level_sizes(), "EZ-WSI found other pyramid levels"
    for level in report["levels"]:
        if name in LEVEL_FAILS:
            _assert_fails(level, LEVEL_FAILS[name])
            continue
        assert "error" not in level, level["error"]
        assert len(level["patches"]) == 2
        for box in level["patches"]:
            ours = pixels["/".join([level["key"], *map(str, box)])]
            _assert_close(ours, oracle.patch(level, box), f"{level['key']} {box}")


def _check_associated(run: EzRun, name: str, oracle: Oracle) -> None:
    report, pixels = run.reports[name], run.pixels(name)
    assert {image["key"] for image in report["associated"]} == oracle.headers.kinds
    for image in report["associated"]:
        assert "error" not in image, image["error"]
        whole = [0, 0, image["width"], image["height"]]
        ours = pixels["/".join([image["key"], *map(str, whole)])]
        _assert_close(ours, oracle.associated(image), image["key"])


def _check_modes(run: EzRun, name: str, oracle: Oracle) -> None:
    """Each level whole through EZ-WSI's server-transcoding and frame-cache paths."""
    report, pixels = run.reports[name], run.pixels(name)
    for mode, levels in report["modes"].items():
        assert len(levels) == len(report["levels"]), mode
        for level in levels:
            reason = LEVEL_FAILS.get(name) or MODE_FAILS.get((mode, name))
            if reason is not None:
                _assert_fails(level, reason)
                continue
            assert "error" not in level, (mode, level["error"])
            (box,) = level["patches"]
            ours = pixels["/".join([level["key"], *map(str, box)])]
            _assert_close(ours, oracle.patch(level, box), f"{mode}: {level['key']}")


def _check_icc(run: EzRun, name: str, oracle: Oracle) -> None:
    """EZ-WSI finds the ICC profile (by the BulkDataURI in QIDO results, else by
    downloading an instance): one of the files' profiles, or none when they have none."""
    report, pixels = run.reports[name], run.pixels(name)
    assert "icc_error" not in report, report["icc_error"]
    icc = pixels["icc"].tobytes()
    if oracle.headers.icc_profiles:
        assert icc in oracle.headers.icc_profiles
    else:
        assert icc == b""


def _check(run: EzRun, name: str) -> None:
    report = run.reports[name]
    if name in OPEN_FAILS:
        _assert_fails(report, OPEN_FAILS[name])
        return
    assert "error" not in report, report["error"]
    oracle = Oracle(run.targets[name])
    _check_levels(run, name, oracle)
    _check_associated(run, name, oracle)
    _check_modes(run, name, oracle)
    _check_icc(run, name, oracle)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ezwsi_reads_fixture(ez_run: EzRun, case: str) -> None:
    _check(ez_run, case)


@pytest.mark.parametrize("name", REAL_DICOM)
def test_ezwsi_reads_real_slide(real_slides: Path, ez_run: EzRun, name: str) -> None:
    _check(ez_run, name)
