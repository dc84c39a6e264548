"""Baseline: OpenSlide ``DeepZoomGenerator`` behind a minimal Starlette app.

What a Python user builds today: one shared ``OpenSlide`` handle, tiles rendered in the
thread pool and encoded as JPEG (quality 90). The slide path comes from
``BENCH_OPENSLIDE_SLIDE``; run with ``uvicorn bench.openslide_app:app``.
"""

from __future__ import annotations

import io
import os

import openslide
from openslide.deepzoom import DeepZoomGenerator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_slide = openslide.OpenSlide(os.environ["BENCH_OPENSLIDE_SLIDE"])
_dz = DeepZoomGenerator(_slide, tile_size=256, overlap=0, limit_bounds=False)


def _tile(level: int, col: int, row: int) -> bytes:
    image = _dz.get_tile(level, (col, row)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


async def tile(request: Request) -> Response:
    p = request.path_params
    data = await run_in_threadpool(_tile, p["level"], p["col"], p["row"])
    return Response(data, media_type="image/jpeg")


async def info(request: Request) -> Response:
    return JSONResponse({"levels": _dz.level_count, "dimensions": _slide.dimensions})


app = Starlette(
    routes=[
        Route("/tiles/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Route("/info", info),
    ]
)
