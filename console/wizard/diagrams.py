"""Small drawings of each topology, in characters the Linux console font has: box-drawing lines and
the four arrows. No eighth blocks, nothing outside the font (tests/console/test_linux_console.py)."""

from __future__ import annotations

ARROW = " ←→ "


def chain(names: list[str], here: str = "Postern") -> list[str]:
    """Boxes in a row joined by two-way arrows; this gateway's box drawn with double lines."""
    top, middle, bottom = [], [], []
    for index, name in enumerate(names):
        double = name == here
        h, v = ("═", "║") if double else ("─", "│")
        corners = ("╔", "╗", "╚", "╝") if double else ("┌", "┐", "└", "┘")
        width = len(name) + 2
        gap = "" if index == 0 else " " * len(ARROW)
        top.append(gap + corners[0] + h * width + corners[1])
        middle.append(("" if index == 0 else ARROW) + f"{v} {name} {v}")
        bottom.append(gap + corners[2] + h * width + corners[3])
    return ["".join(top), "".join(middle), "".join(bottom)]


def flows(incoming: list[str], outgoing: list[str]) -> list[str]:
    return ["in:  " + " → ".join(incoming), "out: " + " → ".join(outgoing)]


def _m365() -> list[str]:
    return [
        "┌──────────┐    ┌─────────────────┐  connector To Postern   ╔═════════╗",
        "│ Internet │ ←→ │ Exchange Online │ ──────────────────────→ ║ Postern ║",
        "└──────────┘    │  (your tenant)  │ ←────────────────────── ║         ║",
        "                └─────────────────┘  connector From Postern ╚═════════╝",
        "A transport rule sends mail to Postern unless it already has the marker",
        "header Postern adds: the exception that keeps mail from looping.",
    ]


def diagram(topology: str) -> list[str]:
    if topology == "m365":
        return _m365()
    scanner = topology.startswith("virus-scanner")
    relay = topology.endswith("via-relay")
    boxes = ["Internet"] + (["relay"] if relay else []) + ["Postern"] + (["scanner"] if scanner else []) + ["mail server"]
    incoming = ["Internet"] + (["relay server"] if relay else []) + ["Postern"]
    incoming += (["virus scanner"] if scanner else []) + ["mail server"]
    outgoing = list(reversed(incoming))
    if not relay:
        outgoing[-1] = "MX hosts of each domain"
    return chain(boxes) + flows(incoming, outgoing)
