"""The dashboard's pages and assets, without a browser: served, self-contained, token-aware."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("/", "/results", "/talk")


@pytest.fixture
def client(tmp_path: Path):
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        yield c


@pytest.fixture
def token_client(tmp_path: Path):
    app = create_app(Settings(data_dir=tmp_path, token="classroom-secret"))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def page_config(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="lab-config">(.*?)</script>', html, re.S)
    assert m, "the page carries its config"
    return json.loads(m.group(1))


def test_pages_are_served_with_their_config(client: TestClient) -> None:
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        config = page_config(r.text)
        assert config["auth_required"] is False
        ids = [c["id"] for c in config["clients"]]
        assert {"qemu-img", "nbdcopy", "qemu-2.7", "qemu-4.2"} <= set(ids)
        assert config["spec_defaults"]["delay_write"] == 20.0
    assert 'id="run-form"' in client.get("/").text
    assert 'id="chart"' in client.get("/results").text
    assert 'id="act-title"' in client.get("/talk").text


def test_every_asset_a_page_names_is_served(client: TestClient) -> None:
    for path in PAGES:
        html = client.get(path).text
        for asset in set(re.findall(r'(?:href|src)="(/static/[^"]+)"', html)):
            assert client.get(asset).status_code == 200, asset


def test_script_imports_resolve() -> None:
    """ES modules load each other by relative path, with no bundler to catch a typo."""
    js = ROOT / "static" / "js"
    for f in js.glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', f.read_text()):
            assert (js / name).is_file(), f"{f.name} imports missing {name}"


def test_nothing_is_loaded_from_the_network() -> None:
    """A conference hall may have no network: no CDN, no remote font, no external script."""
    for folder in ("templates", "static"):
        for f in (ROOT / folder).rglob("*"):
            if f.is_file() and f.suffix in {".html", ".js", ".css", ".svg"}:
                text = f.read_text()
                urls = re.findall(r"https?://[^\s\"')]+", text)
                assert [u for u in urls if not u.startswith("http://www.w3.org/")] == [], f


def test_token_mode_tells_the_page_but_not_the_token(token_client: TestClient) -> None:
    html = token_client.get("/").text
    assert page_config(html)["auth_required"] is True
    assert "classroom-secret" not in html
    assert token_client.get("/ui/config").json()["auth_required"] is True


def test_token_check(token_client: TestClient, client: TestClient) -> None:
    assert token_client.post("/ui/token-check").status_code == 401
    assert token_client.post("/ui/token-check", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = token_client.post("/ui/token-check", headers={"Authorization": "Bearer classroom-secret"})
    assert r.status_code == 200 and r.json()["ok"] is True
    assert client.post("/ui/token-check").json() == {"ok": True, "auth_required": False}


def test_pages_stay_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p in PAGES or p.startswith("/ui/")]


def test_run_page_is_served_for_any_id(client: TestClient) -> None:
    r = client.get("/runs/0123abcd")
    assert r.status_code == 200
    assert '/static/js/run.js' in r.text and 'id="run-map"' in r.text


def test_the_form_is_checked_by_the_api_validator_every_field_in_plain_words(client: TestClient) -> None:
    """What the run form sends as it is typed: one problem per wrong field, each a sentence, none dropped."""
    r = client.post("/api/v1/validate", json={"size": "abc", "delay_write": "-5ms", "maxdata": ""})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    errors = {e["loc"][1]: e for e in r.json()["errors"]}
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "size"], ["body", "maxdata"], ["body", "delay_write"]]
    assert {k: e["value"] for k, e in errors.items()} == {"size": "abc", "delay_write": "-5ms", "maxdata": ""}
    assert errors["size"]["message"].startswith("'abc' is not a size") and "Value error" not in r.text
    assert errors["maxdata"]["message"] == "maxdata is empty: type one, such as 256k."
    assert errors["delay_write"]["message"].startswith("'-5ms' is not a delay")
    good = client.post("/api/v1/validate", json={"size": "16M", "delay_write": "4ms"}).json()
    assert good["server"]["size"] == 16 << 20 and good["server"]["delay_write"] == 4.0 and good["text"]["size"] == "16M"


def test_the_pages_have_no_validator_of_their_own(client: TestClient) -> None:
    assert client.post("/ui/check", json={"server": {}}).status_code == 404
    js = "\n".join(p.read_text() for p in (ROOT / "static" / "js").glob("*.js"))
    assert "/ui/check" not in js and "/api/v1/validate" in js


def test_the_scripts_list_no_server_fields_by_hand(client: TestClient) -> None:
    """Which fields exist, and which sit under the filter stack, come from the config (lab.domain.spec)."""
    fields = [f["name"] for f in client.get("/api/v1/config").json()["server_fields"]]
    quoted = "|".join(re.escape(f'"{name}"') for name in fields)
    hand_list = re.compile(rf"\[\s*(?:{quoted})\s*,\s*(?:{quoted})")  # ["kind", "plugin", ...
    for path in ("lab.js", "probe.js", "fields.js", "api.js"):
        text = (ROOT / "static" / "js" / path).read_text()
        assert not hand_list.search(text), f"{path} lists server fields by hand: {hand_list.search(text)[0]}"
