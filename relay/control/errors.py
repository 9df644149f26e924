"""The control API's errors, each named once, and the one place that puts them in words.

The daemon, its clients, posternctl and the console use these names; what each means and its parameters:
the `error` lines of the `*.varlink` files beside this module (a test keeps the two lists the same).
`explain` is what an admin reads about a failed call, in posternctl and in the console alike: a relay
that is not running, one that refuses this user, one that takes the connection but does not answer in
time, and every error the relay answers with.
"""

from __future__ import annotations

import json

# io.postern.Control: any call can get these
PERMISSION_DENIED = "io.postern.Control.PermissionDenied"
REQUEST_TOO_LARGE = "io.postern.Control.RequestTooLarge"
MALFORMED_REQUEST = "io.postern.Control.MalformedRequest"
BUSY = "io.postern.Control.Busy"
SHUTTING_DOWN = "io.postern.Control.ShuttingDown"

INVALID_ADDRESS = "io.postern.Status.InvalidAddress"
INVALID_CONFIG = "io.postern.Config.InvalidConfig"
APPLY_FAILED = "io.postern.Config.ApplyFailed"
MESSAGE_NOT_FOUND = "io.postern.Queue.MessageNotFound"
INVALID_FILTER = "io.postern.Queue.InvalidFilter"
INVALID_DOMAIN = "io.postern.Tls.InvalidDomain"

# org.varlink.service, the errors Varlink itself defines
INTERFACE_NOT_FOUND = "org.varlink.service.InterfaceNotFound"
METHOD_NOT_FOUND = "org.varlink.service.MethodNotFound"
INVALID_PARAMETER = "org.varlink.service.InvalidParameter"


class ControlError(Exception):
    """The daemon answered with a Varlink error."""

    def __init__(self, name: str, parameters: dict):
        super().__init__(f"{name} {json.dumps(parameters)}" if parameters else name)
        self.name = name
        self.parameters = parameters


class Unreachable(Exception):
    """No daemon answers on the socket (not running, wrong path)."""


class NoAnswer(Unreachable):
    """The daemon took the connection but did not answer within `timeout` seconds: running, but busy or stuck.

    An `Unreachable` too, so that a caller that only tells "answered" from "not" treats it as no answer."""

    def __init__(self, path: str, timeout: float):
        super().__init__(f"{path}: connected, but no answer")
        self.path = path
        self.timeout = timeout


class PermissionDenied(Exception):
    """The socket or the daemon refused this user."""


def explain(error: Exception) -> str:
    """A failed control call in words a mail admin understands."""
    if isinstance(error, NoAnswer):
        return f"Relay: did not answer within {error.timeout:g} s (it is running, but busy or stuck)"
    if isinstance(error, Unreachable):
        return "Relay: not running (no answer on the control socket)"
    if isinstance(error, PermissionDenied):
        return "Relay: permission denied (log in as root or a member of the postern group)"
    if not isinstance(error, ControlError):
        return str(error)
    p = error.parameters
    if error.name == INVALID_CONFIG:
        return "configuration refused: " + "; ".join(p.get("problems", []))
    if error.name == APPLY_FAILED:
        return f"not applied: {p.get('reason', '')}"
    if error.name == MESSAGE_NOT_FOUND:
        return f"no message {p.get('id')} in the queue"
    if error.name == INVALID_FILTER:
        return f"{p.get('field')}: {p.get('reason')}"
    if error.name == INVALID_DOMAIN:
        return f"{p.get('domain')}: {p.get('reason')}"
    if error.name == INVALID_ADDRESS:
        return f"{p.get('address')!r} is not an IP address"
    return f"the relay answered {error}"
