"""The generated parts of a page under docs/: each sits between `<!-- begin NAME -->` and `<!-- end NAME -->`."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def replace_part(text: str, name: str, content: str) -> str:
    """`text` with the part called `name` holding `content`; SystemExit when there is no such part."""
    pattern = re.compile(rf"(<!-- begin {name} -->\n)(?:.*?\n)?(<!-- end {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no generated part named {name!r}: add <!-- begin {name} --> and <!-- end {name} -->")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)
