"""Filters that filter: every list and export of runs takes the same filters as /runs (student,
server_id, contended and every server field, with units), and a query parameter a route does not
know is a 400 naming it, never silently ignored. Numbers as JSON Schema counts them."""

from __future__ import annotations

import csv
import io

import pytest
from apiutil import serve

from lab.domain.run import Run
from lab.domain.spec import build_spec

B = "/api/v1"
RUN_LISTS = ["/runs", "/results.json", "/results.csv"]
PAGING = {"since", "until", "sort", "cursor", "limit"}


def _seed(store) -> list[dict]:
    """Finished runs with every combination the filters tell apart (stored as a run would be)."""
    rows = []
    for i, (student, server_id, contended, size) in enumerate([
        ("Ana", None, False, "8M"), ("Ana", "srv1", True, "16M"), ("Bo", "srv1", None, "8M"),
        ("Bo", None, True, "8M"), (None, None, False, "16M"),
    ]):
        run = Run(client="qemu-img", server=build_spec({"size": size}), student=student, server_id=server_id,
                  status="succeeded", contended=contended, created_at=1000.0 + i, duration_s=1.0 + i)
        store.save_run(run.to_dict())
        rows.append(run.to_dict())
    return rows


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    for client in serve(tmp_path_factory.mktemp("filters")):
        _seed(client.app.state.manager.store)
        yield client


def _ids(api, path: str, **params) -> list[str]:
    r = api.get(B + path, params=params)
    assert r.status_code == 200, (path, params, r.status_code, r.text[:300])
    if path.endswith(".csv"):
        return [row["id"] for row in csv.DictReader(io.StringIO(r.text))]
    body = r.json()
    return [row["id"] for row in body["runs" if "runs" in body else "rows"]]


@pytest.mark.parametrize("path", RUN_LISTS)
@pytest.mark.parametrize(("params", "count"), [
    ({"student": "Ana"}, 2), ({"student": "nobody"}, 0), ({"student": "  Bo "}, 2),
    ({"server_id": "srv1"}, 2), ({"contended": "true"}, 2), ({"contended": "false"}, 3),
    ({"student": "Ana", "contended": "false"}, 1), ({"size": "8M"}, 3), ({"size": "8388608"}, 3),
    ({"size": "16M", "student": "Ana"}, 1), ({"delay_write": "20ms"}, 5), ({"delay_write": "1s"}, 0),
])
def test_every_run_list_filters_alike(api, path, params, count):
    assert len(_ids(api, path, **params)) == count, (path, params)


def test_the_run_lists_take_the_same_filters(api):
    doc = api.get("/openapi.json").json()["paths"]
    names = {p: {q["name"] for q in doc[B + p]["get"]["parameters"] if q["in"] == "query"} - PAGING
             for p in RUN_LISTS}
    assert names["/runs"] == names["/results.json"] == names["/results.csv"], names
    assert {"student", "server_id", "contended", "size", "status", "client", "sweep_id", "label"} <= names["/runs"]


@pytest.mark.parametrize(("path", "param"), [
    ("/runs", "zeromod"), ("/results.json", "studnet"), ("/results.csv", "server"), ("/sweeps", "student_id"),
    ("/health", "x"), ("/runs/abc", "waitt"), ("/scenarios", "name"), ("/guesses", "targets"),
    ("/runs/abc/events", "last_event"),
])
def test_an_unknown_query_parameter_is_a_400_naming_it(api, path, param):
    r = api.get(B + path, params={param: "1", "limit": "5"} if path in RUN_LISTS else {param: "1"})
    assert r.status_code == 400, (path, param, r.status_code, r.text[:200])
    problem = r.json()
    assert problem["code"] == "unknown-parameter" and param in problem["detail"]
    assert problem["errors"] == [{"loc": ["query", param], "message": "not a parameter of this operation",
                                  "code": "unknown_parameter", "value": "1"}]


def test_unknown_parameters_on_a_write_are_refused_before_anything_starts(api):
    r = api.post(f"{B}/runs", params={"dry_run": "1"}, json={"server": {"size": "1M"}})
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["query", "dry_run"]
    assert api.get(f"{B}/runs").json()["total"] == 5


def test_pages_keep_their_own_parameters(api):
    assert api.get("/talk", params={"kiosk": "1", "utm_source": "x"}).status_code == 200


@pytest.mark.parametrize(("value", "ok"), [(16777216.0, True), (16777216, True), ("16M", True), (1.5, False),
                                           (16777216.5, False), (True, False), (1e300, False)])
def test_sizes_are_numbers_as_json_schema_counts_them(api, value, ok):
    r = api.post(f"{B}/validate", json={"size": value})
    if ok:
        assert r.status_code == 200 and r.json()["server"]["size"] == 16 << 20, r.text
    else:
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert err["loc"] == ["body", "size"] and err["value"] == value
        if isinstance(value, float) and value < 1e20:
            assert "whole number" in err["message"], err


@pytest.mark.parametrize("body", [{"server": {"size": 8388608.0, "maxdata": 262144.0}},
                                  {"server": {"size": "8M"}, "queue_depth": 2.0}])
def test_whole_floats_are_integers_in_runs_too(tmp_path, body):
    for api in serve(tmp_path, max_size=16 << 20, queue_size=1, workers=1):
        r = api.post(f"{B}/runs", json={**body, "label": "whole"})
        assert r.status_code == 202, r.text
        assert r.json()["server"]["size"] == 8 << 20
        api.post(f"{B}/runs/{r.json()['id']}/cancel")
