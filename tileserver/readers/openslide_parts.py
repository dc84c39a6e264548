"""Slides that are several files: which files belong to a main file, and the reverse.

OpenSlide opens a MIRAX slide from ``NAME.mrxs`` plus every file of the folder ``NAME/``
beside it, and a Hamamatsu VMS/VMU slide from its key file plus the JPEG files it names.
The scanner meets each of those files on its own: the OpenSlide backend indexes a part as
a member of its main file's slide (so the catalog versions the slide by all of its files,
and a rewritten part is re-indexed like any source) instead of skipping it as "not a
slide" on every scan.
"""

from __future__ import annotations

import configparser
import os
import threading
from pathlib import Path

#: Main-file suffixes of the formats whose parts are listed in a key file.
KEY_FILE_SUFFIXES = (".vms", ".vmu")
MRXS_SUFFIX = ".mrxs"
#: Keys of a Hamamatsu key file that name a file of the slide (``ImageFile(x,y)`` too).
_VMS_FILE_KEYS = ("imagefile", "mapfile", "optimisationfile", "macroimage")

_key_files: dict[str, tuple[int, dict[str, str]]] = {}  # directory -> (mtime, part -> main)
_key_lock = threading.Lock()


def is_multi_file(main: str) -> bool:
    """Whether ``main`` is the main file of a format whose slides span several files."""
    return Path(main).suffix.lower() in (MRXS_SUFFIX, *KEY_FILE_SUFFIXES)


def parts_of(main: str) -> list[str]:
    """The other files of the slide whose main file is ``main`` (existing ones, sorted)."""
    path = Path(main)
    suffix = path.suffix.lower()
    if suffix == MRXS_SUFFIX:
        folder = path.with_suffix("")
        if not folder.is_dir():
            return []
        # Hidden files are not scanned (catalog/scanner.py), so they are no part of it.
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name[0] != ".")
    if suffix in KEY_FILE_SUFFIXES:
        return sorted(p for p in _key_file_parts(path) if os.path.isfile(p))
    return []


def main_of(part: str) -> str | None:
    """The main file of the multi-file slide ``part`` belongs to, if any (a stat or two,
    and a read of a directory's key files once per change of the directory)."""
    path = Path(part)
    if path.suffix.lower() in (MRXS_SUFFIX, *KEY_FILE_SUFFIXES):
        return None
    folder = path.parent
    for suffix in (MRXS_SUFFIX, ".MRXS"):
        mrxs = folder.with_name(folder.name + suffix)
        if mrxs.is_file():
            return str(mrxs)
    return _key_file_owners(str(folder)).get(str(path))


def _key_file_owners(directory: str) -> dict[str, str]:
    """Part path -> key file, for the key files of ``directory`` (cached by its mtime)."""
    try:
        mtime = os.stat(directory).st_mtime_ns
    except OSError:
        return {}
    with _key_lock:
        cached = _key_files.get(directory)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    owners: dict[str, str] = {}
    with os.scandir(directory) as entries:
        names = sorted(e.path for e in entries if e.name.lower().endswith(KEY_FILE_SUFFIXES))
    for key_file in names:
        for part in _key_file_parts(Path(key_file)):
            owners.setdefault(part, key_file)
    with _key_lock:
        if len(_key_files) > 4096:  # a cache, not a record: one scan's directories at most
            _key_files.clear()
        _key_files[directory] = (mtime, owners)
    return owners


def _key_file_parts(key_file: Path) -> list[str]:
    """Files a Hamamatsu key file names, as paths beside it (none when unreadable)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(key_file.read_text(encoding="utf-8", errors="replace"))
    except (OSError, configparser.Error):
        return []
    parts = []
    for section in parser.sections():
        for key, value in parser.items(section):
            if key.split("(")[0] in _VMS_FILE_KEYS and value.strip():
                parts.append(str(key_file.parent / Path(value.strip()).name))
    return parts
