"""make_divisible, unit choices and budget parsing: table-driven."""

import pytest

from autoslim.budget import format_count, parse_budget
from autoslim.network.units import make_divisible, unit_choices


@pytest.mark.parametrize("value,expected", [(11.2, 16), (6, 8), (12, 16), (33.6, 32), (1280, 1280), (3, 8), (1920, 1920), (36, 40)])
def test_make_divisible(value, expected):
    assert make_divisible(value, 8) == expected


@pytest.mark.parametrize("maximum,kwargs,expected", [
    (96, {}, (16, 24, 32, 40, 48, 56, 64, 80, 88, 96)),
    (16, {}, (8, 16)),
    (10, {"divisor": 1}, tuple(range(1, 11))),
    (96, {"min_ratio": 0.5}, (48, 56, 64, 80, 88, 96)),
    (3, {}, (3,)),
])
def test_unit_choices(maximum, kwargs, expected):
    assert unit_choices(maximum, **kwargs) == expected


@pytest.mark.parametrize("text,expected", [
    ("300M", 300_000_000), ("1.2G", 1_200_000_000), ("450k", 450_000), ("3e8", 300_000_000),
    ("300e6", 300_000_000), ("88012345", 88_012_345), (" 2M ", 2_000_000), (5e6, 5_000_000),
])
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "300X", "-5M", "0", "1.2.3G", "M"])
def test_parse_budget_rejects(text):
    with pytest.raises(ValueError):
        parse_budget(text)


@pytest.mark.parametrize("value,expected", [(300774272, "300.77M"), (4_089_184_256, "4.09G"), (1500, "1.50k"), (12, "12")])
def test_format_count(value, expected):
    assert format_count(value) == expected
