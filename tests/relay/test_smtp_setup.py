"""relay/smtp_setup.py: a connection's protocol object set up as aiosmtpd's own __init__ sets it up.

`set_up` mirrors aiosmtpd 1.4.6's `SMTP.__init__` with its class scans done once; these
tests build one session each way and compare every attribute, so a new aiosmtpd whose
set-up differs fails here before it can change a session's behaviour."""

from __future__ import annotations

import asyncio
import logging
import ssl
import types

import aiosmtpd
import pytest
from aiosmtpd.smtp import SMTP

from relay import smtp_setup
from relay.config import MtaConfig
from relay.receiving import Sessions
from relay.queue.entry import Counters
from relay.smtpd import Receiver, SmtpSession
from tests.support.certs import self_signed


def receiver(tls_context=None) -> Receiver:
    config = MtaConfig()
    return Receiver(config=lambda: config, store=None, counters=Counters(), verify=None, enqueue=None,
                    resolver=None, tls_context=lambda: tls_context)


def arguments(config: MtaConfig, tls_context) -> dict:
    return dict(hostname=config.hostname, ident=config.banner, data_size_limit=config.message_size_limit,
                decode_data=False, enable_SMTPUTF8=True, tls_context=tls_context, timeout=config.idle_timeout,
                command_call_limit=None)


def comparable(value, session):
    """A value with this session's own objects named, so that two sessions' attributes compare."""
    if isinstance(value, types.MethodType):  # a method of the session itself, or of the handler
        return ("method", value.__func__, "session" if value.__self__ is session else value.__self__)
    if isinstance(value, (asyncio.StreamReader, asyncio.Future)):
        return type(value)
    if isinstance(value, dict):
        return [(key, comparable(item, session)) for key, item in value.items()]  # in order: HELP lists them so
    if isinstance(value, tuple):
        return tuple(comparable(item, session) for item in value)
    return value


def built_both_ways(handler: Receiver, tls_context=None) -> tuple[SmtpSession, SmtpSession]:
    """A session set up by set_up, and one by aiosmtpd's __init__ itself."""
    args = arguments(handler.config(), tls_context)
    fast = SmtpSession.__new__(SmtpSession)
    smtp_setup.set_up(fast, handler, **args)
    reference = SmtpSession.__new__(SmtpSession)
    SMTP.__init__(reference, handler, **args)
    return fast, reference


async def test_mirrors_the_installed_aiosmtpd():
    assert aiosmtpd.__version__ == smtp_setup.MIRRORED_VERSION, (
        "a new aiosmtpd: compare its SMTP.__init__ with relay/smtp_setup.py and update MIRRORED_VERSION")


@pytest.mark.parametrize("with_tls", [False, True])
async def test_same_attributes_as_aiosmtpds_own_init(with_tls, tmp_path):
    context = None
    if with_tls:
        cert, key = self_signed(tmp_path, "mx.example.com")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    handler = receiver(context)
    for _ in range(2):  # the first builds the class's names, the second reuses them
        fast, reference = built_both_ways(handler, context)
        # the commands: the class's table, not bound to each session (see the next test)
        assert sorted(vars(fast)) == sorted(set(vars(reference)) - {"_smtp_methods"})
        for name, value in vars(fast).items():
            if name != "_stream_reader_wr":  # a weak reference to the session's own reader
                assert comparable(value, fast) == comparable(vars(reference)[name], reference), name
        assert fast._stream_reader_wr() is not reference._stream_reader_wr()


async def test_each_session_has_its_own_reader():
    handler = receiver()
    first, second = handler.protocol(), handler.protocol()
    assert first._stream_reader_wr() is not second._stream_reader_wr()
    assert first._auth_methods["PLAIN"].method.__self__ is first


async def test_the_command_table_keeps_every_command_and_its_help_text():
    """The session's command loop and HELP read the class's table: the same commands, in the
    same order, with the same syntax texts as aiosmtpd's own table of bound methods."""
    handler = receiver()
    session = Sessions().protocol(handler.protocol)()
    reference = SmtpSession.__new__(SmtpSession)
    SMTP.__init__(reference, handler, **arguments(handler.config(), None))
    assert "_smtp_methods" not in vars(session)
    assert list(session._smtp_methods) == list(vars(reference)["_smtp_methods"])
    for command, function in session._smtp_methods.items():
        original = vars(reference)["_smtp_methods"][command]
        assert function is original.__func__, command
        for attribute in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
            assert getattr(function, attribute, None) == getattr(original, attribute, None), (command, attribute)


async def test_auth_log_line_is_kept(caplog):
    with caplog.at_level(logging.INFO, logger="mail.log"):
        receiver().protocol()
    assert "Available AUTH mechanisms: LOGIN(builtin) PLAIN(builtin)" in caplog.text
