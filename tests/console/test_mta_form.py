"""The MTA form model: built from data, so keys the console has no words for still get a field."""

from appliance.store import diff_documents
from console import mta_form
from relay.config import mta_field, parse_mta, to_dict
from tests.support.relay import base_mta


def running() -> dict:
    config, problems = parse_mta(base_mta(2525, 2526))
    assert not problems
    return to_dict(config)


def test_every_key_of_the_running_section_has_a_field_with_help():
    section = running()
    fields = mta_form.fields_of(mta_form.build(section))
    tops = {field.path[0] for field in fields}
    assert tops == set(section)
    assert all(field.help and field.help != mta_form.UNKNOWN_HELP for field in fields)
    kinds = {field.key: field.kind for field in fields}
    assert kinds["relay_domains"] == "list" and kinds["match_subdomains"] == "bool"
    assert kinds["internal_relay.tls"] == "choice" and kinds["queue.maximal_queue_lifetime"] == "duration"
    assert kinds["internal_relay.port"] == "number"


def test_unknown_keys_are_shown_and_sent_back_as_they_are():
    section = {**running(), "future_list": ["a", "b"], "future_map": {"x": [1, {"y": 2}]}, "future_flag": True}
    groups = mta_form.build(section)
    fields = {field.key: field for field in mta_form.fields_of(groups)}
    assert fields["future_list"].kind == "list"
    assert fields["future_map.x"].kind == "yaml" and fields["future_flag"].kind == "bool"
    raws = {key: mta_form.shown(field, _value(section, field.path)) for key, field in fields.items()}
    proposed, problems = mta_form.proposed(section, groups, raws)
    assert not problems
    config, problems = mta_form.validate(proposed)  # the daemon checks keys the console does not know
    assert not problems
    assert diff_documents(section, mta_form.normalized(proposed, config)) == []
    assert mta_form.payload(proposed, config)["future_map"] == {"x": [1, {"y": 2}]}
    raws["future_map.x"] = "[1, {y: 3}"  # broken YAML is a problem at its field, not a crash
    _, problems = mta_form.proposed(section, groups, raws)
    assert mta_form.place(problems[0], set(fields))[0] == "future_map.x"


def test_problems_land_at_their_field_and_lists_say_which_line():
    keys = {"my_networks", "internal_relay.host", "listen"}
    assert mta_form.place("mta.my_networks[1]: '10.0.0.300/8' is not an IP network", keys) == (
        "my_networks", "line 2: '10.0.0.300/8' is not an IP network")
    assert mta_form.place("mta.internal_relay.host: required", keys) == ("internal_relay.host", "required")
    assert mta_form.place("mta.internal_relay: must be a mapping", keys | {"internal_relay"})[0] == "internal_relay"
    assert mta_form.place("something else entirely", keys) == ("", "something else entirely")


def test_the_diff_compares_what_the_relay_will_run():
    section = running()
    groups = mta_form.build(section)
    fields = {field.key: field for field in mta_form.fields_of(groups)}
    raws = {key: mta_form.shown(field, _value(section, field.path)) for key, field in fields.items()}
    raws["queue.maximal_queue_lifetime"] = "120h"  # the same 5 days: no change
    raws["my_networks"] = "127.0.0.1, 10.0.0.0/8"  # 127.0.0.1 is 127.0.0.1/32: only one item added
    raws["idle_timeout"] = "10m"
    proposed, _ = mta_form.proposed(section, groups, raws)
    config, problems = mta_form.validate(proposed)
    assert not problems
    changes = diff_documents(section, mta_form.normalized(proposed, config))
    assert [change.key for change in changes] == ["my_networks", "idle_timeout"]
    assert mta_form.describe(changes[0]) == ["my_networks:", "  + 10.0.0.0/8"]
    assert mta_form.describe(changes[1], "duration") == ["idle_timeout: 5m -> 10m"]
    # Apply writes what the admin set, not every default.
    sent = mta_form.payload(proposed, config)
    assert sent["idle_timeout"] == "10m" and "m365" not in sent and "marker" not in sent
    assert parse_mta(sent)[1] == []


def _value(section, path):
    for part in path:
        section = section[part]
    return section


def test_a_pasted_100_kb_banner_or_marker_and_a_control_character_are_refused_at_their_fields():
    section = running()
    groups = mta_form.build(section)
    fields = {field.key: field for field in mta_form.fields_of(groups)}
    raws = {key: mta_form.shown(field, _value(section, field.path)) for key, field in fields.items()}
    raws["banner"] = "ESMTP " + "x" * 100_000
    raws["marker.header"] = "X-" + "p" * 100_000
    raws["marker.value"] = "gw.example.com\u2028Bcc: everyone@example.com"
    proposed, problems = mta_form.proposed(section, groups, raws)
    assert not problems
    config, problems = mta_form.validate(proposed)
    assert config is None
    placed = dict(mta_form.place(problem, set(fields)) for problem in problems)
    assert placed == {
        "banner": "is 100006 characters long: the greeting with the host name must fit in one 512-octet SMTP "
                  "reply line (at most 200): shorten it",
        "marker.header": "is 100002 characters long: too long for a header name (at most 64): shorten it",
        "marker.value": "contains a control character (\\u2028 at position 15): remove it",
    }


def test_every_field_has_the_relays_own_words_and_choices_the_relay_accepts():
    section = running()
    for field in mta_form.fields_of(mta_form.build(section)):
        spec = mta_field(field.path)
        assert (field.label, field.help) == (spec.label, spec.help)
        if spec.kind == "choice":
            assert field.kind == "choice" and field.choices == spec.choices
        assert all(spec.check(choice) == choice for choice in field.choices)  # what the form offers, the relay takes
    groups = {group.key: group for group in mta_form.build(section) if group.path}
    assert (groups["queue"].title, groups["queue"].help) == (mta_field("queue").label, mta_field("queue").help)


def test_the_delay_warning_is_a_duration_like_the_relay_reads_it():
    # It was a plain number in the form (its check, a duration that may be 0, went unrecognised),
    # so "4h" came back as 14400 in the list of changes.
    section = running()
    groups = mta_form.build(section)
    fields = {field.key: field for field in mta_form.fields_of(groups)}
    assert fields["queue.delay_warning_time"].kind == "duration"
    raws = {key: mta_form.shown(field, _value(section, field.path)) for key, field in fields.items()}
    assert raws["queue.delay_warning_time"] == "0"
    raws["queue.delay_warning_time"] = "4h"
    proposed, _ = mta_form.proposed(section, groups, raws)
    config, problems = mta_form.validate(proposed)
    assert not problems
    changes = diff_documents(section, mta_form.normalized(proposed, config))
    assert [mta_form.describe(change, fields[change.key].kind) for change in changes] == [
        ["queue.delay_warning_time: 0 -> 4h"]]
