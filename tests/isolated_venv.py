"""Virtual environments for third-party clients whose dependencies must not meet ours.

A client such as Google's EZ-WSI pulls in OpenCV, google-cloud-storage and unpinned
numpy/pydicom: installed into the project's environment it could move our own pins.
``isolated_python`` builds a venv for a requirement list once, under ``.venv/isolated/``
(ignored by git, dropped by ``make distclean``), named by a hash of the requirements and
the interpreter, so an edited pin builds a new one and an unchanged one is reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / ".venv" / "isolated"


def _key(name: str, requirements: Sequence[str]) -> str:
    text = "\n".join([sys.version, *sorted(requirements)])
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def isolated_python(name: str, requirements: Sequence[str], root: Path = ROOT) -> Path:
    """The interpreter of a venv holding ``requirements``; built on first use (locked)."""
    target = root / _key(name, requirements)
    python = target / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions build it once
        if not (target / ".complete").exists():
            _build(target, requirements)
    return python


def _build(target: Path, requirements: Sequence[str]) -> None:
    """Build beside ``target`` and rename, so an interrupted build is never reused."""
    staging = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(staging)
    pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    done = subprocess.run(
        [*pip, "--disable-pip-version-check", *requirements],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{done.stderr[-3000:]}")
    (staging / ".complete").touch()
    staging.rename(target)
