"""The settings table of docs/config.md, from the relay's own field descriptions (relay.config.MTA_FIELDS).

    python -m tests.relay.config_table            # print the table
    python -m tests.relay.config_table --write    # rewrite it in docs/config.md

The table sits between `<!-- begin keys -->` and `<!-- end keys -->`; the rest of the page is
written by hand. One row per field, its default from MtaConfig() shown as the file would hold
it; a section with words of its own (a relay host) is one row, its fields described in the
prose below the table. test_config_table.py fails when the table is stale.
"""

from __future__ import annotations

import sys
from typing import Any

from relay.config import MTA_FIELDS, MtaConfig, duration_text, to_dict
from relay.fields import Field

from ..support.doc_parts import DOCS, replace_part, table_command

DOC = DOCS / "config.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(value: Any, kind: str = "") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "duration" and isinstance(value, int) and value > 0:
        return duration_text(value)
    if isinstance(value, str):
        return value if value and value.strip() == value and not value[0] in "[{\"'" else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(f'"{item}"' if isinstance(item, str) else str(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_value(item)}" for key, item in value.items()) + "}"
    return str(value)


def _rows(fields: tuple[Field, ...], defaults: dict, prefix: str = "") -> list[str]:
    rows = []
    for field in fields:
        key, default = prefix + field.name, defaults[field.name]
        if field.kind == "section" and not field.doc:
            rows += _rows(field.fields, default, key + ".")
        else:
            rows.append(f"| `{key}` | `{_value(default, field.kind)}` | {_cell(field.words)} |")
    return rows


def keys_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    return "\n".join(rows + _rows(MTA_FIELDS, to_dict(MtaConfig())))


def generated(text: str) -> str:
    """`text` (the page) with its settings table regenerated."""
    return replace_part(text, "keys", keys_table())


def main(argv: list[str] | None = None) -> int:
    return table_command(argv, "tests.relay.config_table", DOC, "keys", keys_table)

if __name__ == "__main__":
    sys.exit(main())
