"""A map-style dataset over a level's tiles, for PyTorch ``DataLoader`` (torch not imported)."""

from __future__ import annotations

from collections.abc import Sequence

from tileserver.client._wire import Pixels, TileAddress
from tileserver.client.sync import TileClient


class TileDataset:
    """``dataset[i]`` is the ``(h, w, 3)`` uint8 tile ``dataset.addresses[i]``, padded with
    white at the image edge so every item has one shape and default collation stacks them.

    Addresses are fixed at construction (one tissue request). The client pickles as its
    settings, so each DataLoader worker opens its own pool. ``__getitems__`` lets
    DataLoader fetch a whole batch in one batch request.
    """

    def __init__(
        self, client: TileClient, slide_id: str, level: int = 0, tissue_only: bool = True
    ) -> None:
        self.client = client
        self.slide_id = slide_id
        self.level = level
        self.addresses: list[TileAddress] = client.tile_addresses(slide_id, level, tissue_only)

    def __len__(self) -> int:
        return len(self.addresses)

    def __getitem__(self, index: int) -> Pixels:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Pixels]:
        addresses = [self.addresses[i] for i in indices]
        stack = self.client.read_tiles(self.slide_id, addresses)
        return list(stack)
