"""Issue 24's reproductions, each answered 4xx: lone surrogates, a bad Origin port, cursors past
SQLite's integers, malformed JSON. (The generated counterpart is tests/test_api_property.py.)"""

from __future__ import annotations

import base64
import json

import pytest
from apiutil import serve

B = "/api/v1"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("hardening"), max_size=1 << 20)


def _nothing_started(api) -> None:
    assert api.get(f"{B}/runs").json()["total"] == 0
    assert api.get(f"{B}/servers").json()["servers"] == []
    assert api.get(f"{B}/sweeps").json()["total"] == 0


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/validate", b'{"pattern":"\\ud800"}', ["body", "pattern"]),
    ("/runs", b'{"label":"\\ud800"}', ["body", "label"]),
    ("/runs", b'{"label":"ok \\udfff and \\ud800\\ud800"}', ["body", "label"]),
    ("/runs", b'{"server":{"\\ud800":1}}', ["body", "server"]),
    ("/sweeps", b'{"name":"\\ud800","rows":[{}]}', ["body", "name"]),
    ("/guesses", b'{"student":"\\ud800","target":"act1-A","prediction":{"duration_s":1}}', ["body", "student"]),
    ("/runs/cancel", b'{"label":"\\ud800"}', ["body", "label"]),
    ("/servers", b'{"pattern":"\\udbff"}', ["body", "pattern"]),
])
def test_a_lone_surrogate_is_a_422_that_names_it(api, path, body, field):
    r = api.post(B + path, content=body, headers=JSON)
    assert r.status_code == 422, (path, r.status_code, r.text[:300])
    problem = r.json()
    assert problem["code"] == "invalid-request"
    assert problem["errors"][0]["loc"][:len(field)] == field, problem
    assert "surrogate" in problem["errors"][0]["message"]
    r.content.decode("utf-8")  # the answer is UTF-8 text: what it echoes is escaped
    _nothing_started(api)


def test_a_surrogate_pair_is_one_character_and_fine(api):
    r = api.post(f"{B}/validate", content=b'{"pattern":"\\ud83d\\ude00"}', headers=JSON)
    assert r.status_code == 422 and r.json()["errors"][0]["value"] == "\U0001f600"  # not a pattern, but text


@pytest.mark.parametrize("origin", ["http://a:abc", "http://[::1", "http://a:99999", "http://a:-1", "http://:80",
                                    "\x7f://\x00", "http://a:1:2"])
def test_an_unparsable_origin_is_refused_not_500(api, origin):
    r = api.delete(f"{B}/servers", headers={"Origin": origin})
    assert r.status_code == 403, (origin, r.status_code, r.text[:200])
    assert r.json()["code"] == "cross-origin"


def _cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    _cursor("-created_at", 2**64, 1), _cursor("-created_at", 1, 2**63), _cursor("-created_at", -(2**63) - 1, 1),
    _cursor("-created_at", 1, -1), _cursor("-created_at", 1e400, 1), _cursor("-created_at", 1.5, 10**40),
])
@pytest.mark.parametrize("path", ["/runs", "/sweeps", "/results.json", "/results.csv"])
def test_a_crafted_cursor_is_a_404_not_500(api, path, cursor):
    r = api.get(B + path, params={"cursor": cursor})
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert r.json()["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("text", [b"{", b'{"client": "qemu-img",}', b"\xff\xfe", b"[" * 10, b'{"a": nul}'])
@pytest.mark.parametrize("path", ["/runs", "/servers", "/sweeps", "/validate", "/runs/cancel", "/guesses"])
def test_malformed_json_is_400(api, path, text):
    r = api.post(B + path, content=text, headers=JSON)
    assert r.status_code == 400, (path, text, r.status_code, r.text[:200])
    assert r.json()["code"] == "bad-request"
    _nothing_started(api)


# -- DNS rebinding: a Host outside LAB_ALLOWED_HOSTS is a 400 before routing --------------------------

@pytest.mark.parametrize(("method", "path"), [("POST", "/runs"), ("GET", "/runs"), ("GET", "/events"),
                                              ("DELETE", "/servers"), ("GET", "/health"), ("GET", "/nowhere")])
def test_a_rebinding_host_is_refused_before_routing(api, method, path):
    headers = {"Host": "rb.evil.example:8000", "Origin": "http://rb.evil.example:8000", **JSON}
    r = api.request(method, B + path, content=b"{}" if method == "POST" else None, headers=headers)
    assert r.status_code == 400, (method, path, r.status_code, r.text[:200])
    assert r.json()["code"] == "unknown-host" and "LAB_ALLOWED_HOSTS" in r.json()["detail"]
    r = api.get("/", headers={"Host": "rb.evil.example"})  # pages too: they show what the API holds
    assert r.status_code == 400
    _nothing_started(api)


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:8000", "[::1]:8000",
                                  "192.168.1.5:8000", "10.0.0.7", "[fe80::1]", "testserver"])
def test_addresses_and_localhost_are_always_answered(api, host):
    """An IP address cannot be rebound (the attack needs a name the attacker's DNS answers), so a
    student typing http://192.168.1.5:8000/ reaches the class's lab with no setting at all."""
    assert api.get(f"{B}/health", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize("host", ["", "evil.example", "localhost.evil.example", "127.0.0.1.evil.example",
                                  "[::1", "a b", "127.0.0.1:x", "0x7f.1"])
def test_odd_hosts_are_refused(api, host):
    assert api.get(f"{B}/health", headers={"Host": host}).status_code == 400, host


def test_a_named_lab_is_listed_in_lab_allowed_hosts(tmp_path):
    from apiutil import client_for

    with client_for(tmp_path / "data", allowed_hosts="lab.school.example, .class.example") as api:
        assert api.get(f"{B}/health", headers={"Host": "lab.school.example:8000"}).status_code == 200
        assert api.get(f"{B}/health", headers={"Host": "pc3.class.example"}).status_code == 200
        assert api.get(f"{B}/health", headers={"Host": "class.example"}).status_code == 200
        assert api.get(f"{B}/health", headers={"Host": "evil.school.example"}).status_code == 400
        assert api.get(f"{B}/health", headers={"Host": "localhost"}).status_code == 200  # still
    with client_for(tmp_path / "data2", allowed_hosts="*") as api:  # behind a proxy that checks Host itself
        assert api.get(f"{B}/health", headers={"Host": "anything.example"}).status_code == 200
