"""What travels over HTTP, shared by the sync and async clients: no I/O here.

Parsing of slide metadata, ``npy`` bodies, PNG tiles and ``multipart/mixed`` batches; the
retry policy; the level choice for a target resolution; batch planning.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

Pixels = npt.NDArray[np.uint8]

#: Statuses worth another attempt: overload and gateway trouble, never client errors.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Transport failures worth another attempt (every request the client sends is a read).
RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class TileClientError(Exception):
    """Root of the errors the client raises."""


class ServerError(TileClientError):
    """The server answered with an error status (after any retries)."""

    def __init__(self, status_code: int, message: str, url: str) -> None:
        super().__init__(f"{status_code} from {url}: {message}")
        self.status_code = status_code
        self.message = message
        self.url = url


class TileAddress(NamedTuple):
    """One stored tile: pyramid level (0 = full resolution), column, row."""

    level: int
    col: int
    row: int


@dataclass(frozen=True, slots=True)
class LevelInfo:
    index: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    downsample: tuple[float, float]
    mpp: tuple[float, float] | None

    @property
    def grid(self) -> tuple[int, int]:
        """(columns, rows) of tiles."""
        return -(-self.width // self.tile_width), -(-self.height // self.tile_height)


@dataclass(frozen=True, slots=True)
class SlideInfo:
    id: str
    name: str
    levels: tuple[LevelInfo, ...]
    mpp: tuple[float, float] | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SlideInfo:
        levels = tuple(
            LevelInfo(
                lv["index"],
                lv["width"],
                lv["height"],
                lv["tile_width"],
                lv["tile_height"],
                (lv["downsample"][0], lv["downsample"][1]),
                (lv["mpp"][0], lv["mpp"][1]) if lv.get("mpp") else None,
            )
            for lv in value.get("levels", [])
        )
        mpp = value.get("mpp") or (levels[0].mpp if levels else None)
        return cls(value["id"], value.get("name", ""), levels, _pair(mpp), value)


def _pair(value: Sequence[float] | None) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``backoff * 2**attempt``, capped; Retry-After wins."""

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0

    def retry_status(self, status_code: int) -> bool:
        return status_code in RETRY_STATUSES

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        if after is not None:
            try:
                return min(self.max_backoff, max(0.0, float(after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        base = min(self.max_backoff, self.backoff * 2.0**attempt)
        return base * (0.5 + random.random() / 2)


def check(response: httpx.Response) -> httpx.Response:
    """``response`` when 2xx, else ``ServerError`` with the server's message."""
    if response.is_success:
        return response
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text[:200]
    raise ServerError(response.status_code, message, str(response.request.url))


def decode_png(data: bytes) -> Pixels:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_npy(data: bytes) -> Pixels:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    return np.asarray(array, dtype=np.uint8)


def check_iteration(batch_size: int, concurrency: int) -> None:
    """``ValueError`` unless both ``iter_tiles`` knobs are at least 1."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    if concurrency < 1:
        raise ValueError("concurrency must be positive")


def batches(addresses: Sequence[TileAddress], size: int) -> list[list[TileAddress]]:
    """``addresses`` in runs of ``size`` (checked by ``check_iteration``)."""
    return [list(addresses[i : i + size]) for i in range(0, len(addresses), size)]


def batch_body(addresses: Sequence[TileAddress], fmt: str) -> dict[str, Any]:
    return {"tiles": [list(a) for a in addresses], "format": fmt}


def grid_addresses(level: LevelInfo, flags: Sequence[Sequence[int]] | None) -> list[TileAddress]:
    """Row-major addresses of a level; only flagged tiles when ``flags`` is given."""
    cols, rows = level.grid
    return [
        TileAddress(level.index, c, r)
        for r in range(rows)
        for c in range(cols)
        if flags is None or flags[r][c]
    ]


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """Where to read for ``region_at_mpp``: a level, its pixels, and the output size."""

    level: int
    x: int
    y: int
    width: int
    height: int
    out_width: int
    out_height: int


def plan_region_at_mpp(
    slide: SlideInfo, mpp: float, x: int, y: int, width: int, height: int
) -> RegionPlan:
    """The coarsest level at least as fine as ``mpp``; ``x, y`` are level-0 pixels and
    ``width, height`` output pixels at ``mpp``."""
    if slide.mpp is None:
        raise TileClientError(f"slide {slide.id} has no pixel spacing")
    if mpp <= 0 or width <= 0 or height <= 0:
        raise ValueError("mpp, width and height must be positive")
    chosen = slide.levels[0]
    for level in slide.levels:
        level_mpp = slide.mpp[0] * level.downsample[0]
        if level_mpp <= mpp * (1 + 1e-6):
            chosen = level
    dx, dy = chosen.downsample
    l_mpp_x, l_mpp_y = slide.mpp[0] * dx, slide.mpp[1] * dy
    l_x, l_y = math.floor(x / dx), math.floor(y / dy)
    l_w = max(1, round(width * mpp / l_mpp_x))
    l_h = max(1, round(height * mpp * (slide.mpp[1] / slide.mpp[0]) / l_mpp_y))
    return RegionPlan(chosen.index, l_x, l_y, l_w, l_h, width, height)


def resize(pixels: Pixels, width: int, height: int) -> Pixels:
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    from PIL import Image

    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image)


@dataclass(frozen=True, slots=True)
class StoredTile:
    """One part of a ``raw`` batch: the stored frame bytes, as in the file."""

    address: TileAddress
    media_type: str
    transfer_syntax: str | None
    data: bytes
    absent: bool


def parse_multipart(content_type: str, body: bytes) -> list[StoredTile]:
    """Parts of a ``multipart/mixed`` batch answer, in order."""
    boundary = _boundary(content_type)
    return list(_parts(body, b"--" + boundary.encode()))


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"')
    raise TileClientError(f"no boundary in {content_type!r}")


def _parts(body: bytes, delimiter: bytes) -> Iterator[StoredTile]:
    pos = 0
    while True:
        start = body.find(delimiter, pos)
        if start < 0:  # a body cut between parts: tiles may be missing
            raise TileClientError("truncated multipart body: no closing delimiter")
        if body.startswith(b"--", start + len(delimiter)):
            return
        head_start = start + len(delimiter) + 2
        head_end = body.find(b"\r\n\r\n", head_start)
        if head_end < 0:
            raise TileClientError("truncated multipart body")
        headers = _headers(body[head_start:head_end])
        length = int(headers["content-length"])
        data = body[head_end + 4 : head_end + 4 + length]
        if len(data) != length:
            raise TileClientError("truncated multipart body")
        yield StoredTile(
            TileAddress(
                int(headers["x-tile-level"]), int(headers["x-tile-col"]), int(headers["x-tile-row"])
            ),
            headers.get("content-type", "application/octet-stream"),
            headers.get("x-transfer-syntax"),
            data,
            headers.get("x-tile-absent") == "1",
        )
        pos = head_end + 4 + length


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def slide_path(slide_id: str) -> str:
    return f"/slides/{quote(slide_id, safe='')}"


def batch_path(slide_id: str) -> str:
    return f"{slide_path(slide_id)}/tiles:batch"


def region_params(level: int, x: int, y: int, width: int, height: int) -> dict[str, str | int]:
    return {"level": level, "x": x, "y": y, "width": width, "height": height, "format": "npy"}
