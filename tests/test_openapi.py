"""``/openapi.json`` describes the API the server really serves, and ``/docs`` shows it.

- the served document is valid OpenAPI 3.1 (openapi-spec-validator);
- its operations are exactly the app's routes (no route undocumented, none invented);
- every documented operation, called on a live server with real ids, answers with a
  documented status and media type, and JSON bodies match their schemas (jsonschema);
- schemathesis fuzzes every operation (a few examples each, with real and generated ids)
  and finds no 5xx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from serverproc import ServerProcess, serving_cases

from fixtures import FixtureSet
from tileserver.http.app import create_app
from tileserver.http.openapi import document
from tileserver.settings import Settings

CASE = "jpeg_bot"
#: Stored through STOW: a study the server does not serve yet (no conflict, no hijack).
STOWED = "j2k_lossless"
SIGNING_KEY = "openapi-test-signing-key"
METHODS = ("get", "post", "delete")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("openapi")
    extra = ["--url-signing-key", SIGNING_KEY]
    with serving_cases(fixture_dir, [CASE], work, extra_args=extra) as process:
        yield process


@pytest.fixture(scope="module")
def served(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    spec: dict[str, Any] = response.json()
    return spec


@pytest.fixture(scope="module")
def ids(server: ServerProcess, fixture_dir: dict[str, FixtureSet]) -> dict[str, str]:
    """Real values for every path parameter the document names."""
    fs = fixture_dir[CASE]
    (slide,) = httpx.get(f"{server.url}/slides").json()["slides"]
    level0 = next(i for i in fs.instances if i.level == 0)
    return {
        "slide_id": slide["id"],
        "study": fs.study_uid,
        "series": fs.series_uid,
        "instance": level0.sop_instance_uid,
        "frames": "1",
        "tag": "7FE00010",
        "level": "0",
        "col": "0",
        "row": "0",
        "version": "3",
        "region": "full",
        "size": "max",
        "rotation": "0",
        "quality_format": "default.jpg",
    }


# -- the document --------------------------------------------------------------------------


def test_served_document_is_valid_openapi_31(served: dict[str, Any], server: ServerProcess) -> None:
    validate(served)
    assert served["openapi"].startswith("3.1")
    assert served["servers"] == [{"url": server.url}]
    assert {k: v for k, v in served.items() if k != "servers"} == document()


def _documented() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document()["paths"].items()
        for method in METHODS
        if method in item
    }


def _routed() -> set[tuple[str, str]]:
    found = set()
    for route in create_app(Settings()).routes:
        methods = getattr(route, "methods", None)
        if not methods:  # the /static mount: files, not operations
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {level:int} -> {level}
        found |= {(m.lower(), path) for m in methods if m != "HEAD"}
    return found


def test_every_route_is_documented_and_nothing_else() -> None:
    assert _documented() == _routed()


def test_docs_page_lists_every_operation(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Nothing loaded from elsewhere: no script, no external stylesheet or image.
    assert "<script" not in page.text
    assert re.search(r"(src|href)=['\"]https?://", page.text) is None
    for method, path in _documented():
        assert f"{method.upper()}</span><code>{path}</code>" in page.text


# -- every operation against a live server ---------------------------------------------------

_NAMES = {
    "/slides/{slide_id}/associated/{name}": "label",
    "/dzi/{slide_id}_files/{level}/{name}": "0_0.jpeg",
}


def _request(
    method: str, path: str, ids: dict[str, str], fs: FixtureSet, stowed: FixtureSet
) -> tuple[str, dict[str, Any]]:
    url = re.sub(r"\{(\w+)\}", lambda m: _NAMES[path] if m[1] == "name" else ids[m[1]], path)
    kwargs: dict[str, Any] = {}
    if path.endswith("/region"):
        kwargs["params"] = {"width": 64, "height": 64}
    if path.endswith("/frames/{frames}"):
        kwargs["headers"] = {"Accept": "multipart/related; type=application/octet-stream"}
    if path.endswith("tiles:batch"):
        kwargs["json"] = {"tiles": [[0, 0, 0]]}
    if path == "/auth/sign":
        kwargs["json"] = {"slide": ids["slide_id"], "expires_in": 60}
    if method == "post" and path.startswith("/dicomweb"):
        boundary = "openapi-test"
        part = stowed.paths[0].read_bytes()
        body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        kwargs["content"] = body + part + f"\r\n--{boundary}--\r\n".encode()
        kwargs["headers"] = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        }
    return url, kwargs


def _check_response(doc: dict[str, Any], op: dict[str, Any], response: httpx.Response) -> None:
    documented = op["responses"].get(str(response.status_code))
    assert documented is not None, (
        f"undocumented status {response.status_code}: {response.text[:200]}"
    )
    media = documented.get("content", {})
    if not media or response.status_code == 304:
        return
    got = response.headers.get("content-type", "").split(";")[0].strip()
    listed = {m.split(";")[0].strip() for m in media}
    assert got in listed, f"{got} not among {sorted(listed)}"
    if got.endswith("json"):
        schema = next(v["schema"] for k, v in media.items() if k.split(";")[0] == got)
        jsonschema.validate(response.json(), {**schema, "components": doc["components"]})


@pytest.mark.parametrize(("method", "path"), sorted(_documented()))
def test_operation_answers_as_documented(
    server: ServerProcess,
    ids: dict[str, str],
    fixture_dir: dict[str, FixtureSet],
    method: str,
    path: str,
) -> None:
    if path == "/dicomweb/studies/{study}" and method == "post":
        ids = {**ids, "study": fixture_dir[STOWED].study_uid}
    url, kwargs = _request(method, path, ids, fixture_dir[CASE], fixture_dir[STOWED])
    response = httpx.request(method, server.url + url, timeout=60, **kwargs)
    assert response.status_code < 400 or path == "/readyz", response.text[:300]
    doc = document()
    _check_response(doc, doc["paths"][path][method], response)


# -- fuzzing -------------------------------------------------------------------------------

#: Requests that once got a 5xx from schemathesis runs with more examples than the bounded
#: one below: each must stay a 4xx.
FOUND_SERVER_ERRORS = [
    # The JPEG encoder refused sides over 65,500 pixels (an uncaught ValueError).
    "/slides/{slide_id}/region?height=1&width=113546",
    "/slides/{slide_id}/region?height=5821518&width=1",
]


@pytest.mark.parametrize("request_path", FOUND_SERVER_ERRORS)
def test_found_server_errors_stay_fixed(
    server: ServerProcess, ids: dict[str, str], request_path: str
) -> None:
    url = server.url + request_path.format(**ids)
    response = httpx.get(url, timeout=60)
    assert 400 <= response.status_code < 500, response.text[:300]


@schemathesis.serializer("multipart/related")
def _raw_body(ctx: Any, value: Any) -> bytes:
    """STOW bodies: the generated value's bytes as they are (the server must refuse them)."""
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(params=["real ids", "generated ids"])
def real_ids(request: pytest.FixtureRequest, ids: dict[str, str]) -> dict[str, str]:
    """Path ids replaced by real ones (reaching the handlers), or left as generated."""
    return ids if request.param == "real ids" else {}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_fuzzing_finds_no_server_error(
    case: schemathesis.Case, server: ServerProcess, real_ids: dict[str, str]
) -> None:
    if case.path_parameters:
        for key in ("slide_id", "study", "series", "instance"):
            if key in case.path_parameters and key in real_ids:
                case.path_parameters[key] = real_ids[key]
    case.call_and_validate(base_url=server.url, checks=[not_a_server_error], timeout=60)
