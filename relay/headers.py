"""Reading and editing a message's header section as bytes, with CRLF line ends.

The receiver normalises line ends first, so every line here ends in CRLF, and a
header's folded continuation lines begin with a space or a tab.

Everything here is linear in the size of the header section, however many fields
or continuation lines it has: the fields are found by regular expressions that
never backtrack, and a field is cut or copied once, never grown line by line.
"""

from __future__ import annotations

import functools
import re

# Possessive quantifiers (*+, ++) never give back what they took: one pass, no backtracking.
_LINE = rb"[^\r\n]*+(?:\r\n|\Z)"
_CONTINUATIONS = rb"(?:[ \t][^\r\n]*+(?:\r\n|\Z))*+"
_UNFOLD = re.compile(rb"\r\n[ \t]*+")
# A field with its continuation lines. A line of DATA may be of any length (as in Postfix),
# so a field of one line can pass header_size_limit too.
_FOLDED = re.compile(rb"(?m)^[^ \t\r\n][^\r\n]*+\r\n(?:[ \t][^\r\n]*+\r\n)*+")
# The header fields at the start of a message: a name (printable ASCII but the colon, as
# Postfix's is_header()), optional blanks, a colon, then continuation lines.
_FIELDS = re.compile(rb"(?:[!-9;-~]++[ \t]*+:[^\r\n]*+\r\n(?:[ \t][^\r\n]*+\r\n)*+)*+")


@functools.lru_cache(maxsize=32)
def _named(name: str) -> re.Pattern[bytes]:
    """Every `name:` field (also `name :`), with its continuation lines; group 1 is the value."""
    return re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:(" + _LINE + _CONTINUATIONS + rb")")


def values(headers: bytes, name: str) -> list[str]:
    """Every value of a header, unfolded and trimmed, in the order they appear."""
    return [_UNFOLD.sub(b" ", match.group(1)).strip().decode("ascii", "replace")
            for match in _named(name).finditer(headers)]


def separated(message: bytes) -> bytes:
    """The message with an empty line where its header section ends on a line that is no header.

    Postfix's cleanup does the same (mime_state.c: "force output of one blank line"): a
    message of body text only, or whose headers run into text, keeps that text as body,
    and the headers added in front of it never swallow its first line.
    """
    end = _FIELDS.match(message).end()
    if end == len(message) or message.startswith(b"\r\n", end):
        return message
    return message[:end] + b"\r\n" + message[end:]


def section(message: bytes) -> bytes:
    """The header section, with the CRLF of its last line: up to the first empty line."""
    if message.startswith(b"\r\n"):
        return b""  # no header at all: everything is body
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def strip(message: bytes, header_end: int, name: str) -> tuple[bytes, int]:
    """The message without any `name:` field in its header section; and how many were taken out."""
    kept, removed = _named(name).subn(b"", message[:header_end])
    if not removed:
        return message, 0
    return kept + message[header_end:], removed


def bound(message: bytes, header_end: int, limit: int) -> tuple[bytes, int, int]:
    """Cut every header field longer than `limit` bytes, as Postfix's header_size_limit does.

    The message, the new end of its header section, and how many fields were cut. A field
    is cut at its last line end within the limit when that keeps at least 90% of the limit
    ("nice cut"), else at the limit itself; the text past the cut is dropped. Postfix's
    cleanup does the same (mime_state.c, cleanup_out.c) and accepts the message.
    """
    if header_end <= limit:
        return message, header_end, 0
    cut = 0

    def shorten(match: re.Match[bytes]) -> bytes:
        nonlocal cut
        field = match.group()
        if len(field) <= limit:
            return field
        cut += 1
        end = field.rfind(b"\r\n", 0, limit)
        if end + 2 >= 0.9 * limit:
            return field[: end + 2]
        return field[: limit - 2].rstrip(b" \t\r\n") + b"\r\n"  # no line of blanks: it could end the header

    section = _FOLDED.sub(shorten, message[:header_end])
    if not cut:
        return message, header_end, 0
    return section + message[header_end:], len(section), cut


def field(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("ascii", "replace")
