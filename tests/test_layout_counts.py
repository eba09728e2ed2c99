"""lab.domain.layout's arithmetic (check_pattern, pattern_counts) agrees with the extents parse_pattern builds."""

from __future__ import annotations

import math
import random

import pytest

from lab.domain.layout import check_pattern, parse_pattern, pattern_counts


def test_counts_agree_with_the_extents():
    rng = random.Random(1)
    for _ in range(3000):
        size = rng.choice([4096, 1 << 20, 3 << 20, (1 << 20) + 4096 * rng.randint(0, 300),
                           rng.randint(1, 2000) * 4096, 100 << 20])
        pat = rng.choice(["full", "empty", f"alternate:{rng.choice([4, 8, 64, 1024])}k",
                          f"alternate:{rng.choice([4, 64, 256])}k:{rng.choice([4, 12, 1024])}k", "alternate:1M:3M"])
        maxdata = rng.choice([4096, 65536, 262144, 1 << 20])
        extents = parse_pattern(pat, size)
        assert pattern_counts(pat, size, maxdata) == (
            len(extents), sum(n for _, n in extents), sum(math.ceil(n / maxdata) for _, n in extents)), (pat, size)


@pytest.mark.parametrize("pattern", ["alternate:3k", "alternate:1M:5k", "zebra", "alternate:4k"])
def test_check_refuses_what_parse_refuses(pattern):
    size = 1 << 40 if pattern == "alternate:4k" else 1 << 20
    with pytest.raises(ValueError) as checked:
        check_pattern(pattern, size)
    with pytest.raises(ValueError) as parsed:
        parse_pattern(pattern, size)
    assert str(checked.value) == str(parsed.value)
