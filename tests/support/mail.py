"""Messages for tests to send, and reading what came back: Message-IDs and RFC 3464 reports."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import Message


def make_message(message_id: str, subject: str = "test", body: str = "hello") -> bytes:
    return (f"From: alice@example.net\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\r\n{body}\r\n").encode()


def message_id(content: bytes) -> str:
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    return (parsed["Message-ID"] or "").strip().strip("<>")


@dataclass
class Dsn:
    message: Message
    per_message: Message
    recipients: list[Message]
    human: str
    original_headers: str
    original: bytes = b""  # the returned part as it came, whole message or header only


def read_dsn(content: bytes) -> Dsn:
    """Split a delivery status notification into its parts; fails the test if it is not one."""
    message = email.message_from_bytes(content, policy=email.policy.default)  # header values unfolded
    assert message.get_content_type() == "multipart/report", message.get_content_type()
    assert message.get_param("report-type") == "delivery-status"
    human, status, headers = message.get_payload()
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() in ("text/rfc822-headers", "message/rfc822")
    blocks = status.get_payload()
    original = returned_part(content, message.get_boundary())
    return Dsn(message, blocks[0], blocks[1:], human.get_payload(decode=True).decode(),
               original.partition(b"\r\n\r\n")[0].decode("utf-8", "replace"), original)


def returned_part(content: bytes, boundary: str) -> bytes:
    """The report's third part (the original or its header) byte for byte, without its MIME header."""
    parts = content.split(b"\r\n--" + boundary.encode())
    assert len(parts) == 5 and parts[4].startswith(b"--"), "not three parts and a closing boundary"
    return parts[3].partition(b"\r\n\r\n")[2]
