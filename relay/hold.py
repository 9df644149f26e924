"""Since when each domain has been on migration hold (`mta.paused_domains`).

The configuration says which domains are paused, not since when, and it may change in
three ways (Config.Pause, Config.Apply, an edited file and SIGHUP). So the daemon notes
the moment it first sees each entry, at start and at every reload, in `paused.json` in its
state directory: after a restart a domain paused three days ago still says three days.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .files import atomic_write

log = logging.getLogger("postern/master")


class PausedSince:
    def __init__(self, state_dir: Path | str):
        self.path = Path(state_dir) / "paused.json"
        self.since: dict[str, float] = {}

    def load(self, domains: tuple[str, ...]) -> None:
        """At start: what the file remembers, for the domains still paused."""
        try:
            saved = json.loads(self.path.read_text())
            self.since = {str(d): float(t) for d, t in saved.items()} if isinstance(saved, dict) else {}
        except FileNotFoundError:
            self.since = {}
        except (OSError, ValueError, TypeError) as error:
            log.warning("%s: unreadable, paused domains count from now: %s", self.path, error)
            self.since = {}
        self.update(domains)

    def update(self, domains: tuple[str, ...]) -> None:
        """After each reload: new entries are paused from now, entries no longer listed are forgotten."""
        now = time.time()
        kept = {domain: self.since.get(domain, now) for domain in domains}
        if kept != self.since or (kept and not self.path.exists()):
            self.since = kept
            try:
                atomic_write(self.path, json.dumps(kept, indent=1) + "\n", mode=0o600)
            except OSError as error:
                log.warning("%s: cannot write it: %s", self.path, error)
