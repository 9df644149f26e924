"""Drawing only what the VM's Linux console can show.

The kernel console fonts (Uni2-Fixed16, Lat15-Fixed16) have box-drawing lines and
full blocks but none of the eighth blocks Textual draws in scrollbars, tall
borders and the header icon: those would show as diamonds. The console uses
line borders throughout, and a scrollbar drawn with whole cells only.
"""

from __future__ import annotations

import dataclasses
import os

from textual.keys import KEY_DISPLAY_ALIASES
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.theme import BUILTIN_THEMES
from textual.widgets._toggle_button import ToggleButton


class WholeCellScrollBar(ScrollBarRender):
    """A scrollbar whose thumb is whole cells: no partial blocks at its ends."""

    VERTICAL_BARS = [" "] * 8
    HORIZONTAL_BARS = [" "] * 8


def use_console_safe_glyphs() -> None:
    ScrollBar.renderer = WholeCellScrollBar
    # Checkbox and radio button draw their box with half blocks; brackets read as well.
    ToggleButton.BUTTON_LEFT = "["
    ToggleButton.BUTTON_RIGHT = "]"
    # The keys panel (F1) names Enter and Backspace with symbols the font lacks.
    KEY_DISPLAY_ALIASES.update(enter="enter", backspace="backspace")


def is_linux_console() -> bool:
    return os.environ.get("TERM") == "linux"


# Textual's ansi-dark, readable on the Linux console's 16 colours: its dark blue borders and
# black-on-black unfocused fields become bright blue and dark grey lines.
CONSOLE_THEME = dataclasses.replace(
    BUILTIN_THEMES["ansi-dark"], name="postern-console", primary="ansi_bright_blue",
    variables={**BUILTIN_THEMES["ansi-dark"].variables, "border-blurred": "ansi_bright_black"})


def theme_for_terminal() -> str:
    """16 colours on the VM console (the app registers CONSOLE_THEME); the richer dark theme elsewhere."""
    return CONSOLE_THEME.name if is_linux_console() else "textual-dark"
