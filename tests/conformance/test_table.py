"""docs/conformance.md shows the cases as they are (no server needed)."""

from .table import DOC, generated


def test_generated_parts_are_current():
    text = DOC.read_text()
    assert generated(text) == text, "docs/conformance.md is stale: run python -m tests.conformance.table --write"
