"""Lossless JPEG crop through libjpeg-turbo's transform API, bound with ctypes.

PyTurboJPEG 2.x refuses libjpeg-turbo 2.x (Debian 12 ships 2.1.5), while the TurboJPEG
2.x transform functions used here exist in libjpeg-turbo 2.x and 3.x alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from tileserver.codec._jpeg import jpeg_header

_TJXOP_NONE = 0
_TJXOPT_CROP = 1 << 2


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Transform(ctypes.Structure):
    _fields_ = [
        ("r", _Region),
        ("op", ctypes.c_int),
        ("options", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("customFilter", ctypes.c_void_p),
    ]


_Buffer = ctypes.POINTER(ctypes.c_ubyte)


@functools.cache
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("turbojpeg")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.tjInitTransform.restype = ctypes.c_void_p
        lib.tjInitTransform.argtypes = []
        lib.tjDestroy.argtypes = [ctypes.c_void_p]
        lib.tjFree.argtypes = [_Buffer]
        lib.tjTransform.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
            ctypes.POINTER(_Buffer), ctypes.POINTER(ctypes.c_ulong),
            ctypes.POINTER(_Transform), ctypes.c_int,
        ]  # fmt: skip
    except (OSError, AttributeError):
        return None
    return lib


def crop_available() -> bool:
    """Whether libjpeg-turbo's transform API could be loaded."""
    return _library() is not None


def crop_jpeg(data: bytes, width: int, height: int) -> bytes | None:
    """The top-left ``width`` x ``height`` of a JPEG, cropped without re-encoding.

    ``None`` when libjpeg-turbo is missing, the size is not inside the image, or the
    transform fails; the caller then decodes, crops and re-encodes.
    """
    header = jpeg_header(data)
    if header is None or not (0 < width <= header.width and 0 < height <= header.height):
        return None
    if (width, height) == (header.width, header.height):
        return data
    lib = _library()
    return None if lib is None else _transform(lib, data, _Region(0, 0, width, height))


def _transform(lib: ctypes.CDLL, data: bytes, region: _Region) -> bytes | None:
    # A handle is not thread-safe and is cheap to make, so each call has its own.
    handle = lib.tjInitTransform()
    if not handle:
        return None
    out, size = _Buffer(), ctypes.c_ulong(0)
    spec = _Transform(region, _TJXOP_NONE, _TJXOPT_CROP, None, None)
    try:
        status = lib.tjTransform(
            handle, data, len(data), 1, ctypes.byref(out), ctypes.byref(size), ctypes.byref(spec), 0
        )
        return ctypes.string_at(out, size.value) if status == 0 and out else None
    finally:
        if out:
            lib.tjFree(out)
        lib.tjDestroy(handle)
