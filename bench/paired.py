"""Paired rounds: servers started side by side and loaded in turn at c=32, round by round.

A share or a ratio is taken within each round, so a machine whose speed drifts over the
benchmark (these shared VMs do) cannot skew it; the order of the servers is reversed every
other round (A B C, C B A, ...), so neither side always runs first. Every load is
``wrk -t2 -c32`` over a shuffled list of every level-0 tile (``wrk.py``, ``shuffled``:
one permutation per round, the same for every server in it).

* ``run_paired``: nginx, the bare handlers and tileserver on each server; the stored-tile
  shares in the serving targets.
* ``run_before_after``: tileserver at a git ref (``--before-ref``, checked out with
  ``git worktree add`` into the run's temporary directory and run from this venv with
  ``PYTHONPATH`` set to it) against the working tree (or ``--after-ref``), on uvicorn and
  granian, nginx beside them; written to its own section by ``bench/before_after.py``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench import wrk
from bench.baselines import (
    ROOT,
    Processes,
    have,
    start_bare,
    start_nginx,
    start_tileserver,
    tree_env,
)
from bench.serving_data import Template, bare_path, grid_paths, stored_path
from bench.serving_report import TARGET_CONNECTIONS

if TYPE_CHECKING:
    from bench.serving_bench import Bench

#: How every stored-tile load walks its paths (``bench/wrk.py``).
ORDER = "shuffled"


@dataclass(frozen=True)
class Load:
    """One started server to load: its key in the results, base URL and tile paths."""

    key: str
    url: str
    paths: Path


def nginx_template(col: int, row: int) -> str:
    return f"/tiles/{col}_{row}.jpg"


def check_tile(url: str, expected: bytes | None) -> str | None:
    """None when ``url`` answers 200 with a JPEG (byte-identical to ``expected`` if given)."""
    try:
        response = httpx.get(url, timeout=30)
    except httpx.HTTPError as exc:
        return str(exc)
    if response.status_code != 200 or not response.content.startswith(b"\xff\xd8"):
        return f"{response.status_code} {response.headers.get('content-type')}"
    if expected is not None and response.content != expected:
        return "bytes differ from the stored frame"
    return None


def line(r: wrk.WrkResult) -> str:
    return f"{r.rps:>8.0f} req/s p50 {r.p50_ms:.2f} p99 {r.p99_ms:.2f} ms errors {r.errors}"


def checked_load(bench: Bench, key: str, url: str, template: Template, what: str) -> Load | None:
    """A load over every tile of ``template``, or None (with a note) when its first tile
    is not the stored frame's bytes."""
    problem = check_tile(url + template(1, 1), bench.data.level.expected(1, 1))
    if problem is not None:
        bench.notes.append(f"{what}: {key} skipped: {problem}")
        return None
    paths = bench.paths_file(f"paired-{key}", grid_paths(bench.grid, template))
    return Load(key, url, paths)


def alternate(bench: Bench, loads: Sequence[Load], label: str) -> dict[str, list[wrk.WrkResult]]:
    """``--paired-rounds`` rounds over ``loads`` (reversed every other round): a warm-up,
    then ``--paired-duration`` seconds at c=32 each; results per key, one per round."""
    results: dict[str, list[wrk.WrkResult]] = {}
    for round_ in range(1, bench.args.paired_rounds + 1):
        for load in loads if round_ % 2 else loads[::-1]:
            bench.warm(load.url, load.paths, order=ORDER)
            result = bench.load(
                load.url,
                load.paths,
                TARGET_CONNECTIONS,
                duration=bench.args.paired_duration,
                seed=round_,
                order=ORDER,
            )
            results.setdefault(load.key, []).append(result)
            print(f"{label} round {round_} {load.key:>22} {line(result)}", flush=True)
    return results


def start_nginx_load(bench: Bench, procs: Processes, what: str) -> list[Load]:
    if not have("nginx"):
        bench.notes.append(f"{what}: nginx skipped: not installed")
        return []
    files = bench.grid * bench.grid
    url = start_nginx(procs, bench.work, bench.data.static, files=files).url
    load = checked_load(bench, "nginx", url, nginx_template, what)
    return [load] if load else []


def start_tileserver_load(
    bench: Bench, procs: Processes, key: str, server: str, tree: Path | None, what: str
) -> Load | None:
    level = bench.data.level
    url = start_tileserver(procs, level.path.parent, bench.work / key, server, tree=tree).url
    slide_id: str = httpx.get(url + "/slides").json()["slides"][0]["id"]
    return checked_load(bench, key, url, stored_path(slide_id), what)


def run_paired(bench: Bench) -> None:
    """nginx, the bare handlers and tileserver on each server: the shares in the targets."""
    level, what = bench.data.level, "paired rounds"
    with Processes() as procs:
        loads: list[Load | None] = [*start_nginx_load(bench, procs, what)]
        bare = [*bench.args.servers, *(["granian-rsgi"] if "granian" in bench.args.servers else [])]
        for server in bare:
            url = start_bare(
                procs, server, level.path, bench.data.spans, level.grid, bench.work
            ).url
            loads.append(checked_load(bench, f"bare-{server}", url, bare_path, what))
        for server in bench.args.servers:
            loads.append(start_tileserver_load(bench, procs, f"ts-{server}", server, None, what))
        bench.paired = alternate(bench, [x for x in loads if x is not None], "paired")


# Before and after: two trees of tileserver, paired.


@dataclass(frozen=True)
class Tree:
    """One side of a before/after comparison: a checkout (None: the working tree)."""

    side: str  # "before" or "after"
    path: Path | None
    ref: str  # as given, or "working tree"
    commit: str  # full hash of the checkout; for the working tree, HEAD's
    dirty: bool = False  # the working tree has uncommitted changes to tileserver/


@dataclass
class BeforeAfter:
    """Results per key ("nginx", "before-uvicorn", "after-granian", ...), one per round."""

    before: Tree
    after: Tree
    servers: list[str]
    results: dict[str, list[wrk.WrkResult]] = field(default_factory=dict)


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(side: str, ref: str, parent: Path) -> Iterator[Tree]:
    """``ref`` checked out (detached) with ``git worktree add`` under ``parent``; the
    worktree is removed and pruned afterwards, whatever happens."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = Path(tempfile.mkdtemp(prefix=f"{side}-{commit[:8]}-", dir=parent))
    git("worktree", "add", "--detach", str(path), commit)
    try:
        check_tree(path)
        yield Tree(side, path, ref, commit)
    finally:
        with contextlib.suppress(RuntimeError):
            git("worktree", "remove", "--force", str(path))
        with contextlib.suppress(RuntimeError):
            git("worktree", "prune")


def working_tree() -> Tree:
    dirty = bool(git("status", "--porcelain", "--", "tileserver"))
    return Tree("after", None, "working tree", git("rev-parse", "HEAD"), dirty)


def check_tree(path: Path) -> None:
    """Fails unless this venv's Python, run as the servers are, imports ``path``'s package."""
    done = subprocess.run(
        [sys.executable, "-c", "import tileserver; print(tileserver.__file__)"],
        env=tree_env(path),
        cwd=path,
        capture_output=True,
        text=True,
        check=False,
    )
    imported = Path(done.stdout.strip() or "?").resolve()
    if done.returncode != 0 or not imported.is_relative_to(path.resolve()):
        raise RuntimeError(f"{path}: imports tileserver from {imported}: {done.stderr[-500:]}")


@contextlib.contextmanager
def trees(bench: Bench) -> Iterator[tuple[Tree, Tree]]:
    """The before tree (``--before-ref``) and the after tree (``--after-ref`` or the
    working tree), both checked out for the duration."""
    with contextlib.ExitStack() as stack:
        before = stack.enter_context(worktree("before", bench.args.before_ref, bench.work))
        after_ref = bench.args.after_ref
        after = (
            stack.enter_context(worktree("after", after_ref, bench.work))
            if after_ref
            else working_tree()
        )
        yield before, after


def run_before_after(bench: Bench) -> BeforeAfter:
    """nginx, then per server the before and the after tileserver, in paired rounds."""
    what = "before/after"
    with trees(bench) as (before, after), Processes() as procs:
        compared = BeforeAfter(before, after, list(bench.args.servers))
        loads: list[Load | None] = [*start_nginx_load(bench, procs, what)]
        for server in compared.servers:
            for tree in (before, after):
                key = f"{tree.side}-{server}"
                loads.append(start_tileserver_load(bench, procs, key, server, tree.path, what))
        compared.results = alternate(bench, [x for x in loads if x is not None], "before/after")
    return compared
