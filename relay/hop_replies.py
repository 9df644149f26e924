"""A next hop's replies and failures, in the words Postfix's smtp client logs and returns.

Delivery and recipient verification both talk to next hops; these say what a reply
or a broken connection means, for the log, the queue and the sender's notice.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl

import aiosmtplib

_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def dsn_of(code: int, message: str) -> str:
    """The enhanced status code a reply starts with, when it agrees with the reply code; else X.0.0."""
    match = _DSN.match(message)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return f"{str(code)[0]}.0.0"


def one_line(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


def lost_text(error: BaseException, relay: str, stage: str) -> str:
    """Postfix's words for a connection that broke in the middle of a conversation."""
    if isinstance(error, (asyncio.TimeoutError, aiosmtplib.SMTPTimeoutError)):
        return f"conversation with {relay} timed out while {stage}"
    return f"lost connection with {relay} while {stage}"


def reason_of(error: BaseException) -> str:
    """Postfix-style short reason: 'Connection refused' rather than a wrapped exception's text."""
    for candidate in (error, error.__cause__, error.__context__):  # an SSLError's errno is OpenSSL's, not the OS's
        if isinstance(candidate, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {candidate.verify_message or candidate}"
        if isinstance(candidate, ssl.SSLError):
            return candidate.reason or str(candidate)
    for candidate in (error.__cause__, error.__context__, error):
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno)
    if isinstance(error, (asyncio.TimeoutError, aiosmtplib.SMTPTimeoutError)):
        return "Connection timed out"
    return str(error) or error.__class__.__name__
