"""Queue actions by destination or sender, from anywhere: typed into the command palette (Ctrl+P) as
an admin says them, "retry partner.org", "hold partner.org", "release partner.org", "delete from
alice@example.net", "hold to bob@partner.org". Like `postsuper -h` with a queue ID list made by
hand, but the messages are found for you, the question names how many, and the queue opens on them.
"""

from __future__ import annotations

from textual.command import Hit, Hits, Provider

from .screens.confirm import QUESTIONS, ConfirmScreen

VERBS = {"retry": "Requeue", "requeue": "Requeue", "hold": "Hold", "release": "Release", "delete": "Delete"}
PAGE = 10000  # the control API's largest page


def parse(query: str) -> tuple[str, str, str] | None:
    """'hold partner.org' -> ("Hold", "domain", "partner.org"); None unless it reads as a queue action."""
    words = query.split()
    if len(words) not in (2, 3) or words[0].lower() not in VERBS:
        return None
    verb, rest = VERBS[words[0].lower()], words[1:]
    direction = rest.pop(0).lower() if len(rest) == 2 else "to"
    if direction not in ("to", "from") or not rest[0].strip("<>@"):
        return None
    target = rest[0].strip("<>").lower()
    if direction == "from":
        return verb, "sender", target
    if "@" in target.lstrip("@"):
        return verb, "recipient", target
    return verb, "domain", target.lstrip("@").rstrip(".")


def matches(message: dict, field: str, target: str) -> bool:
    """Exactly this sender, recipient or recipient domain (the control API's filters match substrings)."""
    if field == "sender":
        return message["sender"].lower() == target
    addresses = [r["address"].lower() for r in message["recipients"] if r["status"] not in ("sent", "bounced")]
    if field == "recipient":
        return target in addresses
    return any(address.rpartition("@")[2] == target for address in addresses)


class QueueByDestination(Provider):
    async def search(self, query: str) -> Hits:
        parsed = parse(query)
        if parsed is None:
            return
        verb, field, target = parsed
        words = f"{'from' if field == 'sender' else 'to'} {target}"
        shown = f"Queue: {'retry' if verb == 'Requeue' else verb.lower()} all mail {words}"
        yield Hit(100, shown, lambda: self.app.run_worker(self.run(verb, field, target, words), group="queue-by"),
                  text=shown, help="finds the messages and asks first, with their number")

    async def ids(self, field: str, target: str) -> list[str] | None:
        selection = {field: target}
        found: list[str] = []
        offset = 0
        while True:
            answer = await self.app.link.attempt("io.postern.Queue.List", self.failed, filter=selection,
                                                 offset=offset, limit=PAGE)
            if answer is None:
                return None
            found += [m["id"] for m in answer["messages"] if matches(m, field, target)]
            offset += len(answer["messages"])
            if not answer["messages"] or offset >= answer["total"]:
                return found

    def failed(self, words: str) -> None:
        self.app.notify(words, title="Queue", severity="error")

    async def run(self, verb: str, field: str, target: str, words: str) -> None:
        ids = await self.ids(field, target)
        if ids is None:
            return
        if not ids:
            self.app.notify(f"No queued mail {words}.", title="Queue")
            return
        what = f"all {len(ids):,} messages {words}" if len(ids) > 1 else f"the one message {words} ({ids[0]})"

        async def act(yes: bool | None) -> None:
            if not yes:
                return
            answer = await self.app.link.attempt(f"io.postern.Queue.{verb}", self.failed, ids=ids)
            if answer is None:
                return
            done = len(answer["ids"])
            self.app.notify(f"{verb}: {done:,} message{'s' if done != 1 else ''} {words}", title="Queue")
            await self.app.switch_mode("queue")
            self.app.screen.show_filter({"sender" if field == "sender" else "recipient" if field == "recipient"
                                         else "domain": target})

        self.app.push_screen(ConfirmScreen(QUESTIONS[verb].format(what=what)), act)
