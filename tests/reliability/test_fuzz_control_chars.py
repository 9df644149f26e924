"""Property-based tests: a control character in any field of the configuration or of a seed is refused,
and the problem names that field.

The fields come from the validators' own lists (`appliance.schema.field_paths`, which each section's
validator provides, and `appliance.provision.field_paths` for what only a seed has), so a field added
later is covered without a change here. A value is any text, a name or an address as an admin would
write it, with control characters put in at random places: C0, DEL, C1 (NEL among them) and Unicode's
line and paragraph separators. No problem line may carry a control character itself: each is one line
naming one field.
"""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import provision, schema
from appliance.schema import validate_document
from relay.addresses import has_control_chars, shown
from tests.reliability.effort import examples

CONTROLS = [chr(code) for code in range(0x20)] + ["\x7f"] + [chr(code) for code in range(0x80, 0xA0)] + ["\u2028", "\u2029"]
PLAUSIBLE = st.sampled_from(["gw.example.com", "example.com", "192.0.2.53", "192.0.2.10/24", "127.0.0.1:25", "5d",
                             "/etc/postern/tls/postern.pem", "ESMTP Postern", "X-Postern-Processed", "eth0", "25",
                             "direct", "self-signed", "a long passphrase", "72f988bf-86f1-41af-91ab-2d7cd011db47"])
# A key the admin chooses, standing for "*" in a path: an interface name, a hosts address, a destination,
# a signing domain.
KEYS_FOR_ANY = {"interfaces": "eth0", "hosts": "192.0.2.25", "tls_policy": "partner.org", "dkim_keys": "example.com"}


@st.composite
def with_controls(draw, text=PLAUSIBLE | st.text(max_size=20)):
    value = draw(text)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(value)))
        value = value[:position] + draw(st.sampled_from(CONTROLS)) + value[position:]
    return value


@st.composite
def hostile_field(draw, paths):
    """(document, the name of the field the problem must start with)."""
    path, is_list = draw(st.sampled_from(paths))
    bad = draw(with_controls())
    keys = list(path)
    if keys[-1] == "*" and not (is_list and draw(st.booleans())):
        keys[-1] = bad  # the key itself is the field: an interface called "eth0\n"
        value, name = {"dhcp": True} if keys[-2] == "interfaces" else ["mail.example.com"], ".".join(keys)
        return _nested(keys, value), name
    keys = [KEYS_FOR_ANY[keys[index - 1]] if key == "*" else key for index, key in enumerate(keys)]
    name = ".".join(keys)
    if is_list and draw(st.booleans()):
        good = draw(st.lists(PLAUSIBLE, max_size=2))
        value = good + [bad]
        name += f"[{len(good)}]"
    else:
        value = bad
    return _nested(keys, value), name


def _nested(keys: list[str], value):
    for key in reversed(keys):
        value = {key: value}
    return value


def assert_refused_by_name(problems: list[str], name: str) -> None:
    assert problems, f"{name}: a control character was accepted"
    assert any(problem.startswith(f"{shown(name)}: ") and "control character" in problem for problem in problems), (
        name, problems)
    for problem in problems:
        assert not has_control_chars(problem), problem


def test_every_section_of_the_configuration_lists_its_fields():
    assert set(schema.FIELDS) == set(schema.SECTIONS)
    paths = {path for path, _ in schema.field_paths()}
    assert {("mta", "hostname"), ("mta", "marker", "header"), ("network", "interfaces", "*"),
            ("network", "dns", "search")} <= paths


@settings(max_examples=examples(400, 20_000))
@given(case=hostile_field(schema.field_paths()))
def test_a_control_character_in_any_configuration_field_is_refused_by_its_name(case):
    document, name = case
    config, problems = validate_document(document)
    assert config is None
    assert_refused_by_name(problems, name)


@settings(max_examples=examples(300, 10_000))
@given(case=hostile_field(provision.field_paths()))
def test_a_control_character_in_any_seed_field_is_refused_by_its_name(case):
    seed, name = case
    with tempfile.TemporaryDirectory(prefix="postern-root-") as root:
        plan, problems = provision.check_seed(seed, root=root, base_dir=root, check_interfaces=False)
    assert plan is None
    assert_refused_by_name(problems, name)
