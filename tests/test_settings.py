"""Settings, CLI flags and environment variables stay in step."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from tileserver.cli import build_parser, settings_from_args
from tileserver.settings import Settings


def serve_parser_dests() -> set[str]:
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return {a.dest for a in serve._actions if a.dest != "help"}


def test_every_setting_is_a_serve_flag() -> None:
    assert {f.name for f in fields(Settings)} == serve_parser_dests()


def test_environment_variables_fill_every_field() -> None:
    env = {
        "TILESERVER_SLIDES": "/a:/b",
        "TILESERVER_PORT": "9001",
        "TILESERVER_WORKERS": "3",
        "TILESERVER_REDIS_URL": "redis://127.0.0.1:1/0",
        "TILESERVER_CONVERT_TO_SRGB": "yes",
        "TILESERVER_RESCAN_INTERVAL": "2.5",
        "TILESERVER_CATALOG": "/tmp/x.sqlite",
    }
    settings = Settings.from_env(env)
    assert settings.slides == (Path("/a"), Path("/b"))
    assert (settings.port, settings.workers, settings.rescan_interval) == (9001, 3, 2.5)
    assert settings.convert_to_srgb is True and settings.catalog == Path("/tmp/x.sqlite")


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILESERVER_PORT", "9001")
    args = build_parser().parse_args(["serve", "--port", "9002", "--slides", "/s"])
    settings = settings_from_args(args)
    assert settings.port == 9002 and settings.slides == (Path("/s"),)


def test_default_catalog_is_outside_the_slide_directories(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Settings.from_env({}).catalog == tmp_path / "tileserver" / "catalog.sqlite"


def test_worker_processes_rebuild_every_setting_from_the_environment(tmp_path: Path) -> None:
    from tileserver.http.server import settings_environment

    settings = Settings(
        slides=(tmp_path,),
        catalog=tmp_path / "c.sqlite",
        port=9003,
        redis_url="redis://127.0.0.1:1/0",
        stow_dir=tmp_path / "stow",
        convert_to_srgb=True,
        log_level="warning",
        rescan_interval=2.0,
    )
    assert Settings.from_env(settings_environment(settings)) == settings


def test_object_storage_roots_survive_the_environment_round_trip(tmp_path: Path) -> None:
    from tileserver.http.server import settings_environment

    settings = Settings(slides=(tmp_path, "s3://bucket/slides/", Path("/b")))
    env = settings_environment(settings)
    again = Settings.from_env(env)
    assert again.slides == (tmp_path.resolve(), "s3://bucket/slides", Path("/b"))
