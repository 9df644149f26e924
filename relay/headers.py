"""Reading and editing a message's header section as bytes, with CRLF line ends.

The receiver normalises line ends first, so every line here ends in CRLF, and a
header's folded continuation lines begin with a space or a tab.
"""

from __future__ import annotations

import re


def _fields(headers: bytes) -> list[bytes]:
    """The header section split into whole fields, each with its continuation lines and final CRLF."""
    fields: list[bytes] = []
    for line in headers.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower() if b":" in field else b""


def values(headers: bytes, name: str) -> list[str]:
    """Every value of a header, unfolded and trimmed, in the order they appear."""
    wanted = name.lower().encode()
    found = []
    for field in _fields(headers):
        if _name(field) == wanted:
            value = field.split(b":", 1)[1]
            found.append(re.sub(rb"\r\n[ \t]*", b" ", value).strip().decode("ascii", "replace"))
    return found


def strip(message: bytes, header_end: int, name: str) -> tuple[bytes, int]:
    """The message without any `name:` field in its header section; and how many were taken out."""
    wanted = name.lower().encode()
    kept, removed = [], 0
    for field in _fields(message[:header_end]):
        if _name(field) == wanted:
            removed += 1
        else:
            kept.append(field)
    if not removed:
        return message, 0
    return b"".join(kept) + message[header_end:], removed


def field(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("ascii", "replace")
