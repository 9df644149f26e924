"""The generated parts of a page under docs/: each sits between `<!-- begin NAME -->` and `<!-- end NAME -->`."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def replace_part(text: str, name: str, content: str) -> str:
    """`text` with the part called `name` holding `content`; SystemExit when there is no such part."""
    pattern = re.compile(rf"(<!-- begin {name} -->\n)(?:.*?\n)?(<!-- end {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no generated part named {name!r}: add <!-- begin {name} --> and <!-- end {name} -->")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)


def table_command(argv: list[str] | None, prog: str, doc: Path, part: str, table: Callable[[], str]) -> int:
    """`python -m PROG [--write]`: print the generated table, or rewrite it in its page."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=f"the generated {part} table of {doc.name}")
    parser.add_argument("--write", action="store_true", help=f"rewrite the {part} table of docs/{doc.name}")
    if not parser.parse_args(argv).write:
        print(table())
        return 0
    doc.write_text(replace_part(doc.read_text(), part, table()))
    return 0
