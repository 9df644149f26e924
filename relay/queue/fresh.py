"""Bodies of freshly received messages, kept in memory for their first delivery attempt.

The receiver has the message in memory when it queues it, and the scheduler tries a new
message at once: reading it back from the file it was just written to costs a hand-off to a
worker thread and a read (about a tenth of the delivery side's Python time for a 2 KB
message). The file stays the truth: it was made durable before the client got its 250, and
a body that is not kept here (the budget is spent, the message is held, a later attempt) is
read from it as before. The budget bounds the bytes held here at any moment, however many
messages arrive while delivery is slow.
"""

from __future__ import annotations

# Enough for hundreds of waiting messages of ordinary size; past it, new bodies are read back.
FRESH_BYTES_LIMIT = 32 * 2**20


class FreshBodies:
    """At most `limit` bytes of message bodies, by queue ID; each is handed out once."""

    def __init__(self, limit: int = FRESH_BYTES_LIMIT):
        self.limit = limit
        self.size = 0  # bytes held now
        self._bodies: dict[str, bytes] = {}

    def keep(self, queue_id: str, body: bytes) -> bool:
        """Hold the body if it fits in what is left of the budget; False (and nothing held) if not."""
        if queue_id in self._bodies or self.size + len(body) > self.limit:
            return False
        self._bodies[queue_id] = body
        self.size += len(body)
        return True

    def take(self, queue_id: str) -> bytes | None:
        """The body, now no longer held here; None when it was not kept (read the file instead)."""
        body = self._bodies.pop(queue_id, None)
        if body is not None:
            self.size -= len(body)
        return body

    def __len__(self) -> int:
        return len(self._bodies)
