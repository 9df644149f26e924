"""Messages the console's services post to its screens."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from .host import HostFacts


@dataclass
class RelayStatus(Message):
    """The relay's latest status, or why there is none (status is None when it is not reachable)."""

    bubble = False

    status: dict | None
    changed: frozenset[str] = frozenset()
    problem: str = ""
    target_is_app: bool = True


@dataclass
class HostFactsRead(Message):
    """The machine's facts, read in a worker thread (`host.read_facts` may wait on the resolver)."""

    facts: HostFacts
