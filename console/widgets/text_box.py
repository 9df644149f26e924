"""A multi-line text field that leaves the console's function keys alone.

Textual's TextArea takes F6 (select the line) and F7 (select everything) for itself. In
Postern those keys open the SMTP test and the Network screen; worse, after F7 the next key
typed replaced a whole list of networks, and the selection was drawn black on black on the
Linux console. Here F6 and F7 go on to the app, and a selection is drawn in reverse video.
"""

from __future__ import annotations

from textual.widgets import TextArea

GIVEN_BACK = {"select_line", "select_all"}  # bound to F6 and F7 in TextArea


class TextBox(TextArea):
    DEFAULT_CSS = """
    TextBox > .text-area--selection {
        text-style: reverse;
    }
    """

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in GIVEN_BACK:
            return False  # the key goes on to the screen and the app
        return super().check_action(action, parameters)
