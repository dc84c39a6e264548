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
import os
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
    Server,
    have,
    start_bare,
    start_tileserver,
    tree_env,
)
from bench.nginx import start_nginx
from bench.serving_data import Template, bare_path, grid_paths, stored_path
from bench.serving_report import TARGET_CONNECTIONS

if TYPE_CHECKING:
    from bench.serving_bench import Bench

#: How every stored-tile load walks its paths (``bench/wrk.py``).
ORDER = "shuffled"


@dataclass(frozen=True)
class Load:
    """One started server to load: its key in the results, base URL, tile paths, and its
    process group (all its workers), whose CPU time is counted."""

    key: str
    url: str
    paths: Path
    pgid: int


@dataclass(frozen=True)
class Cpu:
    """CPU time per request during one load: the server's process group, and wrk."""

    server_us: float
    wrk_us: float


@dataclass
class Rounds:
    """Per key, one entry per round: wrk's result and the CPU time per request."""

    results: dict[str, list[wrk.WrkResult]] = field(default_factory=dict)
    cpu: dict[str, list[Cpu]] = field(default_factory=dict)


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


def checked_load(
    bench: Bench, key: str, server: Server, template: Template, what: str
) -> Load | None:
    """A load over every tile of ``template``, or None (with a note) when its first tile
    is not the stored frame's bytes."""
    problem = check_tile(server.url + template(1, 1), bench.data.level.expected(1, 1))
    if problem is not None:
        bench.notes.append(f"{what}: {key} skipped: {problem}")
        return None
    paths = bench.paths_file(f"paired-{key}", grid_paths(bench.grid, template))
    return Load(key, server.url, paths, server.process.pid)


def group_cpu_seconds(pgid: int) -> float:
    """user + system time of the live processes in process group ``pgid`` (``/proc``)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """user + system time of this process's finished children (wrk runs)."""
    times = os.times()
    return times.children_user + times.children_system


def measure(bench: Bench, load: Load, seed: int) -> tuple[wrk.WrkResult, Cpu]:
    """A warm-up, then ``--paired-duration`` seconds at c=32, with the CPU time spent."""
    bench.warm(load.url, load.paths, order=ORDER)
    server0, wrk0 = group_cpu_seconds(load.pgid), children_cpu_seconds()
    duration = bench.args.paired_duration
    result = bench.load(
        load.url, load.paths, TARGET_CONNECTIONS, duration=duration, seed=seed, order=ORDER
    )
    n = max(1, result.requests)
    server_s = group_cpu_seconds(load.pgid) - server0
    return result, Cpu(1e6 * server_s / n, 1e6 * (children_cpu_seconds() - wrk0) / n)


def alternate(bench: Bench, loads: Sequence[Load], label: str) -> Rounds:
    """``--paired-rounds`` rounds over ``loads``, reversed every other round."""
    rounds = Rounds()
    for round_ in range(1, bench.args.paired_rounds + 1):
        for load in loads if round_ % 2 else loads[::-1]:
            result, cpu = measure(bench, load, round_)
            rounds.results.setdefault(load.key, []).append(result)
            rounds.cpu.setdefault(load.key, []).append(cpu)
            print(
                f"{label} round {round_} {load.key:>22} {line(result)} "
                f"CPU µs/req server {cpu.server_us:.1f} wrk {cpu.wrk_us:.1f}",
                flush=True,
            )
    return rounds


def start_nginx_load(bench: Bench, procs: Processes, what: str) -> list[Load]:
    if not have("nginx"):
        bench.notes.append(f"{what}: nginx skipped: not installed")
        return []
    files = bench.grid * bench.grid
    server = start_nginx(procs, bench.work, bench.data.static, files=files)
    load = checked_load(bench, "nginx", server, nginx_template, what)
    return [load] if load else []


def start_tileserver_load(
    bench: Bench, procs: Processes, key: str, server: str, tree: Path | None, what: str
) -> Load | None:
    level = bench.data.level
    started = start_tileserver(procs, level.path.parent, bench.work / key, server, tree=tree)
    return checked_load(bench, key, started, stored_path(first_slide(started.url)), what)


def first_slide(url: str) -> str:
    """The id of the first slide ``url`` lists (the benchmark's only one)."""
    response = httpx.get(url + "/slides", timeout=30)
    slides = response.json().get("slides") if response.status_code == 200 else None
    if not slides:
        raise RuntimeError(f"{url}/slides answered {response.status_code}: {response.text[:300]}")
    return str(slides[0]["id"])


def run_paired(bench: Bench) -> None:
    """nginx, the bare handlers and tileserver on each server: the shares in the targets."""
    level, what = bench.data.level, "paired rounds"
    with Processes() as procs:
        loads: list[Load | None] = [*start_nginx_load(bench, procs, what)]
        bare = [*bench.args.servers, *(["granian-rsgi"] if "granian" in bench.args.servers else [])]
        for server in bare:
            bare_server = start_bare(
                procs, server, level.path, bench.data.spans, level.grid, bench.work
            )
            loads.append(checked_load(bench, f"bare-{server}", bare_server, bare_path, what))
        for server in bench.args.servers:
            loads.append(start_tileserver_load(bench, procs, f"ts-{server}", server, None, what))
        rounds = alternate(bench, [x for x in loads if x is not None], "paired")
        bench.paired, bench.paired_cpu = rounds.results, rounds.cpu


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
    """Rounds per key ("nginx", "before-uvicorn", "after-granian", ...)."""

    before: Tree
    after: Tree
    servers: list[str]
    rounds: Rounds = field(default_factory=Rounds)


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
        compared.rounds = alternate(bench, [x for x in loads if x is not None], "before/after")
    return compared
