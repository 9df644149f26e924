"""Printing for `postern-appliance`: results on stdout, one line per problem on stderr.

Writes never raise: `try` must go on waiting (and roll back) after the SSH session that
started it has gone and its terminal with it.
"""

from __future__ import annotations

import sys

PROGRAM = "postern-appliance"


def say(line: str = "") -> None:
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        pass


def complain(problems) -> None:
    if isinstance(problems, str):
        problems = [problems]
    for problem in problems:
        try:
            print(f"{PROGRAM}: {problem}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


def table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text lines; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
