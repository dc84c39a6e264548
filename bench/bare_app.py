"""Calibration baseline: the least an ASGI app can do per stored tile.

``GET /tiles/{col}/{row}`` returns a slice of the memory-mapped DICOM file, located by a
precomputed ``(frames, 2)`` array of (start, end) offsets. No routing, validation,
headers or error handling: the ceiling of a Python handler on a given ASGI server.
``BENCH_BARE_FILE``, ``BENCH_BARE_INDEX`` (``.npy``) and ``BENCH_BARE_GRID`` configure it.
"""

import mmap
import os

import numpy as np

with open(os.environ["BENCH_BARE_FILE"], "rb") as _fp:
    _DATA = mmap.mmap(_fp.fileno(), 0, access=mmap.ACCESS_READ)
_SPANS = np.load(os.environ["BENCH_BARE_INDEX"]).tolist()
_GRID = int(os.environ["BENCH_BARE_GRID"])


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    _, _, col, row = scope["path"].split("/")
    start, end = _SPANS[int(row) * _GRID + int(col)]
    headers = [(b"content-type", b"image/jpeg"), (b"content-length", b"%d" % (end - start))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _DATA[start:end]})


async def rsgi_app(scope, protocol):  # type: ignore[no-untyped-def]
    """The same handler on granian's RSGI interface (``--interface rsgi``)."""
    _, _, col, row = scope.path.split("/")
    start, end = _SPANS[int(row) * _GRID + int(col)]
    protocol.response_bytes(200, [("content-type", "image/jpeg")], _DATA[start:end])
