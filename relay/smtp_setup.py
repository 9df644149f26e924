"""aiosmtpd's per-connection set-up, with its scans of the classes done once per class.

aiosmtpd 1.4.6's `SMTP.__init__` finds the session's `smtp_*` and `auth_*` methods and
the handler's `handle_*` hooks with `dir()` and `inspect.getmembers` (which reads every
attribute, properties included), and reads the EHLO hook's signature, on every
connection: 480 µs of the 490 µs a connection's protocol object cost, about a tenth
of the relay's CPU per message with one connection per message. The names it finds
depend only on the classes, so `set_up` finds them once per (session class, handler
class) and then only binds them to the new connection; everything else is what
aiosmtpd's `__init__` does, for the arguments Postern gives it. The `smtp_*` commands
are not bound at all: the session's command loop looks them up in its class's table
(relay/smtpd.py), so the session has no `_smtp_methods` of its own.

It mirrors that one version: with any other aiosmtpd, `set_up` calls aiosmtpd's own
`__init__` (tests/relay/test_smtp_setup.py compares the two attribute by attribute).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl
from typing import Any

import aiosmtpd
import aiosmtpd.smtp as aiosmtpd_smtp
from aiosmtpd.smtp import CALL_LIMIT_DEFAULT, SMTP, _AuthMechAttr, login_always_fail, make_loop

MIRRORED_VERSION = "1.4.6"


class _Names:
    """What aiosmtpd's __init__ looks up by name, for one session class and one handler class."""

    def __init__(self, session: SMTP, handler: Any):
        # (mechanism, attribute, found on the session rather than the handler), in getmembers' order
        self.auth = [
            (getattr(method, "__auth_mechanism_name__", name.replace("auth_", "").replace("__", "-")), name,
             owner is session)
            for owner in (session, handler)
            for name, method in inspect.getmembers(owner)
            if name.startswith("auth_")
        ]
        self.hooks = [name for name in dir(handler) if name.startswith("handle_")]
        ehlo = getattr(handler, "handle_EHLO", None)
        if ehlo is None:
            self.ehlo_version = None
        else:
            parameters = len(inspect.signature(ehlo).parameters)
            if parameters not in (4, 5):
                raise RuntimeError("Unsupported EHLO Hook")
            self.ehlo_version = "old" if parameters == 4 else "new"


_names: dict[tuple[type, type], _Names] = {}
def set_up(session: SMTP, handler: Any, *, hostname: str, ident: str, data_size_limit: int | None,
           enable_SMTPUTF8: bool, decode_data: bool, tls_context: ssl.SSLContext | None, timeout: float,
           command_call_limit: dict[str, int] | int | None) -> None:
    """What `SMTP.__init__(session, handler, ...)` does with these arguments (no AUTH, no PROXY)."""
    if aiosmtpd.__version__ != MIRRORED_VERSION:
        SMTP.__init__(session, handler, hostname=hostname, ident=ident, data_size_limit=data_size_limit,
                      enable_SMTPUTF8=enable_SMTPUTF8, decode_data=decode_data, tls_context=tls_context,
                      timeout=timeout, command_call_limit=command_call_limit)
        del session._smtp_methods  # the session class's own table rules (relay/smtpd.py)
        return
    session.__ident__ = ident or aiosmtpd_smtp.__ident__
    try:  # aiosmtpd's make_loop() sets up warnings filters for each call: 2 % of a connection's cost
        session.loop = asyncio.get_running_loop()
    except RuntimeError:  # made outside the event loop
        session.loop = make_loop()
    super(SMTP, session).__init__(
        asyncio.StreamReader(loop=session.loop, limit=session.line_length_limit),
        client_connected_cb=session._cb_client_connected, loop=session.loop)
    session.event_handler = handler
    assert data_size_limit is None or isinstance(data_size_limit, int)
    session.data_size_limit = data_size_limit
    session.enable_SMTPUTF8 = enable_SMTPUTF8
    session._decode_data = decode_data
    session.command_size_limits.clear()
    session.hostname = hostname or socket.getfqdn()
    session.tls_context = tls_context
    if tls_context:
        if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
            aiosmtpd_smtp.log.warning("tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
                                      "this might cause client connection problems")
        elif tls_context.check_hostname:
            aiosmtpd_smtp.log.warning("tls_context.check_hostname == True; "
                                      "this might cause client connection problems")
    session.require_starttls = tls_context and False  # tls_context and require_starttls (False)
    session._timeout_duration = timeout
    session._timeout_handle = None
    session._tls_handshake_okay = True
    session._tls_protocol = None
    session._original_transport = None
    session.session = None
    session.envelope = None
    session.transport = None
    session._handler_coroutine = None
    session._auth_require_tls = True
    session._proxy_timeout = None
    session._authenticator = None
    session._auth_callback = login_always_fail
    session._auth_required = False
    key = (type(session), type(handler))
    names = _names.get(key)
    if names is None:  # the first connection: looked up as aiosmtpd does, at the same point
        names = _names[key] = _Names(session, handler)
    session._auth_methods = {
        mechanism: _AuthMechAttr(getattr(session if own else handler, name), own)
        for mechanism, name, own in names.auth
    }
    if aiosmtpd_smtp.log.isEnabledFor(logging.INFO):  # the daemon logs mail.log's warnings only
        aiosmtpd_smtp.log.info("Available AUTH mechanisms: " + " ".join(
            m + "(builtin)" if impl.is_builtin else m for m, impl in sorted(session._auth_methods.items())))
    session._handle_hooks = {name.replace("handle_", ""): getattr(handler, name) for name in names.hooks}
    session._ehlo_hook_ver = names.ehlo_version
    if command_call_limit is None:
        session._enforce_call_limit = False
    else:
        session._enforce_call_limit = True
        if isinstance(command_call_limit, int):
            session._call_limit_base = {}
            session._call_limit_default = command_call_limit
        else:
            session._call_limit_base = command_call_limit
            session._call_limit_default = command_call_limit.get("*", CALL_LIMIT_DEFAULT)

