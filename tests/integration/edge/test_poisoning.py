"""Cache-poisoning attempts from the web cache poisoning literature (issue 9 point 4), each against
a real origin that reflects what it receives (request line, every header, the body's length) into a
cacheable answer: unkeyed headers, Host, fat GET, parameter cloaking and unkeyed query parameters,
path spellings, error answers. Harmless means the origin never saw the attacker's input and the
stored object is the one a clean request gets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import Edge, RawConn, build_request, edge, exchange, parse_all

from .edgecheck import assert_hit, config_toml

EVIL = "evil.attacker.example"

# Headers that frameworks and proxies honour to rewrite the host, URL, method or scheme.
UNKEYED = {
    "X-Forwarded-Host": EVIL,
    "X-Host": EVIL,
    "X-Forwarded-Server": EVIL,
    "X-Original-URL": f"/{EVIL}",
    "X-Rewrite-URL": f"/{EVIL}",
    "X-HTTP-Method-Override": "POST",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "PUT",
    "X-Forwarded-Scheme": "nothttps-" + EVIL,
    "X-Forwarded-Proto": "nothttps-" + EVIL,
    "X-Forwarded-Port": "1337",
    "X-Forwarded-Prefix": f"/{EVIL}",
    "Forwarded": f"host={EVIL};proto=http",
    "X-Forwarded-For": "203.0.113.66",
    "X-Real-IP": "203.0.113.66",
    "Origin": f"https://{EVIL}",
    "Cookie": f"session={EVIL}",
    "Accept-Language": EVIL,
}


@dataclass
class Reflector:
    """The origin: answers 200 (or ``status_for`` a path) with a JSON reflection, max-age 600."""

    seen: list[dict] = field(default_factory=list)
    status_for: dict[str, int] = field(default_factory=dict)
    url: str = ""

    def requests(self, path_prefix: str) -> list[dict]:
        return [r for r in self.seen if r["target"].startswith(path_prefix)]


def _handler(refl: Reflector) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body_in = self.rfile.read(n) if n else b""
            seen = {
                "method": self.command,
                "target": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body_in.decode("latin-1"),
            }
            refl.seen.append(seen)
            status = refl.status_for.get(self.path.split("?", 1)[0], 200)
            out = json.dumps(seen).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("Cache-Control", "public, max-age=600")
            self.end_headers()
            self.wfile.write(out)

        do_GET = _answer
        do_HEAD = _answer
        do_POST = _answer

    return H


@pytest.fixture(scope="module")
def reflector() -> Iterator[Reflector]:
    refl = Reflector()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(refl))
    srv.daemon_threads = True
    refl.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield refl
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def pedge(tmp_path_factory: pytest.TempPathFactory, reflector: Reflector) -> Iterator[Edge]:
    with edge(tmp_path_factory.mktemp("poison"), [reflector.url], config=config_toml()) as e:
        yield e


def _get(e: Edge, target: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    with RawConn(e.port) as c:
        return c.get(target, headers or {})


def _clean_then_check(e: Edge, refl: Reflector, path: str) -> dict:
    """A clean request for ``path``: a hit whose reflection carries nothing of the attacker's."""
    e.wait_stored(path)
    r = _get(e, path)
    assert r.status == 200
    assert_hit(r.headers)
    assert EVIL not in r.body.decode() and "203.0.113.66" not in r.body.decode()
    return json.loads(r.body)


def test_unkeyed_headers_never_reach_the_origin(pedge: Edge, reflector: Reflector) -> None:
    for i, (name, value) in enumerate(UNKEYED.items()):
        path = f"/poison/hdr/{i}.json"
        r = _get(pedge, path, {name: value})
        assert r.status == 200, (name, r.status)
        (seen,) = reflector.requests(path)
        names = {k.lower() for k, _ in seen["headers"]}
        assert name.lower() not in names, name
        assert seen["method"] == "GET" and seen["target"] == path
        assert value not in r.body.decode()
        _clean_then_check(pedge, reflector, path)
        assert len(reflector.requests(path)) == 1


def test_the_origin_gets_a_fixed_header_set(pedge: Edge, reflector: Reflector) -> None:
    """The defence is structural: the upstream request is built from a fixed set, never copied
    from the client's, so a header nobody has heard of yet is stripped as well."""
    path = "/poison/fixed.json"
    _get(pedge, path, {**UNKEYED, "X-Brand-New-Override": EVIL, "Host": EVIL})
    (seen,) = reflector.requests(path)
    names = {k.lower() for k, _ in seen["headers"]}
    assert names <= {"host", "accept", "accept-encoding", "user-agent", "connection"}, names
    host = dict((k.lower(), v) for k, v in seen["headers"])["host"]
    assert host == reflector.url.removeprefix("http://")  # the upstream's, not the client's Host


def test_fat_get_body_is_never_forwarded(pedge: Edge, reflector: Reflector) -> None:
    """A GET with a body (fat GET): the origin gets a bodiless GET, and the body cannot be taken
    for a second request on the connection (no smuggling)."""
    path = "/poison/fat.json"
    body = b"profile=evil&callback=" + EVIL.encode()
    fat = build_request("GET", path, {"Host": "a", "Content-Length": str(len(body))}) + body
    data, _ = exchange(pedge.port, fat + build_request("GET", path, {"Host": "a", "Connection": "close"}))
    first, second = parse_all(data, ["GET", "GET"])
    assert first.status == second.status == 200
    (seen,) = reflector.requests(path)
    assert seen["body"] == "" and seen["method"] == "GET"
    assert "content-length" not in {k.lower() for k, _ in seen["headers"]}
    assert EVIL not in first.body.decode() and first.body == second.body


def test_parameter_cloaking_and_unkeyed_parameters(pedge: Edge, reflector: Reflector) -> None:
    """The origin is asked for exactly the cache key: unkeyed parameters (utm_*, callback, a
    ``;``-cloaked ``profile``) never reach it, so they cannot change what is stored under the key."""
    base = "/poison/cloak.json"
    for target in (
        f"{base}?utm_content=x;profile=evil",
        f"{base}?callback={EVIL}",
        f"{base}?utm_source=1&callback=alert(1)",
    ):
        r = _get(pedge, target)
        assert r.status == 200 and EVIL not in r.body.decode() and "alert" not in r.body.decode()
    assert [s["target"] for s in reflector.requests(base)] == [base]  # one fetch, no query
    # A keyed parameter is forwarded and keyed; duplicates stay in the key, so a clean request
    # never gets the answer to the duplicated one.
    r = _get(pedge, f"{base}?profile=hd&profile=evil")
    assert json.loads(r.body)["target"] == f"{base}?profile=hd&profile=evil"
    clean = _get(pedge, f"{base}?profile=hd&utm_x=1;profile=evil")
    assert json.loads(clean.body)["target"] == f"{base}?profile=hd"


@pytest.mark.parametrize(
    "spelling",
    [
        "/poison/norm/a/b.json",
        "/poison/norm/a/./b.json",
        "/poison//norm///a/b.json",
        "/poison/norm/x/../a/b.json",
        "/poison/%6Eorm/%61/b.json",
        "/poison/norm/a/b%2Ejson",
        "http://EVIL.attacker.example/poison/norm/a/b.json",
    ],
)
def test_path_spellings_are_one_key(pedge: Edge, reflector: Reflector, spelling: str) -> None:
    r = _get(pedge, spelling, {"Host": EVIL.upper()})
    assert r.status == 200
    assert json.loads(r.body)["target"] == "/poison/norm/a/b.json"
    assert [s["target"] for s in reflector.requests("/poison/norm/")] == ["/poison/norm/a/b.json"]


@pytest.mark.parametrize("status", [404, 500, 503])
def test_error_answers_are_not_stored(pedge: Edge, reflector: Reflector, status: int) -> None:
    """An error the origin marks cacheable for 10 minutes is relayed, not stored: once the origin
    recovers the next request gets the real object (a CPDoS attempt that provokes an error fails)."""
    path = f"/poison/err/{status}.json"
    reflector.status_for[path] = status
    r = _get(pedge, path, {"X-Oversized-Header": "x" * 4000})
    assert r.status == status
    del reflector.status_for[path]
    r = _get(pedge, path)
    assert r.status == 200
    assert len(reflector.requests(path)) == 2  # the error was not served from the cache
    _clean_then_check(pedge, reflector, path)
