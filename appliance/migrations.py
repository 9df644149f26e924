"""The configuration file's schema, and the migrations between its versions.

`SCHEMA` is the schema this version of Postern reads. A version that changes the meaning or shape of
the configuration file raises it by one and appends a `Migration` whose `forward` turns a document of
the old schema into the new one and whose `backward` turns it back. An update runs the newer
release's migrations forward before it switches; a rollback runs them backward, again with the newer
release's code (the older one does not know the newer schema), before it switches back. Each step is
saved as a new version of the file (`postern-appliance config versions`), so every state is kept.

No schema change has been needed yet: `MIGRATIONS` is empty and every release so far reads schema 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SCHEMA = 1


@dataclass(frozen=True)
class Migration:
    """From schema `to - 1` to schema `to`, and back."""

    to: int
    what: str
    forward: Callable[[dict], dict]
    backward: Callable[[dict], dict]


MIGRATIONS: tuple[Migration, ...] = ()


class MigrationError(Exception):
    pass


def migrate(document: dict, source: int, target: int, migrations: tuple[Migration, ...] = MIGRATIONS) -> dict:
    """The document of schema `source` as a document of schema `target`, one step at a time."""
    known = {migration.to: migration for migration in migrations}
    newest = max([1, *known])
    for schema in (source, target):
        if not 1 <= schema <= newest:
            raise MigrationError(f"schema {schema} is unknown to this version, which knows 1 to {newest}")
    for to in range(source + 1, target + 1):
        document = known[to].forward(document)
    for to in range(source, target, -1):
        document = known[to].backward(document)
    return document
