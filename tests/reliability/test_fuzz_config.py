"""Property-based tests of the configuration validator: whatever YAML could hold, parse_mta answers.

It never raises; it returns a configuration, or problems that each name the field
(`mta.<key>...: ...`, or `mta: ...` for a section that is not a mapping). A configuration
it accepts, written back out as the control API shows it, is accepted again unchanged.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import MAX_DURATION, MTA_FIELDS, MtaConfig, parse_mta, to_dict
from tests.reliability.effort import examples

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
           | st.floats() | st.text(max_size=30)
           | st.sampled_from(["", "0", "1", "5d", "10m", "0s", "-1", "1w", "127.0.0.1:25", "[::1]:25", "0.0.0.0:0",
                              "127.0.0.1/32", "10.0.0.300/8", "::/0", "gw.example.com", "example.com", "-bad-.com",
                              "a" * 300, "[127.0.0.1]", "true", "yes", "ESMTP \x00", "é", "300s", "99999999999999w"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12) | st.sampled_from(["host", "port", "mx", "cert_file"]),
                                        inner, max_size=4), max_leaves=10)
KEYS = sorted(field.name for field in MTA_FIELDS)
SUBKEYS = {"host", "port", "mx", "cert_file", "key_file", "minimal_backoff_time", "maximal_backoff_time",
           "maximal_queue_lifetime", "destination_concurrency_limit", "connect_timeout", "command_timeout"}
SECTIONS = st.dictionaries(st.sampled_from(sorted(SUBKEYS)) | st.text(max_size=8), VALUES, max_size=4)
MTA = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10) | st.integers(),
                      VALUES | SECTIONS, max_size=8) | VALUES


@settings(max_examples=examples(300, 10_000))
@given(mta=MTA)
def test_parse_mta_always_answers_with_a_config_or_named_problems(mta):
    config, problems = parse_mta(mta)
    if config is not None:
        assert problems == [] and isinstance(config, MtaConfig)
    else:
        assert problems, "no config and no problem"
        for problem in problems:
            assert isinstance(problem, str) and problem.startswith(("mta.", "mta:")), problem


@settings(max_examples=examples(150, 5_000))
@given(mta=st.dictionaries(st.sampled_from(KEYS), VALUES | SECTIONS, max_size=8))
def test_an_accepted_config_read_back_from_the_control_api_is_the_same(mta):
    config, _ = parse_mta(mta)
    if config is None:
        return
    again, problems = parse_mta(to_dict(config))
    assert problems == []
    assert again == config


DURATIONS = [("idle_timeout",), ("session_timeout",), ("queue", "minimal_backoff_time"),
             ("queue", "maximal_backoff_time"), ("queue", "maximal_queue_lifetime"),
             ("delivery", "connect_timeout"), ("delivery", "command_timeout")]


@settings(max_examples=examples(150, 5_000))
@given(mta=st.fixed_dictionaries({}, optional={"idle_timeout": SCALARS, "session_timeout": SCALARS,
                                               "queue": SECTIONS, "delivery": SECTIONS}))
def test_an_accepted_duration_fits_a_timer(mta):
    config, _ = parse_mta(mta)
    if config is None:
        return
    for path in DURATIONS:
        value = config
        for name in path:
            value = getattr(value, name)
        assert 0 < value <= MAX_DURATION and float(value) > 0


def test_a_duration_too_long_for_a_timer_is_refused():
    _, problems = parse_mta({"idle_timeout": 10 ** 400, "queue": {"maximal_queue_lifetime": "99999999999w"}})
    assert [p.split(":")[0] for p in problems] == ["mta.idle_timeout", "mta.queue.maximal_queue_lifetime"]
    assert all(p.endswith("is too long: at most 3650d") for p in problems)
