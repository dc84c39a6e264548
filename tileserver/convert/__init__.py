"""``tileserver convert``: any slide tileserver reads, written as a DICOM WSI pyramid.

One VL Whole Slide Microscopy Image instance per pyramid level, then label, overview and
thumbnail where the input has them; one series, TILED_FULL, encapsulated frames with an
Extended Offset Table. Stored JPEG tiles are kept byte for byte; other tiles are encoded
once (JPEG, or JPEG 2000 lossless). The series is written beside OUTPUT_DIR and renamed
into place, so a failed or interrupted run leaves nothing there.

Parts: ``source`` opens the input through the format-backend registry, ``plan`` decides
what goes where, ``coding`` and ``frames`` make the frames, ``dataset`` the headers,
``writer`` streams the files.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tileserver.compose import background_of
from tileserver.convert.dataset import Series, instance_dataset
from tileserver.convert.frames import Counts
from tileserver.convert.plan import Options, Planned, plan, skipped_associated
from tileserver.convert.source import open_slide
from tileserver.convert.writer import check_destination, staged_directory, write_instance
from tileserver.errors import InvalidRequestError, UnsupportedError
from tileserver.slide import Slide

__all__ = ["Conversion", "Written", "convert", "summary"]

#: Micrometres per pixel written when neither the input nor the caller knows (DICOM WSI
#: requires a Pixel Spacing; 1 µm is no scanner's, so it is not mistaken for a real one).
NOMINAL_MPP = 1.0


@dataclass(frozen=True)
class Written:
    """One instance file as written."""

    path: Path
    flavor: str
    width: int
    height: int
    frames: int
    counts: Counts
    transfer_syntax: str
    photometric: str
    size_bytes: int


@dataclass
class Conversion:
    """The series a conversion wrote."""

    output_dir: Path
    study_uid: str
    series_uid: str
    files: list[Written] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def convert(
    source: str | Path,
    output_dir: str | Path,
    *,
    quality: int = 90,
    lossless: bool = False,
    mpp: float | None = None,
    progress: bool = False,
) -> Conversion:
    """Convert the slide at ``source`` (a file, or a folder holding one slide) into a new
    or empty ``output_dir``. ``quality``: of the JPEG frames encoded here; ``lossless``:
    encode JPEG 2000 lossless instead (stored JPEG tiles are kept either way); ``mpp``:
    level-0 micrometres per pixel, instead of the input's; ``progress``: a bar on stderr."""
    if not 1 <= quality <= 100:
        raise InvalidRequestError(f"JPEG quality must be 1-100, not {quality}")
    output = Path(output_dir).absolute()
    check_destination(output)
    slide = open_slide(Path(source))
    try:
        if not slide.levels:
            raise UnsupportedError(f"{source}: no pyramid levels to convert")
        pixel_size, notes = _mpp(slide, mpp)
        options = Options(quality, lossless, pixel_size, background_of(slide))
        conversion = _write(slide, output, options, progress)
        conversion.warnings += notes
        return conversion
    finally:
        slide.close()


def _mpp(slide: Slide, given: float | None) -> tuple[tuple[float, float], list[str]]:
    """Pixel Spacing is required: the input's, else a nominal one, said so."""
    if given is not None:
        if not 0 < given < 1000:
            raise InvalidRequestError(f"mpp must be between 0 and 1000, not {given}")
        return (given, given), []
    if slide.mpp is not None:
        return slide.mpp, []
    note = f"no pixel size in the input: Pixel Spacing written as a nominal {NOMINAL_MPP} µm"
    return (NOMINAL_MPP, NOMINAL_MPP), [f"{note} (give the real one with --mpp)"]


def _write(slide: Slide, output: Path, options: Options, progress: bool) -> Conversion:
    planned = plan(slide, options)
    series = Series(slide.path, slide.attributes, slide.icc_profile)
    total = sum(item.image.frames for item in planned)
    conversion = Conversion(output, "", series.series_uid, warnings=_warnings(slide))
    with staged_directory(output) as staging, _progress(progress, total) as tick:
        for item in planned:
            dataset = instance_dataset(series, item.image)
            conversion.study_uid = str(dataset.StudyInstanceUID)
            frames = _ticking(item.frames, tick)
            size = write_instance(staging / item.file_name, dataset, frames, item.image.frames)
            conversion.files.append(_written(output, item, size))
    return conversion


def summary(conversion: Conversion) -> str:
    """One line per file written, then where the series went."""
    from tileserver.formats import TRANSFER_SYNTAXES

    lines = []
    for f in conversion.files:
        counts = f.counts
        made = ", ".join(
            f"{n} {what}"
            for n, what in (
                (counts.kept, "kept"),
                (counts.encoded, "encoded"),
                (counts.filled, "filled"),
            )
            if n
        )
        syntax = TRANSFER_SYNTAXES[f.transfer_syntax].name
        lines.append(
            f"{f.path.name:<16} {f.flavor:<9} {f.width:>6} x {f.height:<6} {f.frames:>6} frames "
            f"({made})  {syntax} {f.photometric}  {f.size_bytes / 1e6:.2f} MB"
        )
    lines.append(f"series {conversion.series_uid} in {conversion.output_dir}")
    return "\n".join(lines)


def _written(output: Path, item: Planned, size: int) -> Written:
    image = item.image
    return Written(
        output / item.file_name,
        image.flavor,
        image.size.width,
        image.size.height,
        image.frames,
        item.frames.counts,
        image.coding.transfer_syntax,
        image.coding.photometric,
        size,
    )


def _warnings(slide: Slide) -> list[str]:
    notes = list(slide.warnings)
    if len(slide.focal_planes) > 1:
        notes.append(f"{len(slide.focal_planes)} focal planes: only the first is converted")
    if len(slide.optical_paths) > 1:
        notes.append(f"{len(slide.optical_paths)} optical paths: only the first is converted")
    notes += [
        f"associated image {n!r} has no DICOM role: not converted"
        for n in skipped_associated(slide)
    ]
    return notes


def _ticking(frames: Iterable[bytes], tick: Callable[[], None]) -> Iterator[bytes]:
    for frame in frames:
        yield frame
        tick()


@contextlib.contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[], None]]:
    if not show:
        yield lambda: None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=" tiles", file=sys.stderr, leave=False) as bar:
        yield lambda: bar.update(1)
