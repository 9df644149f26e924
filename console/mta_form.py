"""The MTA settings form, without any user interface: which fields, their text, the changes, the problems.

The form is built from data: the running `mta` section (io.postern.Config.Get) and the
relay's own field descriptions, relay.config.MTA_FIELDS, which give each field its kind,
label, help and choices, the same ones the relay checks against. A key the relay does not
describe still gets a field (its name as the label); a value of a shape the form does not
know is edited as YAML text. So keys added to the relay later show up without a change here.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml

from appliance.store import MISSING, Change
from relay.config import MTA_FIELDS, MtaConfig, duration_text, parse_mta, to_dict
from relay.control import errors
from relay.fields import Field

UNKNOWN_HELP = "see the configuration reference"
_PROBLEM = re.compile(r"mta\.([A-Za-z0-9_.\-]+?)((?:\[\d+\])*)\s*:\s*(.*)", re.S)


def dom_id(key: str) -> str:
    """A widget id for a dotted key (ids allow letters, digits, _ and - only)."""
    return "mta-" + re.sub(r"[^A-Za-z0-9_-]", "_", key.replace(".", "--"))


@dataclass(frozen=True)
class FormField:
    """A line of the form: where its value sits in the section, and how it is edited."""

    path: tuple[str, ...]
    kind: str  # text, number, duration, bool, choice, list, yaml
    label: str
    help: str
    choices: tuple = ()
    int_items: bool = False  # a list of numbers

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def dom_id(self) -> str:
        return dom_id(self.key)


@dataclass(frozen=True)
class Group:
    """A section such as internal_relay, or (path empty) the top-level fields around it."""

    path: tuple[str, ...]
    title: str
    help: str
    fields: tuple[FormField, ...]

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _words(path: tuple[str, ...], spec: Field | None) -> tuple[str, str]:
    if spec is not None and spec.label:
        return spec.label, spec.help
    return path[-1].replace("_", " ").capitalize(), UNKNOWN_HELP


def _form_field(path: tuple[str, ...], spec: Field | None, value: Any) -> FormField:
    """The relay's description decides the kind, as long as the running value has the shape it describes."""
    label, help_text = _words(path, spec)
    kind_of = spec.kind if spec is not None else ""
    if kind_of == "bool" or isinstance(value, bool):
        kind = "bool" if isinstance(value, bool) else "yaml"
    elif kind_of == "choice" and any(value == c and type(value) is type(c) for c in spec.choices):
        return FormField(path, "choice", label, help_text, spec.choices)
    elif kind_of == "duration" and isinstance(value, (int, str)):
        kind = "duration"
    elif isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return FormField(path, "list", label, help_text, int_items=bool(value) and all(isinstance(v, int) for v in value))
    elif isinstance(value, int) and not isinstance(value, bool):
        kind = "number"
    elif isinstance(value, str) or value is None:
        kind = "text"
    else:
        kind = "yaml"
    return FormField(path, kind, label, help_text)


def _names(specs: tuple[Field, ...]) -> set[str]:
    return {spec.name for spec in specs}


def build(running: dict, specs: tuple[Field, ...] = MTA_FIELDS) -> list[Group]:
    """The form for a running section: known keys in the relay's order, then any others."""
    known = {spec.name: spec for spec in specs}
    order = [name for name in known if name in running] + [key for key in running if key not in known]
    groups: list[Group] = []
    loose: list[FormField] = []
    for key in order:
        spec, value = known.get(key), running[key]
        if isinstance(value, dict) and (spec is None or spec.kind == "section") and value:
            if loose:
                groups.append(Group((), "", "", tuple(loose)))
                loose = []
            subspecs = {sub.name: sub for sub in spec.fields} if spec is not None else {}
            suborder = [k for k in subspecs if k in value] + [k for k in value if k not in subspecs]
            fields = tuple(_form_field((key, sub), subspecs.get(sub), value[sub]) for sub in suborder)
            title, help_text = _words((key,), spec)
            groups.append(Group((key,), title, help_text, fields))
        else:
            loose.append(_form_field((key,), spec, value))
    if loose:
        groups.append(Group((), "", "", tuple(loose)))
    return groups


def fields_of(groups: list[Group]) -> list[FormField]:
    return [field for group in groups for field in group.fields]


def shape(groups: list[Group]) -> tuple:
    return tuple((field.key, field.kind, field.choices) for field in fields_of(groups))


# --- values: running value -> what the widget shows -> value for the section ---


def shown(field: FormField, value: Any) -> Any:
    """What the field's widget holds for a value: text, or the value itself for bool and choice."""
    if field.kind in ("bool", "choice"):
        return value
    if field.kind == "list":
        return "\n".join(str(item) for item in value)
    if field.kind == "duration":
        return duration_text(value) if isinstance(value, int) and value > 0 else str(value)
    if field.kind == "yaml":
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).strip()
    return "" if value is None else str(value)


def _number(text: str) -> Any:
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else text


def read(field: FormField, raw: Any) -> Any:
    """The section's value for what the widget holds; ValueError (in words) for unreadable YAML."""
    if field.kind in ("bool", "choice"):
        return raw
    text = str(raw)
    if field.kind in ("number", "duration"):
        return _number(text)
    if field.kind == "list":
        items = [item.strip() for item in re.split(r"[\n,]", text) if item.strip()]
        return [_number(item) for item in items] if field.int_items else items
    if field.kind == "yaml":
        try:
            return yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ValueError(f"not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    return text.strip()


def proposed(running: dict, groups: list[Group], raws: dict[str, Any]) -> tuple[dict, list[str]]:
    """The running section with the form's values in it, and the fields that could not be read."""
    section = copy.deepcopy(running)
    problems = []
    for field in fields_of(groups):
        if field.key not in raws:
            continue
        try:
            value = read(field, raws[field.key])
        except ValueError as error:
            problems.append(f"mta.{field.key}: {error}")
            continue
        target = section
        for part in field.path[:-1]:
            target = target.setdefault(part, {})
        target[field.path[-1]] = value
    return section, problems


def validate(section: dict, specs: tuple[Field, ...] = MTA_FIELDS) -> tuple[MtaConfig | None, list[str]]:
    """relay.config.parse_mta on the keys this console knows (the daemon checks the others on Apply)."""
    known = _names(specs)
    return parse_mta({key: value for key, value in section.items() if key in known})


def normalized(section: dict, config: MtaConfig, specs: tuple[Field, ...] = MTA_FIELDS) -> dict:
    """The section as the relay will run it (durations in seconds, networks with prefix...)."""
    clean, known = to_dict(config), _names(specs)
    return {key: clean[key] if key in known else value for key, value in section.items()}


def payload(section: dict, config: MtaConfig, specs: tuple[Field, ...] = MTA_FIELDS) -> dict:
    """What Apply sends: the admin's values, without the ones that are only defaults.

    Get reports every key with its default; writing them all would pin today's
    defaults in the file. A key the console does not know is always kept.
    """
    defaults, clean, known = to_dict(MtaConfig()), to_dict(config), _names(specs)
    result: dict = {}
    for key, value in section.items():
        if key not in known or key not in defaults:
            result[key] = value
        elif isinstance(value, dict) and isinstance(clean[key], dict):
            kept = {sub: v for sub, v in value.items()
                    if sub not in clean[key] or clean[key][sub] != defaults[key].get(sub)}
            if kept:
                result[key] = kept
        elif clean[key] != defaults[key]:
            result[key] = value
    return result


def _value_text(value: Any, kind: str = "") -> str:
    if value is MISSING or value is None or value == "" or value == []:
        return "(empty)"
    if kind == "duration" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return duration_text(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def describe(change: Change, kind: str = "") -> list[str]:
    """A change in words: old -> new, or the items added (+) and removed (-) for a list."""
    if isinstance(change.old, list) and isinstance(change.new, list):
        lines = [f"{change.key}:"]
        lines += [f"  + {item}" for item in change.new if item not in change.old]
        lines += [f"  - {item}" for item in change.old if item not in change.new]
        if len(lines) == 1:
            lines[0] += " the same items in another order"
        return lines
    return [f"{change.key}: {_value_text(change.old, kind)} -> {_value_text(change.new, kind)}"]


def place(problem: str, keys: set[str]) -> tuple[str, str]:
    """Where a problem belongs: (the field or section key, or "" for the whole form; its words).

    'mta.my_networks[1]: ...' -> ('my_networks', 'line 2: ...').
    """
    match = _PROBLEM.fullmatch(problem)
    if not match:
        return "", problem
    key, index, words = match.groups()
    if index:
        first = int(re.findall(r"\d+", index)[0])
        words = f"line {first + 1}: {words}"
    path = key.split(".")
    while path:
        if ".".join(path) in keys:
            return ".".join(path), words
        path.pop()
    return "", problem


def refused_problems(error: Exception) -> list[str]:
    """The relay's own problem lines in a refused io.postern.Config.Apply, each naming its field
    ('mta.listen: ...'): those of settings it found wrong, or of settings it could not put in force."""
    if isinstance(error, errors.ControlError) and error.name == errors.INVALID_CONFIG:
        return list(error.parameters.get("problems", []))
    if isinstance(error, errors.ControlError) and error.name == errors.APPLY_FAILED:
        return [line for line in error.parameters.get("reason", "").split("; ") if line]
    return []


def with_tls_policy(running: dict, key: str, entry: Any, replaces: str = "") -> dict:
    """The running section with the tls_policy entry for `key` put in (entry None: taken out), and the
    entry `replaces` (a destination renamed) taken out."""
    section = copy.deepcopy(running)
    table = dict(section.get("tls_policy") or {})
    if replaces and replaces != key:
        table.pop(replaces, None)
    if entry is None:
        table.pop(key, None)
    else:
        table[key] = entry
    section["tls_policy"] = table
    return section
