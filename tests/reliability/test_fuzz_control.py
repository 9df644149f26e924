"""Property-based tests of the control socket: random bytes and random calls against a real daemon.

Every answer is a Varlink reply (`{"parameters": {...}}`, maybe with `"continues": true`)
or a Varlink error (`{"error": "<interface>.<Name>", "parameters": {...}}`), never
anything else; and after each connection the daemon still answers a plain call.

io.postern.Config.Apply is left out: a random configuration it accepted would make the
daemon listen on port 25 of every address. Its refusals are in tests/relay/test_control_api.py.
"""

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.control.client import ControlClient
from relay.control.methods import METHODS
from tests.reliability.effort import examples
from tests.support.control_socket import raw_exchange, replies

NAMES = sorted(set(METHODS) - {"io.postern.Config.Apply"})
PARAMETER_NAMES = ["id", "ids", "filter", "limit", "cursor", "sort", "reverse", "state", "lines", "mta", "interface",
                   "offset", "domain", "sender", "recipient", "min_age", "max_age", "x"]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
PARAMETERS = st.dictionaries(st.sampled_from(PARAMETER_NAMES), JSON, max_size=4)
CALLS = st.fixed_dictionaries(
    {"method": st.sampled_from(NAMES) | st.text(max_size=40)
     | st.sampled_from(["io.postern.Queue.", "org.varlink.service"])},
    optional={"parameters": PARAMETERS | JSON, "more": st.booleans(), "oneway": st.booleans(),
              "upgrade": st.booleans()},
)
PAYLOADS = st.one_of(
    CALLS.map(lambda call: json.dumps(call).encode() + b"\0"),
    st.lists(CALLS, min_size=2, max_size=4).map(lambda calls: b"".join(json.dumps(c).encode() + b"\0" for c in calls)),
    JSON.map(lambda value: json.dumps(value).encode() + b"\0"),
    st.binary(max_size=300).map(lambda data: data + b"\0"),
    st.binary(max_size=300),  # no terminator: the connection ends mid-request
    CALLS.map(lambda call: json.dumps(call).encode()[: len(json.dumps(call)) // 2]),
)
ERROR_NAME = re.compile(r"^(org\.varlink\.service|io\.postern\.[A-Za-z]+)\.[A-Z][A-Za-z]+$")


def exchange(path: str, payload: bytes) -> list[bytes]:
    data = raw_exchange(path, payload)
    assert data == b"" or data.endswith(b"\0"), f"a reply cut short: {data[-200:]!r}"
    return replies(data)


def assert_varlink_reply(raw: bytes) -> None:
    reply = json.loads(raw)
    assert isinstance(reply, dict), reply
    assert isinstance(reply.get("parameters", {}), dict), reply
    if "error" in reply:
        assert ERROR_NAME.match(reply["error"]), reply
        assert set(reply) <= {"error", "parameters"}, reply
    else:
        assert "parameters" in reply and set(reply) <= {"parameters", "continues"}, reply


def test_random_requests_get_a_reply_or_an_error_and_the_daemon_carries_on(make_relay):
    relay = make_relay(1)  # nothing listens on port 1: mail stays queued for the queue calls to find
    relay.send("alice@example.net", ["bob@example.com", "carol@partner.org"])
    path = str(relay.workdir / "control.sock")

    @settings(max_examples=examples(80, 3000))
    @given(payload=PAYLOADS)
    def one_connection(payload):
        for raw in exchange(path, payload):
            assert_varlink_reply(raw)
        with ControlClient(path, timeout=10) as client:
            assert client.call("io.postern.Control.GetVersion")["api"] == 1

    one_connection()
    assert relay.process.poll() is None
    log = relay.log()
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 1000):][:5000]
