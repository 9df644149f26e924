"""Typed field descriptions, and the one walk that validates a section with them.

A setting is described once, as a `Field`: its kind, its check, its choices, and its words
(the form's label and line of help, the reference's longer text). From the same descriptions
come the relay's validator (`parse_mta`), the system layer's (`parse_network`), the console's
MTA form and the settings table of docs/config.md, so the words, the choices and the checks
cannot drift apart.

Problems are lines `field: what is wrong: what to do`, every one of them at once: a wrong
value never stops the walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

KINDS = ("text", "number", "duration", "bool", "choice", "list", "section", "map")
MAPPING = "must be a mapping of keys to values"
WRONG = object()  # what parse_value returns for a value that could not be read at all


def one_of(choices: tuple) -> Callable[[Any], Any]:
    """The check of a choice: the value itself, when it is one of `choices` (and not a bool standing in for 0 or 1)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(str(c) for c in choices)}")
        return value

    return check


@dataclass(frozen=True)
class Field:
    """One setting, or a group of them.

    - `kind`: how the value is written and edited: text, number, duration (seconds, or 5m,
      1h...), bool, choice (one of `choices`), list, section (a mapping with its own fields),
      map (keys of the admin's choosing, such as interface names).
    - `check` takes the value (for a list, each item) and returns it clean, or raises
      ValueError with the words; a choice's check comes from its choices.
    - `label` and `help`: the form's name for it and its line of help; `doc`: the
      reference's words, when they say more than the help.
    - `fields`: a section's own fields; `make` builds the section's value from them.
    - `shape`: the problem when the value is not a mapping (section, map) or a list (list).
    - `key_check`: a map's check of each key (an interface name, an address).
    - `entry`: a map's description of each entry's value.
    - `parse`: a reader of its own, `parse(where, value, problems)`, for a value whose parts
      depend on each other; the generic walk then only describes it.
    - `index_one`: a list item's problem names its index even when the list holds one item
      (`listen[0]`); without it, a lone item is named by the field (`address`).
    """

    name: str
    kind: str
    check: Callable[[Any], Any] | None = None
    label: str = ""
    help: str = ""
    doc: str = ""
    choices: tuple = ()
    fields: tuple[Field, ...] = ()
    make: Callable[..., Any] | None = None
    shape: str = ""
    key_check: Callable[[Any], Any] | None = None
    entry: Field | None = None
    parse: Callable[[str, Any, list[str]], Any] | None = None
    index_one: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "choice" and self.check is None:
            object.__setattr__(self, "check", one_of(self.choices))

    @property
    def words(self) -> str:
        """The reference's text: `doc`, else the line of help."""
        return self.doc or self.help

    def field(self, name: str) -> Field | None:
        return next((field for field in self.fields if field.name == name), None)


def as_items(value: Any) -> list | None:
    """A list's items: nothing for no value, one for a single text or number, None for any other shape."""
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    return value if isinstance(value, list) else None


def item_where(where: str, index: int, count: int, field: Field) -> str:
    return f"{where}[{index}]" if field.index_one or count > 1 else where


def parse_section(where: str, data: Any, fields: tuple[Field, ...], problems: list[str],
                  shape: str = MAPPING) -> dict | None:
    """The clean values of a mapping's known keys (keys with wrong values left out); None when it is no mapping."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{where}: {shape}")
        return None
    known = {field.name: field for field in fields}
    values = {}
    for key, value in data.items():
        field = known.get(key)
        if field is None:
            problems.append(f"{where}.{key}: unknown key; known keys are {', '.join(known)}")
            continue
        clean = parse_value(f"{where}.{key}", field, value, problems)
        if clean is not WRONG:
            values[key] = clean
    return values


def parse_value(where: str, field: Field, value: Any, problems: list[str]) -> Any:
    """The clean value of one field, or WRONG with its problems added."""
    if field.parse is not None:
        return field.parse(where, value, problems)
    if field.kind == "section":
        values = parse_section(where, value, field.fields, problems, field.shape or MAPPING)
        if values is None:
            return WRONG
        return field.make(**values) if field.make else values
    if field.kind == "map":
        return _parse_map(where, field, value, problems)
    if field.kind == "list":
        items = as_items(value)
        if items is None:
            problems.append(f"{where}: {field.shape or 'must be a list'}")
            return WRONG
        clean = []
        for index, item in enumerate(items):
            try:
                clean.append(field.check(item))
            except ValueError as error:
                problems.append(f"{item_where(where, index, len(items), field)}: {error}")
        return tuple(clean)
    try:
        return field.check(value)
    except ValueError as error:
        problems.append(f"{where}: {error}")
        return WRONG


def _parse_map(where: str, field: Field, value: Any, problems: list[str]) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: {field.shape or MAPPING}")
        return WRONG
    entries = {}
    for key, item in value.items():
        try:
            clean_key = field.key_check(key) if field.key_check else key
        except ValueError as error:
            problems.append(f"{where}.{key}: {error}")
            continue
        clean = parse_value(f"{where}.{key}", field.entry, item, problems)
        if clean is not WRONG:
            entries[clean_key] = clean
    return entries


def field_paths(fields: tuple[Field, ...], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    """Every field as (path of keys, is it a list), sections opened; "*" is a key of the admin's choosing
    (an interface name, a hosts address), itself a field."""
    paths = []
    for field in fields:
        here = path + (field.name,)
        if field.kind == "section":
            paths += field_paths(field.fields, here)
        elif field.kind == "map":
            entry = field.entry
            if entry is not None and entry.kind == "section":
                paths.append((here + ("*",), False))
                paths += field_paths(entry.fields, here + ("*",))
            else:
                paths.append((here + ("*",), entry is not None and entry.kind == "list"))
        else:
            paths.append((here, field.kind == "list"))
    return paths
