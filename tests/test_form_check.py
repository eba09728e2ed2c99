"""lab.domain.spec.check_fields, the one validator of server fields: a whole form at once, each problem named.

The API's POST /api/v1/validate and the dashboard's form are thin over it; build_spec (the CLI,
runs, scenario rows) raises its first problem. These tests pin what a person sees.
"""

from __future__ import annotations

import pytest

from lab.domain import spec
from lab.domain.limits import Limits
from lab.domain.spec import FieldProblem, SpecError, build_spec, check_fields


def problems(raw: dict, **kw) -> dict[str, str]:
    check = check_fields(raw, **kw)
    assert check.spec is None
    return {p.field: p.sentence for p in check.problems}


def test_every_wrong_field_is_named_once_in_the_models_order() -> None:
    raw = {"delay_zero": "2000ms", "zeromode": "bogus", "size": "abc", "maxdata": "", "noextents": "yes",
           "pattern": "alternate:1M", "delay_write": 5}
    check = check_fields(raw)
    assert [p.field for p in check.problems] == ["zeromode", "size", "maxdata", "noextents", "delay_zero"]
    said = {p.field: p.sentence for p in check.problems}
    assert said["zeromode"] == "zeromode must be one of none, emulate, notrim, plugin (got 'bogus')"
    assert said["size"].startswith("'abc' is not a size: ")
    assert said["maxdata"] == "maxdata is empty: type one, such as 256k."
    assert said["noextents"] == "noextents must be true or false (got 'yes')"
    assert said["delay_zero"] == "Delay per zero must be between 0ms and 1000ms (got 2000ms)"


def test_bounds_come_from_the_limits_and_are_all_reported() -> None:
    said = problems({"size": "64M", "maxdata": "128k", "delay_write": "30ms"},
                    limits=Limits(max_size=32 << 20, max_delay_ms=10, min_maxdata=4096, max_maxdata=64 << 10))
    assert said == {
        "size": "Size must be between 1M and 32M and a multiple of 512 bytes (got 64M)",
        "maxdata": "maxdata must be between 4k and 64k and a multiple of 512 bytes (got 128k)",
        "delay_write": "Delay per write must be between 0ms and 10ms (got 30ms)",
    }


def test_the_layout_is_checked_against_a_good_size_only() -> None:
    assert problems({"size": "16M", "pattern": "alternate:6k"}) == {
        "pattern": "'alternate:6k': the data length must be a multiple of 4k (got 6144)"}
    # a wrong size is the problem; the pattern is not checked against it
    assert set(problems({"size": "abc", "pattern": "alternate:6k"})) == {"size"}


def test_rules_between_backend_fields_report_each_field() -> None:
    said = problems({"plugin": "file", "disk_format": "qcow2", "target": "/tmp/x.sock", "destructive": True})
    assert set(said) == {"disk_format", "target", "destructive"}
    assert said["disk_format"] == "qcow2 is served by kind qemu-nbd only."
    assert said["target"] == said["destructive"] == "Only for kind external."
    # together with a wrong number elsewhere on the form
    said = problems({"size": "0", "storage": "tmpfs"})
    assert set(said) == {"size", "storage"}
    assert said["storage"].startswith("The memory plugin keeps its disk in RAM")


def test_a_backend_field_that_does_not_parse_blames_no_other_field() -> None:
    # with kind left at its default (nbdkit, memory), storage would be "wrong"; it is not the person's mistake
    assert problems({"kind": "qemu-nbdd", "storage": "tmpfs"}) == {
        "kind": "kind must be one of nbdkit, qemu-nbd, nbd-server, external (got 'qemu-nbdd')"}


def test_unknown_fields_are_named() -> None:
    assert problems({"sise": "16M"}) == {"sise": "sise is not a server field."}


def test_the_api_takes_only_its_narrow_spellings() -> None:
    assert check_fields({"size": "16 MiB"}).spec is not None  # the CLI's grammar
    assert set(problems({"size": "16 MiB"}, api=True)) == {"size"}
    assert check_fields({"size": "16M"}, api=True).spec.size == 16 << 20


def test_good_fields_give_the_spec() -> None:
    check = check_fields({"zeromode": "plugin", "size": "16M", "delay_zero": "1ms"})
    assert check.problems == ()
    assert check.spec == spec.ServerSpec(zeromode="plugin", size=16 << 20, delay_zero=1.0)


@pytest.mark.parametrize("raw", [
    {"size": "abc", "zeromode": "bogus"},
    {"size": "2G", "pattern": "bogus"},
    {"delay_write": "-1ms", "storage": "tmpfs"},
])
def test_build_spec_raises_the_first_problem_with_the_clis_wording(raw: dict) -> None:
    first = check_fields(raw).problems[0]
    with pytest.raises(SpecError) as e:
        build_spec(raw)
    assert (e.value.field, e.value.message) == (first.field, first.message)
    assert not e.value.message[:1].isupper() or e.value.message.startswith("'")  # "--size: must be ..."


def test_a_sentence_is_a_sentence() -> None:
    assert FieldProblem("size", "must be between 1M and 1G (got 2G)").sentence == \
        "Size must be between 1M and 1G (got 2G)"
    assert FieldProblem("disk_format", "is empty: type one, such as raw").sentence == \
        "disk-format is empty: type one, such as raw."
    assert FieldProblem("storage", "xfs is not available here: no mkfs.xfs").sentence == \
        "xfs is not available here: no mkfs.xfs."  # a value keeps its case
    assert FieldProblem("target", "an external server needs a target").sentence == "An external server needs a target."


def test_the_layers_say_what_sits_under_the_filter_stack() -> None:
    assert spec.fields_on("backend") == ("plugin", "kind", "storage", "disk_format", "target", "destructive",
                                         "disk_init")
    assert spec.fields_on("source") == ("size", "pattern", "source_format")
    assert {r["name"]: r["layer"] for r in spec.field_table()}["kind"] == "backend"


def test_a_run_names_every_wrong_server_field_too(tmp_path) -> None:
    """POST /api/v1/runs and /servers go through build_spec: their 422 lists what check_fields found."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as c:
        r = c.post("/api/v1/runs", json={"client": "qemu-img", "server": {"size": "2G", "delay_write": 5000}})
        assert r.status_code == 422
        assert [(e["loc"], e["value"]) for e in r.json()["errors"]] == [
            (["body", "server", "size"], "2G"), (["body", "server", "delay_write"], 5000)]
        assert r.json()["errors"][0]["message"].startswith("must be between 1M and 1G")
        assert c.get("/api/v1/runs").json()["total"] == 0
