"""A queued message's body as an admin reads it in the console: the readable text, decoded.

Only the start of the message is read (`PREVIEW_BYTES`), so a 50 MB message costs what a
small one does. The standard library's MIME parser finds the first plain-text part (or an
HTML part when there is none), undoes its transfer encoding and charset, and names every
other part. Nothing here is trusted: undecodable bytes become U+FFFD, and the caller strips
control characters before drawing.
"""

from __future__ import annotations

import email
import itertools
import email.policy
from email.message import EmailMessage

PREVIEW_BYTES = 256 * 1024
PREVIEW_LINES = 200
MAX_PARTS = 50


def _text_of(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset, broken encoding
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def _named(part: EmailMessage) -> str:
    name = part.get_filename()
    return part.get_content_type() + (f' "{name}"' if name else "")


def preview(start: bytes, complete: bool, lines: int = PREVIEW_LINES) -> str:
    """The readable body of a message from its first bytes; `complete` says whether they are all of it."""
    message = email.message_from_bytes(start, policy=email.policy.default)
    parts = [p for p in itertools.islice(message.walk(), MAX_PARTS) if not p.is_multipart()]
    inline = [p for p in parts if p.get_content_disposition() != "attachment"]
    shown = (next((p for p in inline if p.get_content_type() == "text/plain"), None)
             or next((p for p in inline if p.get_content_type() == "text/html"), None))
    out: list[str] = []
    if shown is None:
        out.append("[no text to show]")
    else:
        if shown.get_content_type() == "text/html":
            out.append("[HTML only, shown as its source]")
        text = _text_of(shown).replace("\r\n", "\n").rstrip("\n").split("\n")
        out += text[:lines]
        if len(text) > lines:
            out.append(f"[... {len(text) - lines} more lines]")
    others = [_named(p) for p in parts if p is not shown]
    if others:
        out += [""] + [f"[part: {name}]" for name in others]
    if not complete:
        out.append(f"[the message goes on: only its first {PREVIEW_BYTES // 1024} KiB are read here]")
    return "\n".join(out)
