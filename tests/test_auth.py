"""API keys and OIDC bearer tokens (``tileserver/http/auth.py``) on real server processes:
401 with a challenge for no or bad credentials, 403 for too small a role, open probes and
preflights, key rotation without a restart, token signature/expiry/audience checks, and a
token's studies hiding every other slide."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from serverproc import ServerProcess, free_port

from fixtures import FixtureSet
from tileserver.http.signing import UrlSigner

KEYS = {"reader-key-1": "read", "writer-key-1": "write", "admin-key-1": "admin"}
ISSUER, AUDIENCE = "https://idp.example.test", "tileserver"
SIGNING_KEY = "a-secret-of-at-least-16-chars"


def key_file(path: Path, keys: dict[str, str]) -> Path:
    path.write_text("# key role\n" + "".join(f"{k} {r}\n" for k, r in keys.items()))
    return path


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[tuple[ServerProcess, Path]]:
    work = tmp_path_factory.mktemp("keys")
    keys = key_file(work / "keys.txt", KEYS)
    slides = [fixture_dir["jpeg_bot"].directory, fixture_dir["j2k_lossless"].directory]
    extra = ["--api-keys", str(keys), "--url-signing-key", SIGNING_KEY]
    process = ServerProcess(slides, work, extra_args=extra).start()
    try:
        yield process, keys
    finally:
        process.stop()


def _get(url: str, path: str, key: str | None = None, **kwargs: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.request(str(kwargs.pop("method", "GET")), url + path, headers=headers, timeout=30)


def test_requests_without_a_valid_key_are_refused_with_a_challenge(
    keyed: tuple[ServerProcess, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    url, sid = keyed[0].url, fixture_dir["jpeg_bot"].series_uid
    for path in ("/slides", f"/slides/{sid}/tiles/0/0/0", "/dicomweb/studies", "/"):
        for key in (None, "not-a-key"):
            response = _get(url, path, key)
            assert response.status_code == 401, (path, key)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "error" in response.json()
    assert _get(url, "/healthz").status_code == 200 and _get(url, "/readyz").status_code == 200
    preflight = httpx.options(
        url + "/slides",
        headers={"origin": "https://viewer.test", "access-control-request-method": "GET"},
    )
    assert preflight.status_code == 204


def test_roles_read_write_admin(
    keyed: tuple[ServerProcess, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    url, sid = keyed[0].url, fixture_dir["jpeg_bot"].series_uid
    tile = f"/slides/{sid}/tiles/0/0/0"
    for _ in range(3):  # the third read comes from the stored-tile chain's fast path
        assert _get(url, tile, "reader-key-1").status_code == 200
    via_header = httpx.get(url + tile, headers={"x-api-key": "reader-key-1"})
    assert via_header.status_code == 200
    assert _get(url, "/cache", "reader-key-1", method="DELETE").status_code == 403
    assert _get(url, "/cache", "writer-key-1", method="DELETE").status_code == 403
    assert _get(url, "/cache", "admin-key-1", method="DELETE").status_code == 200
    assert _get(url, "/metrics", "reader-key-1").status_code == 403
    assert _get(url, "/metrics", "admin-key-1").status_code == 200
    stow = _get(url, "/dicomweb/studies", "reader-key-1", method="POST")
    assert stow.status_code == 403 and "write" in stow.json()["error"]


def test_keys_rotate_by_rewriting_the_file(keyed: tuple[ServerProcess, Path]) -> None:
    process, keys = keyed
    rotated = {k: v for k, v in KEYS.items() if k != "reader-key-1"} | {"reader-key-2": "read"}
    key_file(keys, rotated)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _get(process.url, "/slides", "reader-key-1").status_code == 401:
            break
        time.sleep(0.2)
    assert _get(process.url, "/slides", "reader-key-1").status_code == 401
    assert _get(process.url, "/slides", "reader-key-2").status_code == 200
    key_file(keys, KEYS)  # back as it was, for the tests after this one
    deadline = time.monotonic() + 10
    while _get(process.url, "/slides", "reader-key-1").status_code != 200:
        assert time.monotonic() < deadline, "the restored key file was not reread"
        time.sleep(0.2)


def test_signed_urls_pass_without_a_credential_until_they_expire(
    keyed: tuple[ServerProcess, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    url, sid = keyed[0].url, fixture_dir["jpeg_bot"].series_uid
    other = fixture_dir["j2k_lossless"].series_uid
    signed = httpx.post(
        f"{url}/auth/sign",
        json={"slide": sid, "expires_in": 600},
        headers={"authorization": "Bearer reader-key-1"},
    )
    assert signed.status_code == 200
    query = signed.json()["query"]
    tile = f"/slides/{sid}/tiles/0/0/0"
    for _ in range(3):  # the third from the stored-tile chain, the query notwithstanding
        response = httpx.get(f"{url}{tile}?{query}")
        assert response.status_code == 200
        assert response.headers["cache-control"].startswith("public")
    assert "index" not in response.headers["server-timing"]
    for path in (f"/dzi/{sid}.dzi", f"/slides/{sid}", f"/iiif/3/{sid}/info.json"):
        assert httpx.get(f"{url}{path}?{query}").status_code == 200, path
    assert httpx.get(f"{url}{tile}?{query}&format=png").status_code == 200
    credentialed = _get(url, tile, "reader-key-1")
    assert credentialed.headers["cache-control"].startswith("private")
    refused = [
        f"{tile}?{query[:-2]}xx",  # altered
        f"/slides/{other}/tiles/0/0/0?{query}",  # another slide
        f"/dicomweb/studies?{query}",  # not a slide URL
        f"{tile}?{UrlSigner(SIGNING_KEY).query(sid, 1, now=time.time() - 60)[0]}",  # expired
        f"{tile}?{UrlSigner('another-secret-key-123').query(sid, 60)[0]}",  # another key
    ]
    for path in refused:
        assert httpx.get(url + path).status_code == 401, path
    assert httpx.delete(f"{url}/cache?{query}").status_code == 401  # read-only
    no_slide = httpx.post(
        f"{url}/auth/sign", json={"slide": "nope"}, headers={"authorization": "Bearer reader-key-1"}
    )
    assert no_slide.status_code == 404


def test_sign_url_command_matches_the_server(
    keyed: tuple[ServerProcess, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    done = subprocess.run(
        [sys.executable, "-m", "tileserver.cli", "sign-url", sid, "--expires-in", "60"],
        env={**os.environ, "TILESERVER_URL_SIGNING_KEY": SIGNING_KEY},
        capture_output=True,
        text=True,
        check=True,
    )
    query = done.stdout.strip()
    assert httpx.get(f"{keyed[0].url}/slides/{sid}/tiles/0/0/1?{query}").status_code == 200


# -- OIDC ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """An RSA key of the "issuer" and its JWKS file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path_factory.mktemp("oidc") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    return key, jwks


def token(key: object, **claims: object) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-who", "exp": int(time.time()) + 600}
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def oidc(
    tmp_path_factory: pytest.TempPathFactory,
    fixture_dir: dict[str, FixtureSet],
    signing: tuple[object, Path],
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("oidc-server")
    tree = work / "slides"
    for case in ("jpeg_bot", "j2k_lossless"):
        shutil.copytree(fixture_dir[case].directory, tree / case)
    args = ["--oidc-jwks", str(signing[1]), "--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE]
    process = ServerProcess([tree], work, extra_args=args).start()
    try:
        yield process.url
    finally:
        process.stop()


def test_bearer_tokens_are_checked(oidc: str, signing: tuple[object, Path]) -> None:
    key = signing[0]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _get(oidc, "/slides", token(key, role="read")).status_code == 200
    refused = [
        token(key, role="read", exp=int(time.time()) - 60),  # expired
        token(key, role="read", aud="another-service"),
        token(key, role="read", iss="https://evil.test"),
        token(other, role="read"),  # not the issuer's key
        token(key),  # no role
    ]
    for bad in refused:
        assert _get(oidc, "/slides", bad).status_code == 401
    admin = token(key, role=["read", "admin"])
    assert _get(oidc, "/cache", admin, method="DELETE").status_code == 200
    assert _get(oidc, "/cache", token(key, role="read"), method="DELETE").status_code == 403


def test_a_tokens_studies_hide_every_other_slide(
    oidc: str, signing: tuple[object, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    allowed, hidden = fixture_dir["jpeg_bot"], fixture_dir["j2k_lossless"]
    limited = token(signing[0], role="read", studies=[allowed.study_uid])
    listed = _get(oidc, "/slides", limited).json()["slides"]
    assert [s["id"] for s in listed] == [allowed.series_uid]
    for path in (f"/slides/{hidden.series_uid}", f"/slides/{hidden.series_uid}/tiles/0/0/0"):
        assert _get(oidc, path, limited).status_code == 404
    for path in (f"/dzi/{hidden.series_uid}.dzi", f"/iiif/3/{hidden.series_uid}/info.json"):
        assert _get(oidc, path, limited).status_code == 404
    for _ in range(3):  # never from the fast path for a limited token, and still served
        assert _get(oidc, f"/slides/{allowed.series_uid}/tiles/0/0/0", limited).status_code == 200
    everyone = token(signing[0], role="read")
    assert len(_get(oidc, "/slides", everyone).json()["slides"]) == 2
    studies = _get(oidc, "/dicomweb/studies", limited).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [allowed.study_uid]
    assert len(_get(oidc, "/dicomweb/studies", everyone).json()) == 2
    assert _get(oidc, "/dicomweb/instances", limited).status_code == 200
    instances = _get(oidc, "/dicomweb/instances", limited).json()
    assert {i["0020000D"]["Value"][0] for i in instances} == {allowed.study_uid}
    hidden_paths = (
        f"/dicomweb/studies/{hidden.study_uid}/series",
        f"/dicomweb/studies/{hidden.study_uid}/metadata",
        f"/dicomweb/studies/{hidden.study_uid}/series/{hidden.series_uid}/metadata",
    )
    absent = "1.2.3.999"
    for path in hidden_paths:  # answered exactly as for a study that does not exist
        response = _get(oidc, path, limited)
        nothing = _get(oidc, path.replace(hidden.study_uid, absent), limited)
        assert response.status_code in (200, 204, 404), (path, response.status_code)
        assert response.status_code == nothing.status_code
        assert response.text.replace(hidden.study_uid, absent) == nothing.text
    assert _get(oidc, f"/dicomweb/studies/{hidden.study_uid}/metadata", everyone).status_code == 200


def test_serving_beyond_loopback_without_credentials_warns(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--host", "0.0.0.0"]
    argv += ["--port", str(port), "--catalog", str(tmp_path / "c.sqlite")]
    with subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert "WARNING" in line and "no access check" in line
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_with_an_access_check_cors_origins_must_be_listed(
    keyed: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    """Unset, no page of another origin may read responses; '*' refuses to start."""
    response = httpx.get(
        keyed[0].url + "/slides",
        headers={"authorization": "Bearer reader-key-1", "origin": "https://evil.test"},
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    keys = key_file(tmp_path / "keys.txt", KEYS)
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--api-keys", str(keys)]
    argv += ["--cors-origins", "*", "--port", str(free_port()), "--catalog", str(tmp_path / "c")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--cors-origins must list origins" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_listed_origins_are_allowed_with_an_access_check(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    keys = key_file(tmp_path / "keys.txt", KEYS)
    extra = ["--api-keys", str(keys), "--cors-origins", "https://viewer.test"]
    process = ServerProcess([fixture_dir["jpeg_bot"].directory], tmp_path, extra_args=extra)
    process.start()
    try:
        headers = {"authorization": "Bearer reader-key-1"}
        for origin, allowed in (("https://viewer.test", True), ("https://evil.test", False)):
            response = httpx.get(process.url + "/slides", headers={**headers, "origin": origin})
            got = response.headers.get("access-control-allow-origin")
            assert got == (origin if allowed else None)
    finally:
        process.stop()
