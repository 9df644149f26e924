"""The envelope line of a queue file: Envelope.to_dict must say exactly what dataclasses.asdict says,
in the same order (queue files written before and after read the same), and share nothing mutable."""

import json
from dataclasses import asdict, fields

from relay.queue.entry import Envelope


def every_field_set() -> Envelope:
    return Envelope(id="0123456789ABC001", sender="älice@example.net", recipients=["bob@example.com", "c@x.org"],
                    arrival=1700000000.25, size=2048, client="client.example.net[192.0.2.1]", helo="client",
                    protocol="UTF8SMTP", subject="Grüße", message_id="<m@x>", body="8BITMIME", smtputf8=True,
                    ret="HDRS", envid="env id", notify={"bob@example.com": "SUCCESS,FAILURE"},
                    orcpt={"c@x.org": "rfc822;c@x.org"}, requiretls=True, tls_report=True)


def test_the_same_fields_values_and_order_as_asdict():
    for envelope in (every_field_set(), Envelope(id="X", sender="", recipients=["a@b"], arrival=0.0, size=0)):
        made = envelope.to_dict()
        assert made == asdict(envelope)
        assert list(made) == [f.name for f in fields(Envelope)]
        assert json.dumps(made) == json.dumps(asdict(envelope))
        assert Envelope(**json.loads(json.dumps(made))) == envelope  # as the queue reads it back


def test_the_dict_shares_no_list_or_dict_with_the_envelope():
    envelope = every_field_set()
    made = envelope.to_dict()
    made["recipients"].append("eve@example.org")
    made["notify"]["eve@example.org"] = "NEVER"
    made["orcpt"].clear()
    assert envelope == every_field_set()
