"""The generated parts of docs/conformance.md, from the cases' own metadata.

    python -m tests.conformance.table            # print the case table
    python -m tests.conformance.table --write    # rewrite the generated parts of docs/conformance.md
    python -m tests.conformance.table --write --live
                                                 # also the EHLO replies, from a live run (root, Postfix)

Each generated part sits between `<!-- begin NAME -->` and `<!-- end NAME -->`;
test_table.py fails when the case table, the kept differences or the settings are stale.
"""

from __future__ import annotations

import argparse
import html
import sys
import tempfile
from pathlib import Path

from ..support.doc_parts import replace_part
from .catalogue import CASES

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, and angle brackets outside `code` shown as such."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(part if index % 2 else html.escape(part, quote=False) for index, part in enumerate(parts))


def case_table() -> str:
    rows = ["| case | area | what is compared | standing |", "|---|---|---|---|"]
    for case in CASES:
        rows.append(f"| `{case.name}` | {case.area} | {_cell(case.compares)} | {_cell(case.standing)} |")
    counts = {"agrees": 0, "known difference": 0, "differs on purpose": 0}
    for case in CASES:
        counts[case.standing.split(":")[0]] += 1
    summary = (f"{len(CASES)} cases: {counts['agrees']} agree with Postfix, {counts['known difference']} are known "
               f"differences (xfail), {counts['differs on purpose']} differ on purpose.")
    return summary + "\n\n" + "\n".join(rows)


def settings() -> str:
    """Where the two servers run with other than their defaults, for the comparison."""
    from .peers import POSTERN_SETTINGS, POSTFIX_SETTINGS

    rows = ["| server | setting | value |", "|---|---|---|"]
    rows += [f"| Postfix | `{key}` | `{value}` |" for key, value in POSTFIX_SETTINGS.items()]
    for key, value in POSTERN_SETTINGS.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        rows += [f"| Postern | `{key}{'' if inner is None else '.' + inner}` | `{item}` |" for inner, item in items]
    return "\n".join(rows)


def kept_differences() -> str:
    return "\n".join(f"- `{case.name}`: {case.why}." for case in CASES if case.why)


def ehlo_replies() -> str:
    """Both servers' whole EHLO replies, side by side, from a live run."""
    from .cases import Session
    from .peers import running_peers

    with tempfile.TemporaryDirectory() as parent, running_peers(Path(parent)) as peers:
        replies = {}
        for name, peer in peers.items():
            with Session(peer) as session:
                replies[name] = [line.replace(peer.hostname, "<hostname>") for line in session.ehlo_lines]
    rows = ["| Postfix | Postern |", "|---|---|"]
    postfix, postern = replies["postfix"], replies["postern"]
    for index in range(max(len(postfix), len(postern))):
        left = f"`{postfix[index]}`" if index < len(postfix) else ""
        right = f"`{postern[index]}`" if index < len(postern) else ""
        rows.append(f"| {left} | {right} |")
    return "\n".join(rows)


def generated(text: str) -> str:
    """`text` (the document) with its case table, kept differences and settings regenerated."""
    for name, content in (("cases", case_table()), ("kept", kept_differences()), ("settings", settings())):
        text = replace_part(text, name, content)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.table", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the generated parts of docs/conformance.md")
    parser.add_argument("--live", action="store_true", help="also take both EHLO replies from a live run (root)")
    options = parser.parse_args(argv)
    if not options.write:
        print(case_table())
        return 0
    text = generated(DOC.read_text())
    if options.live:
        text = replace_part(text, "ehlo", ehlo_replies())
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
