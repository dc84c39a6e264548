"""The load-test harness against a real server: each pattern for about two seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serverproc import free_port

from fixtures import FixtureSet
from tileserver.cli import main as cli_main
from tileserver.loadtest import main
from tileserver.loadtest.results import Recorder, summary
from tileserver.loadtest.scenarios import dzi_pyramid

KEYS = {"pattern", "requests", "errors", "rps", "duration_s", "latency_ms", "status_counts"}


@pytest.mark.parametrize("pattern", ["viewer", "random", "scan"])
def test_each_pattern_runs_without_errors(load_target: str, tmp_path: Path, pattern: str) -> None:
    out = tmp_path / "result.json"
    args = [load_target, "--pattern", pattern, "--duration", "2", "--concurrency", "4"]
    code = main([*args, "--out", str(out), "--no-progress"])
    result = json.loads(out.read_text())
    assert code == 0
    assert set(result) == KEYS and set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert result["pattern"] == pattern and result["errors"] == 0 and result["requests"] > 0
    assert result["status_counts"] == {"200": result["requests"]}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]


def test_request_count_bounds_the_run_via_the_cli(
    load_target: str, tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    out = tmp_path / "result.json"
    slide = fixture_dir["sparse"].series_uid
    args = ["loadtest", load_target, "--pattern", "random", "--requests", "25", "--slides", slide]
    assert cli_main([*args, "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["requests"] == 25


def test_unknown_slide_is_a_setup_error(load_target: str) -> None:
    assert main([load_target, "--slides", "nope", "--requests", "1", "--no-progress"]) == 2


def test_summary_of_nothing_is_zeroes() -> None:
    result = summary("random", Recorder(), 0.0)
    assert result["requests"] == 0 and result["rps"] == 0.0
    assert result["latency_ms"] == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}


def test_errors_are_counted_by_status() -> None:
    recorder = Recorder()
    recorder.add("200", 0.001, True)
    recorder.add("503", 0.002, False)
    recorder.add("ConnectError", 0.003, False)
    result = summary("scan", recorder, 1.0)
    assert result["errors"] == 2
    assert result["status_counts"] == {"200": 1, "503": 1, "ConnectError": 1}


def test_dzi_descriptor_gives_the_deep_zoom_grids() -> None:
    xml = (
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" TileSize="254" '
        'Overlap="1" Format="jpeg"><Size Width="900" Height="700"/></Image>'
    )
    pyramid = dzi_pyramid("s1", xml)
    assert len(pyramid.grids) == 11  # ceil(log2(900)) + 1
    assert pyramid.grids[0] == (1, 1) and pyramid.grids[-1] == (4, 3)
    assert pyramid.url(10, 3, 2) == "/dzi/s1_files/10/3_2.jpeg"


def test_an_unreachable_server_is_a_setup_error_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main([url, "--requests", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loadtest: ") and url in err and err.count("\n") == 1
