"""The fields table of docs/appliance.md's `network:` section, from the model's own field descriptions
(appliance.network.model.NETWORK_FIELDS, the ones parse_network walks and the console's forms show).

    python -m tests.appliance.network_table            # print the table
    python -m tests.appliance.network_table --write    # rewrite it in docs/appliance.md

The table sits between `<!-- begin network-keys -->` and `<!-- end network-keys -->`; the rest of
the page is written by hand. One row per field: a section's fields under its name (`dns.servers`),
an interface's under `interfaces.NAME` (`.address`). test_network_table.py fails when it is stale.
"""

from __future__ import annotations

import sys

from appliance.network.model import NETWORK_FIELDS
from relay.fields import Field

from ..support.doc_parts import DOCS, replace_part, table_command

DOC = DOCS / "appliance.md"
PART = "network-keys"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(fields: tuple[Field, ...], prefix: str = "") -> list[str]:
    rows = []
    for field in fields:
        key = prefix + field.name
        if field.kind == "section" and not field.doc:
            rows += _rows(field.fields, key + ".")
        elif field.kind == "map" and field.entry is not None and field.entry.kind == "section":
            rows.append(f"| `{key}.NAME` | {_cell(field.words)} |")
            rows += _rows(field.entry.fields, ".")
        else:
            rows.append(f"| `{key}` | {_cell(field.words)} |")
    return rows


def keys_table() -> str:
    return "\n".join(["| key | meaning and rules |", "|---|---|"] + _rows(NETWORK_FIELDS))


def generated(text: str) -> str:
    """`text` (the page) with its network table regenerated."""
    return replace_part(text, PART, keys_table())


def main(argv: list[str] | None = None) -> int:
    return table_command(argv, "tests.appliance.network_table", DOC, PART, keys_table)

if __name__ == "__main__":
    sys.exit(main())
