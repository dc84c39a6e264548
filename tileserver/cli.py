"""tileserver: serve whole-slide microscopy images (DICOM WSI) to viewers and AI pipelines.

Index slide directories into a catalog, check slides, run the tile server with its
built-in viewer, write demo slides, or load-test a running server.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from tileserver import __version__
from tileserver.errors import TileServerError
from tileserver.settings import Settings, location, slide_root

EXAMPLES = """\
examples:
  tileserver demo .data/demo                  write three demo slides (a few seconds)
  tileserver serve --slides .data/demo        serve them; the viewer URL is printed
  tileserver validate /data/slides/case-17    check slides without a catalog
  tileserver index /data/slides --json        index a tree and list its slides
  tileserver convert slide.svs out/           write a slide as a DICOM WSI series
  tileserver loadtest http://127.0.0.1:8000 --duration 30

Run 'tileserver COMMAND --help' for a command's options. Every serve option can also be
set with its TILESERVER_* environment variable (TILESERVER_SLIDES, TILESERVER_PORT, ...).
"""
USAGE_ERROR = 2  # bad arguments or input, as argparse's own errors


class UsageError(Exception):
    """Input the command cannot work on (a missing path): one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (0 success, 1 failure, 2 bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _parsers()
    if not args:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    name = args[0]
    if name not in commands:  # --help, --version, or an unknown command: argparse says
        parser.parse_args(args)
        return USAGE_ERROR
    if name == "loadtest":  # its own parser (tileserver.loadtest) reads the rest
        return _run(name, _loadtest, args[1:])
    # Intermixed: options may come before, between or after the paths.
    namespace = commands[name].parse_intermixed_args(args[1:])
    return _run(name, namespace.handler, namespace)


def _run(name: str, handler: Callable[[Any], int], args: Any) -> int:
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UsageError as exc:
        print(f"tileserver {name}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except _expected_errors() as exc:
        print(f"tileserver {name}: error: {_reason(exc)}", file=sys.stderr)
        return 1


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures with a message meant for users (evaluated only when one is raised)."""
    import sqlite3

    return (TileServerError, OSError, sqlite3.Error)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one subparser per command."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = Parser(
        prog="tileserver",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tileserver {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands = {
        name: add(sub)
        for name, add in (
            ("serve", _add_serve),
            ("index", _add_index),
            ("validate", _add_validate),
            ("convert", _add_convert),
            ("demo", _add_demo),
            ("fixtures", _add_fixtures),
            ("loadtest", _add_loadtest),
            ("sign-url", _add_sign_url),
        )
    }
    return parser, commands


def _command(sub: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A command's parser; its handler is the module's ``_<name>`` function."""
    form = argparse.RawDescriptionHelpFormatter
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, formatter_class=form
    )
    parser.set_defaults(handler=globals().get(f"_{name}"))
    return parser


def _add_sign_url(sub: Any) -> argparse.ArgumentParser:
    command = _command(
        sub,
        "sign-url",
        "sign a slide's URLs for clients that cannot send a credential",
        "Print the query string (exp=...&sig=...) that lets any URL of SLIDE_ID through\n"
        "the access check read-only until it expires (the server needs the same\n"
        "--url-signing-key). POST /auth/sign does the same over HTTP.",
    )
    command.add_argument("slide_id", metavar="SLIDE_ID", help="the slide's id, as /slides lists it")
    command.add_argument(
        "--expires-in", type=_count(1), default=3600, metavar="SECONDS", help="default 3600"
    )
    command.add_argument("--url-signing-key", metavar="SECRET", help="[TILESERVER_URL_SIGNING_KEY]")
    command.set_defaults(handler=_sign_url)
    return command


def _sign_url(args: argparse.Namespace) -> int:
    from tileserver.http.signing import UrlSigner

    key = args.url_signing_key or os.environ.get("TILESERVER_URL_SIGNING_KEY")
    if not key:
        raise UsageError("no signing key: pass --url-signing-key or set TILESERVER_URL_SIGNING_KEY")
    try:
        query, _ = UrlSigner(key).query(args.slide_id, args.expires_in)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(query)
    return 0


def _add_serve(sub: Any) -> argparse.ArgumentParser:
    serve = _command(
        sub,
        "serve",
        "run the tile server and its viewer",
        "Serve the slides under --slides over HTTP: native tiles, Deep Zoom, IIIF, DICOMweb\n"
        "and the built-in viewer. The slides are indexed on start and rescanned every\n"
        "--rescan-interval seconds; the viewer URL is printed once the port is bound.",
    )
    add_serve_arguments(serve)
    return serve


def _add_index(sub: Any) -> argparse.ArgumentParser:
    index = _command(
        sub,
        "index",
        "index slide directories into the catalog",
        "Read every file under DIR (headers and frame offsets, no pixels) into the catalog\n"
        "and list the slides found by name, path and UID. Unchanged files are not read\n"
        "again. 'serve' does the same on start; run this to index ahead of time.",
    )
    index.add_argument(
        "dirs", nargs="+", type=slide_root, metavar="DIR", help="slide folder or s3://BUCKET/PREFIX"
    )
    index.add_argument(
        "--catalog", type=location, help="catalog file or postgresql:// URL [TILESERVER_CATALOG]"
    )
    _add_output_options(index)
    return index


def _add_validate(sub: Any) -> argparse.ArgumentParser:
    validate = _command(
        sub,
        "validate",
        "check slides and report what a viewer would meet",
        "Index PATH (files or directories) without a catalog and report, per slide: its\n"
        "levels, offset tables, fragments, transfer syntaxes, absent tiles, optical paths,\n"
        "focal planes, concatenations, ICC profile and every warning. Exits 1 when no\n"
        "slide is found.",
    )
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or directory")
    _add_output_options(validate)
    return validate


def _add_convert(sub: Any) -> argparse.ArgumentParser:
    convert = _command(
        sub,
        "convert",
        "write a slide as a DICOM WSI series",
        "Write the slide INPUT (SVS, tiled TIFF, anything OpenSlide opens, DICOM; a file, or\n"
        "a folder holding one slide) into OUTPUT_DIR (new or empty) as a DICOM VL Whole\n"
        "Slide Microscopy series: one instance per level, plus label, overview and\n"
        "thumbnail. Stored JPEG tiles are kept as they are; other tiles become JPEG.",
    )
    convert.add_argument("input", type=Path, metavar="INPUT", help="slide file or folder")
    convert.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR")
    convert.add_argument(
        "--quality", type=_count(1, 100), default=90, help="of the JPEGs encoded (default 90)"
    )
    convert.add_argument(
        "--lossless", action="store_true", help="encode JPEG 2000 lossless instead of JPEG"
    )
    convert.add_argument(
        "--mpp", type=float, help="level-0 micrometres per pixel (default: the input's)"
    )
    convert.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown only on a terminal)"
    )
    return convert


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (and no progress bar)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown only on a terminal)"
    )


def _add_demo(sub: Any) -> argparse.ArgumentParser:
    demo = _command(
        sub,
        "demo",
        "write the demo slides",
        "Write three generated slides into OUT_DIR: a large H&E pyramid (51,200 x 38,400\n"
        "px), a five-plane Z-stack and a four-channel fluorescence slide. Slides already\n"
        "written are kept, so a second run returns at once.",
    )
    demo.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    demo.add_argument(
        "--cases", type=Path, metavar="DIR", help="also write the tests' edge cases into DIR"
    )
    demo.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    return demo


def _add_fixtures(sub: Any) -> argparse.ArgumentParser:
    cases = _command(
        sub,
        "fixtures",
        "write the synthetic test slides (edge cases)",
        "Write the small synthetic pyramids the tests use, one directory per case: offset\n"
        "table kinds, codecs, sparse tiles, concatenations and other edge cases.",
    )
    cases.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    # Names are checked when the command runs: listing them here would import the
    # fixtures (numpy, pydicom) for every command, 'serve' included.
    cases.add_argument(
        "--case", action="append", metavar="NAME", help="only this case (repeatable)"
    )
    return cases


def _add_loadtest(sub: Any) -> argparse.ArgumentParser:
    # Help and options belong to tileserver.loadtest's parser; main() hands it argv.
    return _command(
        sub,
        "loadtest",
        "load-test a running server (see 'tileserver loadtest --help')",
        "Drive a running server with viewer-like, random or scanning traffic.",
    )


def _count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"{value} is not in {bound}")
        return value

    parse.__name__ = "n"  # the metavar in --help
    return parse


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

#: One flag per ``Settings`` field (dest = field name); a test keeps the two in step.
SERVE_FLAGS: list[tuple[str, Callable[[str], Any] | None, str]] = [
    ("--slides", slide_root, "slide folder or s3://BUCKET/PREFIX to serve (repeatable)"),
    ("--catalog", location, "catalog file or postgresql:// URL (default a file in ~/.cache)"),
    ("--host", None, "address to listen on (default 127.0.0.1)"),
    ("--port", _count(0, 65535), "port to listen on, 0 for any free one (default 8000)"),
    ("--workers", _count(1), "worker processes (default 1)"),
    ("--server", None, "HTTP server; granian needs the 'fast' extra (default uvicorn)"),
    ("--redis-url", None, "share derived images between workers and servers through Redis"),
    ("--cache-bytes", _count(0), "in-process cache of derived images (default 256 MiB)"),
    ("--rescan-interval", seconds, "seconds between rescans, 0 for never (default 30)"),
    ("--max-output-pixels", _count(1), "largest image a request may make (default 25,000,000)"),
    ("--cors-origins", None, "Access-Control-Allow-Origin value (default *)"),
    ("--forwarded-allow-ips", None, "proxies trusted for X-Forwarded-* (default 127.0.0.1)"),
    ("--jpeg-quality", _count(1, 100), "quality of the JPEGs the server encodes (default 90)"),
    ("--convert-to-srgb", None, "convert colour to sRGB with the slide's ICC profile"),
    ("--max-open-slides", _count(1), "slides kept open per worker (default 64)"),
    ("--log-level", None, "log level (default info)"),
    ("--stow-dir", Path, "where STOW-RS stores uploads (default stow/ in the first --slides)"),
    ("--authorizer", None, "access check MODULE:FACTORY, factory(settings) -> Authorizer"),
    ("--api-keys", Path, "file of 'KEY ROLE' lines (read, write, admin); reread on change"),
    ("--oidc-jwks", None, "OIDC issuer's JWKS, a file or https URL: accept its bearer tokens"),
    ("--oidc-issuer", None, "the 'iss' bearer tokens must carry"),
    ("--oidc-audience", None, "the 'aud' bearer tokens must carry"),
    ("--oidc-role-claim", None, "token claim holding the role (default role)"),
    ("--oidc-studies-claim", None, "token claim listing visible studies (default studies)"),
    ("--metrics-public", None, "serve /metrics without a credential"),
    ("--access-log", None, "write one JSON line per request to PATH ('-': stdout)"),
    ("--url-signing-key", None, "secret for signed slide URLs (POST /auth/sign, sign-url)"),
    ("--audit-log", None, "write who read or stored which study to PATH ('-': stdout)"),
    ("--rate-limit", seconds, "requests a second per client, bursts of twice that (0: none)"),
    ("--stow-overwrite", None, "let STOW-RS replace an instance with other content"),
    ("--max-upload-bytes", _count(1), "largest STOW-RS request body (default 2 GiB)"),
    ("--max-part-bytes", _count(1), "largest part of a STOW-RS request (default 1 GiB)"),
    ("--body-timeout", seconds, "seconds a request body may stall before a 408 (default 30)"),
    ("--header-timeout", seconds, "seconds to send request headers before closing (default 30)"),
]
_SERVE_OPTIONS: dict[str, dict[str, Any]] = {
    "--slides": {"action": "append", "metavar": "DIR"},
    "--server": {"choices": ("uvicorn", "granian")},
    "--redis-url": {"metavar": "URL"},
    "--cors-origins": {"metavar": "ORIGINS"},
    "--forwarded-allow-ips": {"metavar": "IPS"},
    "--authorizer": {"metavar": "MODULE:FACTORY"},
    "--convert-to-srgb": {"action": "store_const", "const": True},
    "--metrics-public": {"action": "store_const", "const": True},
    "--stow-overwrite": {"action": "store_const", "const": True},
    "--access-log": {"metavar": "PATH"},
    "--url-signing-key": {"metavar": "SECRET"},
    "--audit-log": {"metavar": "PATH"},
    "--oidc-jwks": {"metavar": "FILE_OR_URL"},
    "--oidc-issuer": {"metavar": "URL"},
    "--oidc-audience": {"metavar": "AUDIENCE"},
    "--oidc-role-claim": {"metavar": "CLAIM"},
    "--oidc-studies-claim": {"metavar": "CLAIM"},
    "--log-level": {"choices": LOG_LEVELS, "type": str.lower, "metavar": "LEVEL"},
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``Settings`` field; each defaults to its TILESERVER_* variable."""
    for flag, kind, text in SERVE_FLAGS:
        dest = flag[2:].replace("-", "_")
        options = {"help": f"{text} [TILESERVER_{dest.upper()}]", **_SERVE_OPTIONS.get(flag, {})}
        if kind is not None:
            options["type"] = kind
            options.setdefault("metavar", "PATH" if kind is Path else kind.__name__.upper())
        parser.add_argument(flag, dest=dest, **options)


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = Settings.__dataclass_fields__
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return Settings.from_env(**overrides)


def _existing(paths: Sequence[Path], what: str = "file or directory") -> list[Path]:
    """``paths`` if they all exist; else a ``UsageError`` naming the first missing one."""
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such {what}")
        if what == "directory" and not path.is_dir():
            raise UsageError(f"{path}: not a directory")
    return list(paths)


@contextmanager
def _progress(args: argparse.Namespace, label: str, total: Callable[[], int]) -> Iterator[Any]:
    """A per-file progress callback drawing a bar on stderr, or None when the bar would be
    noise: not a terminal, ``--json`` or ``--no-progress``."""
    if args.json or args.no_progress or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total(), desc=label, unit=" files", file=sys.stderr, leave=False) as bar:
        yield lambda _path: bar.update(1)


def _serve(args: argparse.Namespace) -> int:
    from tileserver.http.server import run

    settings = settings_from_args(args)
    _existing([p for p in settings.slides if isinstance(p, Path)], "directory")
    return run(settings)


def _index(args: argparse.Namespace) -> int:
    from tileserver.catalog import Catalog, SlideLibrary, scan
    from tileserver.report import files_under, index_summary, render_index

    settings = settings_from_args(args)
    _existing([d for d in args.dirs if isinstance(d, Path)])
    library = SlideLibrary(Catalog(settings.catalog), args.dirs)
    try:
        local = [r for r in library.roots if "://" not in r]  # a bucket is not listed twice
        with _progress(args, "indexing", lambda: len(files_under(local))) as step:
            report = scan(library.catalog, library.roots, progress=step)
        roots = [str(r) for r in library.roots]
        skipped = [(f.path, f.reason or "") for f in library.catalog.skipped(roots)]
        files = {"indexed": len(report.indexed), "unchanged": report.unchanged}
        files["removed"] = len(report.removed)
        summary = index_summary([library.get(i) for i in library.ids()], skipped, files)
    finally:
        library.close()
        library.catalog.close()
    print(_json(summary) if args.json else render_index(summary, library.catalog.name))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from tileserver.report import files_under, render_text, validate

    paths = _existing(args.paths)
    with _progress(args, "validating", lambda: len(files_under(paths))) as step:
        report = validate(paths, progress=step)
    if args.json or report["slides"] or report["skipped"]:
        print(_json(report) if args.json else render_text(report))
    if not report["slides"]:
        skipped = len(report["skipped"])
        where = ", ".join(str(p) for p in paths)
        print(
            f"tileserver validate: no slide in {where} ({skipped} files skipped)", file=sys.stderr
        )
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tileserver.convert import convert, summary

    _existing([args.input])
    show = not args.no_progress and sys.stderr.isatty()
    done = convert(
        args.input,
        args.output_dir,
        quality=args.quality,
        lossless=args.lossless,
        mpp=args.mpp,
        progress=show,
    )
    for note in done.warnings:
        print(f"tileserver convert: warning: {note}", file=sys.stderr)
    print(summary(done))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fixtures.demo import write_demo

    say = (lambda _text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    write_demo(args.out_dir, cases_dir=args.cases, report=say)
    return 0


def _fixtures(args: argparse.Namespace) -> int:
    import fixtures

    unknown = sorted(set(args.case or ()) - set(fixtures.CASES))
    if unknown:
        raise UsageError(f"unknown case {unknown[0]!r}; cases: {', '.join(sorted(fixtures.CASES))}")
    written = fixtures.generate_all(args.out_dir, args.case)
    for name, fixture_set in written.items():
        print(f"{name}: {fixture_set.directory}")
    return 0


def _loadtest(argv: list[str]) -> int:
    from tileserver.loadtest import main as loadtest_main

    return int(loadtest_main(argv))


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


if __name__ == "__main__":
    raise SystemExit(main())
