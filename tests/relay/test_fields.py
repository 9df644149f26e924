"""The one walk over field descriptions that both configuration sections use."""

import pytest

from relay.config import check_bool, check_port
from relay.fields import Field, field_paths, parse_section

PORTS = Field("ports", "list", check_port, shape="must be a list of ports")
FIELDS = (
    Field("on", "bool", check_bool),
    Field("level", "choice", choices=("low", "high")),
    PORTS,
    Field("address", "list", check_port, index_one=False),
    Field("hop", "section", fields=(Field("port", "number", check_port),), make=dict),
    Field("by_name", "map", key_check=str.lower, entry=Field("*", "list", check_port)),
)


def test_every_problem_is_named_by_its_field_and_the_good_values_are_kept():
    problems: list[str] = []
    values = parse_section("x", {"on": "yes", "level": "mid", "ports": [25, 0, 587], "address": 0,
                                 "hop": {"port": 99999, "other": 1}, "by_name": {"A": [0]}, "extra": 1}, FIELDS, problems)
    assert problems == [
        "x.on: 'yes' is not true or false",
        "x.level: 'mid' is not one of low, high",
        "x.ports[1]: 0 is not a port number: use 1 to 65535",
        "x.address: 0 is not a port number: use 1 to 65535",  # a lone item of an index_one=False list
        "x.hop.port: 99999 is not a port number: use 1 to 65535",
        "x.hop.other: unknown key; known keys are port",
        "x.by_name.A[0]: 0 is not a port number: use 1 to 65535",
        "x.extra: unknown key; known keys are on, level, ports, address, hop, by_name",
    ]
    assert values == {"ports": (25, 587), "address": (), "hop": {}, "by_name": {"a": ()}}


def test_lists_and_mappings_of_the_wrong_shape_and_no_value():
    problems: list[str] = []
    values = parse_section("x", {"ports": {"a": 1}, "hop": [1], "address": None}, FIELDS, problems)
    assert problems == ["x.ports: must be a list of ports", "x.hop: must be a mapping of keys to values"]
    assert values == {"address": ()}
    assert parse_section("x", "text", FIELDS, problems, "must be a mapping such as {on: true}") is None
    assert problems[-1] == "x: must be a mapping such as {on: true}"


def test_a_choice_checks_its_own_choices_and_a_kind_must_be_known():
    level = FIELDS[1]
    assert level.check("high") == "high"
    with pytest.raises(ValueError):
        level.check(True)
    with pytest.raises(ValueError, match="kind 'string' is not one of"):
        Field("name", "string")


def test_the_paths_a_tool_walks_open_sections_and_maps():
    assert field_paths(FIELDS) == [(("on",), False), (("level",), False), (("ports",), True), (("address",), True),
                                   (("hop", "port"), False), (("by_name", "*"), True)]
