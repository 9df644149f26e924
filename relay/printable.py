"""Text from clients made safe to log and to show on a terminal, as Postfix's printable() does.

A client chooses its HELO name, its addresses, the commands it sends and the
headers of its mail; a next hop chooses its replies. Written raw, an escape
sequence in any of them would retitle or clear the admin's terminal, or a line
end would forge a log line of its own. Every character that is not printable
(C0 and C1 controls, ESC, DEL, CR, LF, TAB, and Unicode's invisible formatting
such as bidirectional overrides) becomes "?", except those the caller keeps.
"""

from __future__ import annotations


def printable(text: str, keep: str = "", replacement: str = "?") -> str:
    """`text` with every non-printable character but those in `keep` replaced; linear in its length."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else replacement for ch in text)
