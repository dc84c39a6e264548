"""Client of tileserver for AI pipelines: tiles and regions as numpy arrays.

Imports no server module: install it anywhere with ``httpx``, ``numpy`` and ``Pillow``.

>>> with TileClient("http://127.0.0.1:8000") as client:
...     for batch in client.iter_tiles(slide_id, level=0, batch_size=64, tissue_only=True):
...         for address, pixels in batch: ...
"""

from tileserver.client._wire import (
    LevelInfo,
    RetryPolicy,
    ServerError,
    SlideInfo,
    StoredTile,
    TileAddress,
    TileClientError,
)
from tileserver.client.aio import AsyncTileClient
from tileserver.client.dataset import TileDataset
from tileserver.client.sync import TileClient

__all__ = [
    "AsyncTileClient",
    "LevelInfo",
    "RetryPolicy",
    "ServerError",
    "SlideInfo",
    "StoredTile",
    "TileAddress",
    "TileClient",
    "TileClientError",
    "TileDataset",
]
