"""MAIL FROM and RCPT TO paths: the quick reading of the usual ones gives what aiosmtpd's parser gives.

`addresses.simple_path` answers for `<>` and `<dot-atom@dot-atom>` in ASCII and leaves
everything else to aiosmtpd's `_getaddr` (`email`'s RFC 5322 parser). Whenever it
answers, the answer must be the parser's, to the character: generated paths, odd ones
by hand, and real sessions check it. The sessions also pin what the relay says to odd
paths (quoted local parts, source routes, spaces, UTF-8), whichever reader read them.
"""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.addresses import simple_path
from tests.support.raw_smtp import RawSmtp

_parser = SMTP.__new__(SMTP)


def parsed(arg: str):
    """aiosmtpd 1.4.6's own reading: (address, rest), (None, None) when refused, or the exception."""
    try:
        return SMTP._getaddr(_parser, arg)
    except Exception as error:  # "<" alone raises IndexError on Python 3.11's email parser
        return type(error)


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
ODD = ' \t<>@.()[]\\":,;\r\n\x0b\x0c\x00\x7fé\u00a0\u2028用'
PIECES = st.text(alphabet=ATEXT + ".", max_size=12)
TAILS = st.sampled_from(["", " SIZE=10", "\tBODY=8BITMIME", "  SMTPUTF8", " (comment) SIZE=1", "(c)", "SIZE=1",
                         " \x0bX", "\xa0SIZE=1", " ", "\t", " )", " é", ">", "@x", " <a@b>"])
PATHS = st.one_of(
    st.builds("<{}@{}>{}".format, PIECES, PIECES, TAILS),
    st.builds("<{}@{}>{}".format, st.text(alphabet=ATEXT + ODD, max_size=8), PIECES, TAILS),
    st.builds("<{}@{}>{}".format, PIECES, st.text(alphabet=ATEXT + ODD, max_size=8), TAILS),
    st.builds("<>{}".format, TAILS),
    st.text(alphabet=ATEXT + ODD, max_size=30),
    st.builds("{}{}".format, st.text(alphabet=" <>@.(\"", max_size=4), st.text(alphabet=ATEXT + ODD, max_size=20)),
)


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(PATHS)
@example("<user@example.com>")
@example("<user@example.com> SIZE=2048 BODY=8BITMIME")
@example("<a.b.c@d.e.f>\t\tRET=HDRS")
@example("<>")
@example("<> SIZE=10")
@example("<>SIZE=10")
@example("<user@example.com>SIZE=10")
@example("<user@example.com> (note) SIZE=10")
@example("<user@example.com> \x0bSIZE=10")
@example("<user@example.com.>")
@example("<.user@example.com>")
@example("<user.@example.com>")
@example("<us..er@example.com>")
@example("<user@example..com>")
@example("< user@example.com>")
@example("<user @example.com>")
@example("<user@ example.com>")
@example('<"quoted user"@example.com>')
@example('<"user"@example.com>')
@example("<@relay.example:user@example.com>")
@example("<user@[192.0.2.1]>")
@example("<usér@example.com>")
@example("<user@exämple.com>")
@example("<user@exa\u00a0mple.com>")
@example("user@example.com")
@example("<user@example.com")
@example("<")
@example("")
def test_quick_reading_matches_aiosmtpds(arg):
    quick = simple_path(arg)
    if quick is not None:
        assert quick == parsed(arg), arg


@pytest.mark.parametrize("arg, expected", [
    ("<user@example.com>", ("user@example.com", "")),
    ("<User.Name+tag@Sub.Example.COM> SIZE=2048 BODY=8BITMIME", ("User.Name+tag@Sub.Example.COM", "SIZE=2048 BODY=8BITMIME")),
    ("<o'brien@example.com>\tSMTPUTF8", ("o'brien@example.com", "SMTPUTF8")),
    ("<>", ("<>", "")),
    ("<> SIZE=10", ("<>", " SIZE=10")),  # as aiosmtpd's parser: the blank stays after <>
])
def test_the_usual_paths_are_read_quickly(arg, expected):
    assert simple_path(arg) == expected == parsed(arg)


@pytest.mark.parametrize("arg", [
    '<"quoted user"@example.com>', "<@relay.example:user@example.com>", "<user@[192.0.2.1]>", "<usér@example.com>",
    "<user@example.com> (comment)", "<user@example.com.>", "<a..b@example.com>", "user@example.com", "< a@b>",
    "<user@example.com>SIZE=1",
])
def test_odd_paths_go_to_the_full_parser(arg):
    assert simple_path(arg) is None


# --- through a real session -----------------------------------------------------------------


@pytest.mark.parametrize("command, reply", [
    ("MAIL FROM:<user@example.net>", "250 2.1.0 Ok"),
    ("MAIL FROM:<>", "250 2.1.0 Ok"),
    ("MAIL FROM:<> SIZE=100", "250 2.1.0 Ok"),
    ("MAIL FROM:<user@example.net> SIZE=100 BODY=8BITMIME", "250 2.1.0 Ok"),
    ('MAIL FROM:<"john smith"@example.net>', "250 2.1.0 Ok"),
    ("MAIL FROM:<@relay.example.org:user@example.net>", "250 2.1.0 Ok"),
    ("MAIL FROM: <user@example.net>", "250 2.1.0 Ok"),
    ("MAIL FROM:<user@example.net>SIZE=100", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<user@example.net> (comment)", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<user name@example.net>", "250 2.1.0 Ok"),  # RFC 5322's obsolete local part, as before
    ("MAIL FROM:<usér@example.net>", "250 2.1.0 Ok"),
    ("MAIL FROM:<user@exämple.net>", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<user@exämple.net> SMTPUTF8", "250 2.1.0 Ok"),
    ("MAIL FROM:<user@example.net", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:user@example.net>", "501 5.1.7 Bad sender address syntax"),
])
def test_sender_paths_in_a_session(relay, command, reply):
    with RawSmtp(relay.port) as client:
        client.start_session()
        assert client.command(command).splitlines()[-1] == reply


@pytest.mark.parametrize("path, accepted, logged", [
    ("<bob@example.com>", True, "bob@example.com"),
    ("<Bob.Smith+x@EXAMPLE.com>", True, "Bob.Smith+x@EXAMPLE.com"),
    ('<"bob smith"@example.com>', True, '"bob smith"@example.com'),
    ('<"bob"@example.com>', True, "bob@example.com"),
    ("<@relay.example.org:bob@example.com>", True, "bob@example.com"),
    ("<bob@example.com.>", False, None),
    ("<bob@[127.0.0.1]>", True, None),  # taken from my_networks; delivered to that address, not the sink
    ("<bob@example.com> NOTIFY=NEVER", True, "bob@example.com"),
    ("<bob@example.com>NOTIFY=NEVER", False, None),
    ("<>", False, None),
])
def test_recipient_paths_in_a_session(relay, sink, path, accepted, logged):
    """`logged`: the recipient the next hop is given."""
    with RawSmtp(relay.port) as client:
        client.start_session()
        client.command("MAIL FROM:<alice@example.net>")
        reply = client.command(f"RCPT TO:{path}")
        assert reply.startswith("250") == accepted, reply
        if accepted:
            assert client.command("DATA").startswith("354")
            assert client.command("Subject: odd\r\n\r\nbody\r\n.").startswith("250")
    if logged:
        sink.wait_for(1)
        assert sink.recipients() == [logged]
