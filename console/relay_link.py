"""The console's connection to the relay daemon.

One worker watches the daemon's status stream and posts `RelayStatus` messages;
when the daemon is down, slow or refuses us, it says so and tries again by itself.
Screens make their own calls through `call`, each on its own connection, so a
slow call never holds up the status line.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.message_pump import MessagePump

from relay.control import errors
from relay.control.async_client import AsyncControlClient
from relay.control.client import ControlError, PermissionDenied, Unreachable

from .messages import RelayStatus

RETRY_DELAYS = (0.5, 1, 2, 5)


def explain(error: Exception) -> str:
    """A control-API failure in words a mail admin understands."""
    if isinstance(error, Unreachable):
        return "Relay: not running (no answer on the control socket)"
    if isinstance(error, PermissionDenied):
        return "Relay: permission denied (log in as root or a member of the postern group)"
    if isinstance(error, ControlError):
        p = error.parameters
        if error.name == errors.INVALID_CONFIG:
            return "; ".join(p.get("problems", []))
        if error.name == errors.APPLY_FAILED:
            return f"not applied: {p.get('reason', '')}"
        if error.name == errors.MESSAGE_NOT_FOUND:
            return f"message {p.get('id')} is no longer in the queue"
        if error.name == errors.INVALID_FILTER:
            return f"{p.get('field')}: {p.get('reason')}"
        return f"the relay answered {error.name}"
    return str(error)


class RelayLink:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.client = AsyncControlClient(socket_path)

    async def call(self, method: str, **parameters: Any) -> dict:
        return await self.client.call(method, **parameters)

    async def watch(self, target: MessagePump) -> None:
        """Post the relay's status to target for as long as the console runs."""
        failures = 0
        while True:
            try:
                async for update in self.client.stream("io.postern.Status.Watch"):
                    failures = 0
                    target.post_message(RelayStatus(update["status"], frozenset(update.get("changed", ()))))
            except (Unreachable, PermissionDenied, ControlError, ValueError) as error:
                target.post_message(RelayStatus(None, problem=explain(error)))
            failures += 1
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
