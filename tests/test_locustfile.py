"""``deploy/locustfile.py`` under real Locust against a real server: every user class
makes its requests, and none fails."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LOCUSTFILE = Path(__file__).resolve().parent.parent / "deploy" / "locustfile.py"


@pytest.mark.parametrize(
    ("user_class", "request_name"),
    [("Viewer", "viewer tile"), ("RandomTiles", "random tile"), ("Scan", "scan batch")],
)
def test_each_user_class_runs_without_failures(
    load_target: str, tmp_path: Path, user_class: str, request_name: str
) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    assert locust is not None, "locust is a test dependency (pyproject [test])"
    prefix = tmp_path / "run"
    argv = [locust, "-f", str(LOCUSTFILE), "--headless", "--host", load_target]
    argv += ["--users", "2", "--spawn-rate", "2", "--run-time", "3s", "--stop-timeout", "5"]
    argv += ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", user_class]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(f"{prefix}_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    assert int(rows["/slides"]["Request Count"]) >= 1  # each user picks its slide
    row = rows[request_name]
    assert int(row["Request Count"]) > 0
    assert int(row["Failure Count"]) == 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
