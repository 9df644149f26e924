"""The parameters of MAIL FROM and RCPT TO, read and checked as Postfix's smtpd does.

MAIL takes BODY=7BIT|8BITMIME (RFC 6152), SIZE (RFC 1870), SMTPUTF8 (RFC 6531) and
the DSN parameters RET and ENVID (RFC 3461); RCPT takes NOTIFY and ORCPT. Keywords
are case-insensitive; ENVID and ORCPT are xtext, decoded here and kept as decoded.
Each function returns the values, or raises `Refused` with Postfix's reply for the
first parameter it cannot take, in the order the client wrote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import replies

_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
_UXTEXT_HEX = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")


class Refused(Exception):
    """A parameter the server does not take; `reply` is what the client gets."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


@dataclass
class MailParams:
    body: str = ""  # "", "7BIT" or "8BITMIME"
    size: int = 0
    smtputf8: bool = False
    ret: str = ""  # "", "FULL" or "HDRS"
    envid: str = ""


@dataclass
class RcptParams:
    notify: str = ""  # "", "NEVER" or a comma list of SUCCESS, FAILURE, DELAY
    orcpt: str = ""  # "type;address", decoded


def xtext_decode(text: str) -> str | None:
    """RFC 3461 xtext ("+2B" for "+"), hex digits in either case as Postfix reads them; None if malformed."""
    if "+" in _XTEXT_HEX.sub("", text):
        return None
    return _XTEXT_HEX.sub(lambda match: chr(int(match.group(1), 16)), text)


def uxtext_decode(text: str) -> str | None:
    """RFC 6533 unitext ("\\x{20AC}"), for ORCPT=utf-8;...; None if malformed."""
    try:
        return _UXTEXT_HEX.sub(lambda match: chr(int(match.group(1), 16)), text)
    except ValueError:  # past U+10FFFF
        return None


def wants_smtputf8(params: list[str]) -> bool:
    """Is SMTPUTF8 among the MAIL parameters? Read first, as it decides which addresses are valid."""
    return any(param.upper() == "SMTPUTF8" for param in params)


def mail_params(params: list[str], size_limit: int) -> MailParams:
    found = MailParams(smtputf8=wants_smtputf8(params))
    envid_seen = False
    for param in params:
        keyword, eq, value = param.partition("=")
        keyword = keyword.upper()
        if keyword == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
            found.body = value.upper()
        elif keyword == "SIZE" and eq:
            if not value.isascii() or not value.isdigit():
                raise Refused(replies.BAD_SIZE_SYNTAX)
            found.size = int(value)
        elif param.upper() == "SMTPUTF8":
            continue  # already read
        elif keyword == "RET" and eq:
            if found.ret or value.upper() not in ("FULL", "HDRS"):
                raise Refused(replies.BAD_RET_SYNTAX)
            found.ret = value.upper()
        elif keyword == "ENVID" and eq:
            envid = xtext_decode(value)
            if envid_seen or envid is None or not all(" " <= ch <= "~" or ch == "\t" for ch in envid):
                raise Refused(replies.BAD_ENVID_SYNTAX)
            found.envid, envid_seen = envid, True
        else:
            raise Refused(replies.UNSUPPORTED_OPTION.format(option=param))
    if size_limit and found.size > size_limit:
        raise Refused(replies.MESSAGE_TOO_BIG)
    return found


def rcpt_params(params: list[str]) -> RcptParams:
    found = RcptParams()
    for param in params:
        keyword, eq, value = param.partition("=")
        keyword = keyword.upper()
        if keyword == "NOTIFY" and eq:
            notify = notify_value(value)
            if found.notify or not notify:
                raise Refused(replies.BAD_NOTIFY_SYNTAX)
            found.notify = notify
        elif keyword == "ORCPT" and eq:
            kind, semicolon, coded = value.partition(";")
            address = (uxtext_decode if kind.lower() == "utf-8" else xtext_decode)(coded)
            if found.orcpt or not semicolon or not kind or address is None or "\0" in address:
                raise Refused(replies.BAD_ORCPT_SYNTAX)
            found.orcpt = f"{kind};{address}"
        else:
            raise Refused(replies.UNSUPPORTED_OPTION.format(option=param))
    return found


def notify_value(value: str) -> str:
    """NEVER alone, or SUCCESS, FAILURE and DELAY in any mix (repeats allowed); "" when invalid."""
    words = {word.upper() for word in re.split(r"[,\s]+", value) if word}
    if words == {"NEVER"}:
        return "NEVER"
    if not words or not words <= set(NOTIFY_ORDER):
        return ""
    return ",".join(word for word in NOTIFY_ORDER if word in words)
