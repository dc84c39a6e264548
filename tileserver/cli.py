"""Command line: argv -> settings -> library calls."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tileserver.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tileserver", description=__doc__)
    sub = parser.add_subparsers()

    index = sub.add_parser("index", help="index slide trees into the catalog")
    index.add_argument("dirs", nargs="+", type=Path)
    index.add_argument("--catalog", type=Path, help="catalog file (env TILESERVER_CATALOG)")
    index.add_argument("--json", action="store_true", help="print a JSON summary")
    index.set_defaults(handler=_index)

    validate = sub.add_parser("validate", help="print the validation report of slides")
    validate.add_argument("paths", nargs="+", type=Path)
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(handler=_validate)

    fixtures = sub.add_parser("fixtures", help="write the synthetic test slides")
    fixtures.add_argument("out_dir", type=Path)
    fixtures.add_argument("--case", action="append", help="only these cases (repeatable)")
    fixtures.set_defaults(handler=_fixtures)

    serve = sub.add_parser("serve", help="run the HTTP tile server")
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    loadtest = sub.add_parser("loadtest", help="load-test a running server", add_help=False)
    loadtest.add_argument("rest", nargs=argparse.REMAINDER)
    loadtest.set_defaults(handler=_loadtest)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``Settings`` field; each defaults to its TILESERVER_* variable."""
    parser.add_argument("--slides", action="append", type=Path, help="slide directory (repeatable)")
    parser.add_argument("--catalog", type=Path)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument(
        "--server",
        choices=("uvicorn", "granian"),
        help="ASGI server (granian needs the 'fast' extra)",
    )
    parser.add_argument("--redis-url", dest="redis_url")
    parser.add_argument("--cache-bytes", dest="cache_bytes", type=int)
    parser.add_argument("--rescan-interval", dest="rescan_interval", type=float)
    parser.add_argument("--max-output-pixels", dest="max_output_pixels", type=int)
    parser.add_argument("--cors-origins", dest="cors_origins")
    parser.add_argument("--forwarded-allow-ips", dest="forwarded_allow_ips")
    parser.add_argument("--jpeg-quality", dest="jpeg_quality", type=int)
    parser.add_argument(
        "--convert-to-srgb", dest="convert_to_srgb", action="store_const", const=True
    )
    parser.add_argument("--max-open-slides", dest="max_open_slides", type=int)
    parser.add_argument("--log-level", dest="log_level")
    parser.add_argument("--stow-dir", dest="stow_dir", type=Path)
    parser.add_argument(
        "--authorizer",
        help="module:factory of the access check, factory(settings) -> Authorizer "
        "(default: every request is allowed)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = Settings.__dataclass_fields__
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return Settings.from_env(**overrides)


def _index(args: argparse.Namespace) -> int:
    from tileserver.catalog import Catalog, SlideLibrary
    from tileserver.report import slide_summary

    settings = settings_from_args(args)
    catalog = Catalog(settings.catalog)
    library = SlideLibrary(catalog, args.dirs)
    progress = _progress_bar(args.json)
    report = library.refresh() if progress is None else _scan_with_bar(library, progress)
    roots = [str(r) for r in library.roots]
    skipped = [{"path": f.path, "reason": f.reason} for f in catalog.skipped(roots)]
    ids = [sid for sid in catalog.series_files(roots)]
    slides = [slide_summary(library.get(sid)) for sid in sorted(ids)]
    if args.json:
        _print_json({"slides": slides, "skipped": skipped})
    else:
        print(
            f"{len(slides)} slides ({len(report.indexed)} files indexed, {report.unchanged} "
            f"unchanged, {len(report.removed)} removed), {len(skipped)} files skipped; "
            f"catalog {settings.catalog}"
        )
        for s in skipped:
            print(f"  skipped {s['path']}: {s['reason']}")
    return 0


def _progress_bar(quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" files", desc="indexing", file=sys.stderr)


def _scan_with_bar(library: Any, bar: Any) -> Any:
    from tileserver.catalog.scanner import scan

    try:
        report = scan(library.catalog, library.roots, progress=lambda _p: bar.update(1))
    finally:
        bar.close()
    library.sync()
    return report


def _validate(args: argparse.Namespace) -> int:
    from tileserver.report import render_text, validate

    report = validate(args.paths)
    if args.json:
        _print_json(report)
    else:
        print(render_text(report))
    return 0 if report["slides"] else 1


def _fixtures(args: argparse.Namespace) -> int:
    import fixtures

    written = (
        fixtures.generate_all(args.out_dir)
        if not args.case
        else {name: fixtures.CASES[name](args.out_dir / name) for name in args.case}
    )
    for name, fixture_set in written.items():
        print(f"{name}: {fixture_set.directory}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from tileserver.http.server import run

    return run(settings_from_args(args))


def _loadtest(args: argparse.Namespace) -> int:
    from tileserver.loadtest import main as loadtest_main

    return int(loadtest_main(args.rest))


def _print_json(value: Any) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    raise SystemExit(main())
