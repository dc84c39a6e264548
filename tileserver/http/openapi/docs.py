"""The ``/docs`` page: the OpenAPI document as one HTML page, grouped by tag."""

from __future__ import annotations

import html
import re
from typing import Any

from tileserver.http.openapi.spec import Json

_METHODS = ("get", "post", "delete")
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:64rem;padding:1rem 1.5rem;
color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
details{border:1px solid #ddd;border-radius:6px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer} code{font-size:.92em} .m{display:inline-block;width:4.2rem;font-weight:700}
.get{color:#0b6} .post{color:#07c} .delete{color:#c33}
table{border-collapse:collapse;margin:.4rem 0} td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top} nav a{margin-right:1rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _text(value: object) -> str:
    """Escaped prose, its `backquoted` spans as code (the document's own markup)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(value))


def _schema_text(schema: Json) -> str:
    """A short reading of a schema: type, enum, bounds, default, or the referenced name."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    parts = [str(schema.get("type", "any"))]
    if "enum" in schema:
        parts.append(" | ".join(map(str, schema["enum"])))
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("pattern", "~")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "default" in schema:
        parts.append(f"default {schema['default']}")
    return ", ".join(parts)


def _parameters(params: list[Json]) -> str:
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(p['name'])}</code>{' *' if p.get('required') else ''}</td>"
        f"<td>{_e(p['in'])}</td><td>{_e(_schema_text(p.get('schema', {})))}</td>"
        f"<td>{_text(p.get('description', ''))}</td></tr>"
        for p in params
    )
    return f"<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>{rows}</table>"


def _responses(responses: Json) -> str:
    rows = "".join(
        f"<tr><td>{_e(status)}</td><td>{_text(r.get('description', ''))}</td>"
        f"<td>{_e(', '.join(r.get('content', {})))}</td></tr>"
        for status, r in responses.items()
    )
    return f"<table><tr><th>status</th><th>meaning</th><th>media types</th></tr>{rows}</table>"


def _operation(method: str, path: str, op: Json) -> str:
    body = op.get("requestBody", {}).get("content", {})
    body_html = f"<p>Body: {_e(', '.join(body))}</p>" if body else ""
    return (
        f"<details><summary><span class='m {method}'>{method.upper()}</span>"
        f"<code>{_e(path)}</code> — {_text(op.get('summary', ''))}</summary>"
        f"<p>{_text(op.get('description', ''))}</p>{_parameters(op.get('parameters', []))}"
        f"{body_html}{_responses(op['responses'])}</details>"
    )


def _by_tag(doc: Json) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {t["name"]: [] for t in doc.get("tags", [])}
    for path, item in doc["paths"].items():
        for method in _METHODS:
            if method in item:
                tag = item[method].get("tags", ["other"])[0]
                sections.setdefault(tag, []).append(_operation(method, path, item[method]))
    return sections


def render_page(doc: dict[str, Any]) -> str:
    """The whole page for ``doc``."""
    info = doc["info"]
    descriptions = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    sections = _by_tag(doc)
    nav = "".join(f"<a href='#{_e(tag)}'>{_e(tag)}</a>" for tag in sections)
    body = "".join(
        f"<h2 id='{_e(tag)}'>{_e(tag)}</h2><p>{_text(descriptions.get(tag, ''))}</p>{''.join(ops)}"
        for tag, ops in sections.items()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(info['title'])} API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(info['title'])} {_e(info['version'])}</h1>"
        f"<p>{_text(info.get('description', ''))}</p><p>Machine-readable: "
        f"<a href='openapi.json'>openapi.json</a> (OpenAPI {_e(doc['openapi'])})</p>"
        f"<nav>{nav}</nav>{body}</body></html>"
    )
