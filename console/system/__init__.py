"""The console's access to the system layer, one module per concern.

- `commands`: running programs (power off, reboot) and the admin's shell.
- `config`: the configuration file as the screens read it.
- `diagnostics`: the DNS lookup, the HELO/PTR check and the next-hop check.
- `certificates`: the installed certificate, a new one, a request for a CA, an import.

`console.appliance_link.ApplianceLink` holds one of each for the system it works on. Everything
here blocks (files, DNS, SMTP, subprocesses): the screens call it only from thread workers.
Nothing here imports Textual, and the system layer is imported where it is used: the console
starts without it, and each screen's first worker pays for what it needs.
"""

from __future__ import annotations


class FieldError(Exception):
    """Input the admin must correct; `field` names the form field it belongs to."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message
