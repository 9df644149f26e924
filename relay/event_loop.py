"""The event loop the daemon and its receiving processes run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .config import ConfigError

EVENT_LOOP_VARIABLE = "POSTERN_EVENT_LOOP"  # "asyncio" runs the standard loop, e.g. to compare it with uvloop


def choose_event_loop(setting: str | None) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The event loop to run on, from POSTERN_EVENT_LOOP: its name and a factory (None: asyncio's own).

    uvloop (libuv underneath) is the default where it is installed: its loop turn is in C, which took
    about a sixth off the CPU per message when one client sends at a time, and made no clear change
    with 20 (docs/performance.md, "Event loop"). "asyncio" keeps the standard loop, to compare the two
    or to rule uvloop out; "uvloop" insists on it. Anything else is refused: a misspelt setting must
    not quietly run the other loop."""
    wanted = (setting or "").strip().lower()
    if wanted not in ("", "asyncio", "uvloop"):
        raise ConfigError([f"{EVENT_LOOP_VARIABLE}={setting!r}: expected asyncio or uvloop"])
    if wanted == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError([f"{EVENT_LOOP_VARIABLE}=uvloop, but uvloop is not installed"]) from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Which loop really runs, uvloop or asyncio's own, for the startup log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
