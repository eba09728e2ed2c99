"""Parsing of sizes, delays, patterns and server fields: the errors name the field."""

from __future__ import annotations

import pytest

from lab.domain.layout import parse_pattern
from lab.domain.spec import SpecError, build_spec
from lab.domain.units import format_delay, format_size, parse_delay, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("256k", 262144), ("100M", 100 << 20), ("1G", 1 << 30), (4096, 4096), ("512", 512), ("1.5M", 1572864),
    ("16MiB", 16 << 20),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["-1", -1, "5parsecs", "", "1.3k", "M", True, "nan", "1e9"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(("text", "ms"), [("20ms", 20.0), ("0.5s", 500.0), (5, 5.0), ("0", 0.0), (2.0, 2.0)])
def test_parse_delay(text, ms):
    assert parse_delay(text) == ms


@pytest.mark.parametrize("bad", ["5parsecs", "-3ms", float("nan"), float("inf"), "0.5ms", True, "ms"])
def test_parse_delay_rejects(bad):
    with pytest.raises(ValueError):
        parse_delay(bad)


def test_format_round_trips():
    for n in (512, 4096, 262144, 100 << 20, 3 << 30, 1000):
        assert parse_size(format_size(n)) == n
    assert format_delay(20.0) == "20ms"


def test_patterns():
    assert parse_pattern("alternate:1M", 4 << 20) == [(0, 1 << 20), (2 << 20, 1 << 20)]
    assert parse_pattern("alternate:1M:3M", 8 << 20) == [(0, 1 << 20), (4 << 20, 1 << 20)]
    assert parse_pattern("full", 8192) == [(0, 8192)]
    assert parse_pattern("empty", 8192) == []
    # a trailing partial data extent is clipped to the image
    assert parse_pattern("alternate:3M", 4 << 20) == [(0, 3 << 20)]
    for bad in ("zigzag", "alternate:1000", "alternate:", "alternate:1M:2M:3M"):
        with pytest.raises(ValueError):
            parse_pattern(bad, 4 << 20)


def test_defaults_are_the_talks():
    s = build_spec({})
    assert (s.zeromode, s.fastzeromode, s.size, s.pattern, s.maxdata, s.delay_write, s.delay_zero) == (
        "none", "default", 100 << 20, "alternate:1M", 262144, 20.0, 5.0)
    assert s.noextents


@pytest.mark.parametrize(("raw", "field"), [
    ({"zeromode": "bogus"}, "zeromode"),
    ({"fastzeromode": "fast"}, "fastzeromode"),
    ({"size": "-1"}, "size"),
    ({"size": "100T"}, "size"),
    ({"size": True}, "size"),
    ({"delay_write": "5parsecs"}, "delay_write"),
    ({"delay_zero": "2h"}, "delay_zero"),
    ({"maxdata": "1"}, "maxdata"),
    ({"pattern": "zigzag"}, "pattern"),
    ({"plugin": "../../bin/sh"}, "plugin"),
    ({"wat": 1}, "wat"),
])
def test_build_spec_names_the_bad_field(raw, field):
    with pytest.raises(SpecError) as e:
        build_spec(raw)
    assert e.value.field == field
    assert field in str(e.value)
