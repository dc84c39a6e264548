"""Locust scenarios for distributed load: the patterns of ``tileserver loadtest``.

    pip install locust
    locust -f deploy/locustfile.py --host http://127.0.0.1:8000

Each user class picks a slide from ``GET /slides`` at start. Not imported by tileserver.
"""

from __future__ import annotations

import random
from typing import Any

from locust import HttpUser, between, task


class _SlideUser(HttpUser):
    abstract = True
    slide: dict[str, Any]

    def on_start(self) -> None:
        slides = [s for s in self.client.get("/slides").json()["slides"] if s["levels"]]
        self.slide = random.choice(slides)

    def tile_url(self, level: dict[str, Any], col: int, row: int) -> str:
        return f"/slides/{self.slide['id']}/tiles/{level['index']}/{col}/{row}"


class Viewer(_SlideUser):
    """Pan/zoom sessions: a 3x3 burst of neighbouring tiles, then pan or zoom."""

    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        super().on_start()
        self.level = random.randrange(len(self.slide["levels"]))
        cols, rows = self.slide["levels"][self.level]["grid"]
        self.col, self.row = random.randrange(cols), random.randrange(rows)

    @task
    def viewport(self) -> None:
        level = self.slide["levels"][self.level]
        cols, rows = level["grid"]
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                c, r = self.col + dc, self.row + dr
                if 0 <= c < cols and 0 <= r < rows:
                    self.client.get(self.tile_url(level, c, r), name="viewer tile")
        self.move(cols, rows)

    def move(self, cols: int, rows: int) -> None:
        action = random.random()
        if action < 0.25 and self.level > 0:
            self.level, self.col, self.row = self.level - 1, self.col * 2, self.row * 2
        elif action < 0.45 and self.level < len(self.slide["levels"]) - 1:
            self.level, self.col, self.row = self.level + 1, self.col // 2, self.row // 2
        else:
            self.col = min(cols - 1, max(0, self.col + random.randint(-2, 2)))
            self.row = min(rows - 1, max(0, self.row + random.randint(-2, 2)))
        cols, rows = self.slide["levels"][self.level]["grid"]
        self.col, self.row = min(self.col, cols - 1), min(self.row, rows - 1)


class RandomTiles(_SlideUser):
    """Uniform random tiles over every level."""

    wait_time = between(0.0, 0.1)

    @task
    def tile(self) -> None:
        level = random.choice(self.slide["levels"])
        cols, rows = level["grid"]
        url = self.tile_url(level, random.randrange(cols), random.randrange(rows))
        self.client.get(url, name="random tile")


class Scan(_SlideUser):
    """An AI pipeline walking level 0 in order, 32 tiles per batch request."""

    wait_time = between(0.0, 0.05)
    batch_size = 32

    def on_start(self) -> None:
        super().on_start()
        cols, rows = self.slide["levels"][0]["grid"]
        self.tiles = [[0, c, r] for r in range(rows) for c in range(cols)]
        self.cursor = 0

    @task
    def batch(self) -> None:
        start = self.cursor % len(self.tiles)
        chunk = self.tiles[start : start + self.batch_size]
        self.cursor = start + len(chunk)
        self.client.post(
            f"/slides/{self.slide['id']}/tiles:batch",
            json={"tiles": chunk, "format": "npy"},
            name="scan batch",
        )
