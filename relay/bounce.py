"""Delivery status notifications (RFC 3461, 3464): failed, delayed and relayed notices, as Postfix sends them.

A notice is built as bytes, never through a parser that could refuse what it is given:
the returned original may carry raw 8-bit header text, and a next hop's reply any
characters at all. The original goes back whole as message/rfc822 (RET=FULL or no RET,
up to Postfix's bounce_size_limit of 50000 bytes) or its header alone as
text/rfc822-headers (RET=HDRS, or larger), with "Content-Transfer-Encoding: 8bit" when it
is not 7-bit, as Postfix does. Diagnostic text from next hops is masked to printable
ASCII ("?" for anything else) and folded, as Postfix's bounce_notify_util.c does.

Which recipient gets which notice follows the envelope's NOTIFY (RFC 3461): NEVER, or a
list without FAILURE, DELAY or SUCCESS, asks for no notice of that kind; without NOTIFY
failures and delays are reported, successes not.
"""

from __future__ import annotations

import email.utils
import re
import secrets
import textwrap

from . import headers
from .config import MtaConfig
from .printable import printable
from .queue.entry import QueueEntry, Recipient

BOUNCE_SIZE_LIMIT = 50000  # Postfix's bounce_size_limit: larger originals come back as their header only

FAILED = "failed"
DELAYED = "delayed"
RELAYED = "relayed"

_NOTIFY_OF = {FAILED: "FAILURE", DELAYED: "DELAY", RELAYED: "SUCCESS"}
_SUBJECT = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    RELAYED: "Successful Mail Delivery Report",
}
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_SAID = re.compile(r"(?:host \S+ said: )?([2-5]\d\d .*)", re.DOTALL)  # how delivery.py records a reply


def duration_text(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


def wants(entry: QueueEntry, address: str, action: str) -> bool:
    """Did the sender ask for this kind of notice about this recipient (RFC 3461 NOTIFY)?"""
    notify = entry.envelope.notify.get(address)
    if notify is None:
        return action in (FAILED, DELAYED)
    return _NOTIFY_OF[action] in {word.strip().upper() for word in notify.split(",")}


def subject(action: str) -> str:
    return _SUBJECT[action]


def _masked(text: str) -> str:
    """Printable ASCII only: "?" for controls, non-ASCII and undecodable bytes."""
    return printable(text).encode("ascii", "replace").decode("ascii")


def _folded(text: str, indent: str) -> list[str]:
    """A field or line wrapped at 79 columns, continuation lines indented (Postfix's bounce_print_wrap)."""
    return textwrap.wrap(text, 79, subsequent_indent=indent, break_on_hyphens=False) or [text]


def _human_text(config: MtaConfig, entry: QueueEntry, action: str, recipients: list[Recipient]) -> list[str]:
    """Postfix's built-in templates, then one line per recipient."""
    lines = [f"This is the mail system at host {config.hostname}.", ""]
    if action == FAILED:
        lines += ["I'm sorry to have to inform you that your message could not",
                  "be delivered to one or more recipients. It's attached below."]
    elif action == DELAYED:
        queue = config.queue
        lines += ["####################################################################",
                  "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
                  "####################################################################",
                  "",
                  f"Your message could not be delivered for more than {duration_text(queue.delay_warning_time)}.",
                  f"It will be retried until it is {duration_text(queue.maximal_queue_lifetime)} old."]
    else:
        lines += ["Your message was successfully delivered to the destination(s)",
                  "listed below. If the message was delivered to mailbox you will",
                  "receive no further notifications. Otherwise you may still receive",
                  "notifications of mail delivery errors from other systems."]
    if action != RELAYED:
        lines += ["", "For further assistance, please send mail to postmaster.", "",
                  "If you do so, please include this problem report. You can",
                  "delete your own text from the attached returned message."]
    lines += ["", "                   The mail system"]
    for recipient in recipients:
        lines.append("")
        lines += _folded(f"<{recipient.address}>: {_masked(recipient.last_reply)}", "    ")
    return lines


def _address_type(entry: QueueEntry, address: str) -> str:
    return "utf-8" if entry.envelope.smtputf8 and not address.isascii() else "rfc822"


def _diagnostic(reply: str) -> str:
    """The next hop's own reply as `smtp; ...`; the relay's words (no connection, expired) as `X-Postern; ...`."""
    said = _SAID.match(reply)
    if said:
        return f"smtp; {_masked(said.group(1))}"
    return f"X-Postern; {_masked(reply)}"


def _status_fields(config: MtaConfig, entry: QueueEntry, action: str, recipients: list[Recipient]) -> list[str]:
    """The message/delivery-status body, in Postfix's field order."""
    envelope = entry.envelope
    lines = [f"Reporting-MTA: dns; {config.hostname}"]
    if envelope.envid:
        lines.append(f"Original-Envelope-Id: {_masked(envelope.envid)}")
    lines.append(f"X-Postern-Queue-ID: {entry.id}")
    if envelope.sender:
        lines.append(f"X-Postern-Sender: {_address_type(entry, envelope.sender)}; {envelope.sender}")
    lines.append(f"Arrival-Date: {email.utils.formatdate(envelope.arrival, localtime=True)}")
    default_status = {FAILED: "5.0.0", DELAYED: "4.0.0", RELAYED: "2.0.0"}[action]
    for recipient in recipients:
        address = recipient.address
        lines.append("")
        lines.append(f"Final-Recipient: {_address_type(entry, address)}; {address}")
        orcpt = envelope.orcpt.get(address)
        # Postfix always reports Original-Recipient: the ORCPT given, else the address itself.
        lines.append(f"Original-Recipient: {_masked(orcpt)}" if orcpt
                     else f"Original-Recipient: {_address_type(entry, address)}; {address}")
        lines.append(f"Action: {action}")
        lines.append(f"Status: {recipient.dsn or default_status}")
        if recipient.relay:
            lines += _folded(f"Remote-MTA: dns; {_masked(recipient.relay.split('[')[0])}", " ")
        if recipient.last_reply:
            lines += _folded(f"Diagnostic-Code: {_diagnostic(recipient.last_reply)}", " ")
        if action == DELAYED:
            until = envelope.arrival + config.queue.maximal_queue_lifetime
            lines.append(f"Will-Retry-Until: {email.utils.formatdate(until, localtime=True)}")
    return lines


def build_notice(config: MtaConfig, entry: QueueEntry, action: str, recipients: list[Recipient],
                 message: bytes) -> bytes:
    """The notice to the envelope sender as bytes ready to queue (CRLF line ends).

    `action` is FAILED, DELAYED or RELAYED; `message` is the original as queued."""
    envelope = entry.envelope
    headers_only = envelope.ret == "HDRS" or len(message) > BOUNCE_SIZE_LIMIT
    original = headers.section(message) if headers_only else message
    original = f"Return-Path: <{envelope.sender}>\r\n".encode() + original
    human = _human_text(config, entry, action, recipients)
    status = _status_fields(config, entry, action, recipients)
    text = "\r\n".join(human + [""] + status)
    eight_bit = bool(_EIGHT_BIT.search(original)) or not text.isascii() or envelope.body == "8BITMIME"
    encoding = "8bit" if eight_bit else "7bit"
    utf8 = envelope.smtputf8
    boundary = f"{entry.id}.{secrets.token_hex(6)}/{config.hostname}"
    undelivered = "Undelivered " if action != RELAYED else ""
    if utf8:
        original_type = "message/global-headers" if headers_only else "message/global"
    else:
        original_type = "text/rfc822-headers" if headers_only else "message/rfc822"

    head = [
        f"From: MAILER-DAEMON@{config.hostname} (Mail Delivery System)",
        f"To: {envelope.sender}",
        f"Subject: {subject(action)}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: {email.utils.make_msgid(domain=config.hostname)}",
    ]
    if envelope.message_id:
        head += [f"References: {_masked(envelope.message_id)}", f"In-Reply-To: {_masked(envelope.message_id)}"]
    head += [
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {encoding}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={'utf-8' if eight_bit else 'us-ascii'}",
        *([f"Content-Transfer-Encoding: {encoding}"] if eight_bit else []),
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: message/{'global-' if utf8 else ''}delivery-status",
        *([f"Content-Transfer-Encoding: {encoding}"] if eight_bit and utf8 else []),
        "",
        *status,
        "",
        f"--{boundary}",
        f"Content-Description: {undelivered}{'Message Headers' if headers_only else 'Message'}",
        f"Content-Type: {original_type}",
        *([f"Content-Transfer-Encoding: {encoding}"] if eight_bit else []),
        "",
    ]
    top = "\r\n".join(head).encode("utf-8", "replace") + b"\r\n"
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    return top + original + f"\r\n--{boundary}--\r\n".encode()


def build_dsn(config: MtaConfig, entry: QueueEntry, failed: list[Recipient], message: bytes) -> bytes:
    """The non-delivery notice (Action: failed) for these recipients."""
    return build_notice(config, entry, FAILED, failed, message)
