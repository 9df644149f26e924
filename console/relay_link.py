"""The console's connection to the relay daemon.

One worker watches the daemon's status stream and posts `RelayStatus` messages;
when the daemon is down, refuses us, or takes the connection but does not answer
within the timeout, it says which and tries again by itself.
Screens make their own calls, each on its own connection, so a slow call never
holds up the status line: `attempt` for one answer, `follow` for a stream. Both
hand a failure to the screen in the words of `relay.control.errors.explain`, the
same words posternctl prints, and never raise it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.css.query import NoMatches
from textual.message_pump import MessagePump

from relay.control.async_client import CALL_TIMEOUT, AsyncControlClient
from relay.control.errors import ControlError, PermissionDenied, Unreachable, explain

from .messages import RelayStatus

RETRY_DELAYS = (0.5, 1, 2, 5)
RELAY_ERRORS = (Unreachable, PermissionDenied, ControlError, ValueError)  # ValueError: a reply that is not JSON


def tell(callback: Callable[[Any], object], value: Any) -> bool:
    """Hand a screen an answer or a failure; False when its widgets are gone (it is closing, or the
    console is), so there is nobody left to tell."""
    try:
        callback(value)
    except NoMatches:
        return False
    return True


class RelayLink:
    def __init__(self, socket_path: str, timeout: float = CALL_TIMEOUT):
        self.socket_path = socket_path
        self.client = AsyncControlClient(socket_path, timeout)

    async def call(self, method: str, **parameters: Any) -> dict:
        return await self.client.call(method, **parameters)

    async def attempt(self, method: str, failed: Callable[[str], object], **parameters: Any) -> dict | None:
        """The call's answer; or None, once `failed` has the failure in the admin's words."""
        try:
            return await self.call(method, **parameters)
        except RELAY_ERRORS as error:
            tell(failed, explain(error))
            return None

    async def follow(self, method: str, answered: Callable[[dict], object], failed: Callable[[str], object],
                     **parameters: Any) -> None:
        """Each answer of a streaming call to `answered`, for as long as the caller runs: a failure goes to
        `failed` in the admin's words, and the call is made again a little later."""
        failures = 0
        while True:
            try:
                async for answer in self.client.stream(method, **parameters):
                    failures = 0
                    if not tell(answered, answer):
                        return
            except RELAY_ERRORS as error:
                if not tell(failed, explain(error)):
                    return
            failures += 1
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])

    async def watch(self, target: MessagePump) -> None:
        """Post the relay's status to target for as long as the console runs."""
        await self.follow(
            "io.postern.Status.Watch",
            lambda update: target.post_message(RelayStatus(update["status"], frozenset(update.get("changed", ())))),
            lambda words: target.post_message(RelayStatus(None, problem=words)))
