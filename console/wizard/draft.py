"""The wizard's answers: a provisioning seed in the making, plus what only the wizard needs.

The draft has the shape of a seed (`topology:`, `network:`, `mta:`, `tls:`), so that the
same validation and the same apply serve the wizard and `postern-appliance provision`.
Answers with no place in the configuration (the public address for the PTR check, the test
message's addresses) live under `wizard:`, which `seed()` leaves out.

Problems come from `appliance.provision.check_seed` as `field: what is wrong`; each step
keeps those of its own fields (`problems_for`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from appliance.firstboot import SetupState
from appliance.provision import SEED_ONLY, check_seed

WIZARD = "wizard"


class Draft:
    def __init__(self, document: dict | None = None):
        self.document: dict = copy.deepcopy(document) if document else {}

    def copy(self) -> Draft:
        return Draft(self.document)

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.document
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    def set(self, path: str, value: Any) -> None:
        keys = path.split(".")
        node = self.document
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value

    def remove(self, path: str) -> None:
        keys = path.split(".")
        node = self.get(".".join(keys[:-1])) if len(keys) > 1 else self.document
        if isinstance(node, dict):
            node.pop(keys[-1], None)

    @property
    def topology(self) -> str:
        return self.document.get("topology") or "direct"

    def seed(self) -> dict:
        return {key: copy.deepcopy(value) for key, value in self.document.items() if key != WIZARD}

    def check(self, root: Path | str, check_interfaces: bool = False):
        """(plan, problems) for the whole draft, as provisioning would see it."""
        return check_seed(self.seed(), root, check_interfaces=check_interfaces)

    def problems_for(self, prefixes: tuple[str, ...], root: Path | str) -> list[str]:
        _, problems = self.check(root)
        return [problem for problem in problems if field_of(problem).startswith(prefixes)]


def field_of(problem: str) -> str:
    return problem.split(": ", 1)[0]


def reason_of(problem: str) -> str:
    return problem.split(": ", 1)[1] if ": " in problem else problem


def initial_draft(state: SetupState) -> Draft:
    """A fresh wizard starts from the configuration as it is (the image's, or an earlier setup's)."""
    current = state.current_document()
    # Every section of the configuration carries over; `tls` in a seed says how to get a certificate.
    draft = Draft({key: value for key, value in current.items() if key not in SEED_ONLY})
    draft.document = {"topology": state.completed_topology() or "direct", **draft.document}
    cert_file = draft.get("mta.tls.cert_file")
    draft.set("tls", {"mode": "keep" if cert_file and Path(cert_file).is_file() else "self-signed"})
    return draft


def split_list(text: str) -> list[str]:
    """'a, b c' -> ['a', 'b', 'c']: lists are typed on one line, separated by commas or spaces."""
    return [item for item in text.replace(",", " ").split() if item]


def join_list(items: Any) -> str:
    if isinstance(items, (list, tuple)):
        return ", ".join(str(item) for item in items)
    return "" if items is None else str(items)
