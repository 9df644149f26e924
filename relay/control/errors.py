"""The control API's error names, each written once; the daemon, its clients, posternctl and the console
use these. What each means and its parameters: the `error` lines of the `*.varlink` files beside this
module (a test keeps the two lists the same)."""

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

# org.varlink.service, the errors Varlink itself defines
INTERFACE_NOT_FOUND = "org.varlink.service.InterfaceNotFound"
METHOD_NOT_FOUND = "org.varlink.service.MethodNotFound"
INVALID_PARAMETER = "org.varlink.service.InvalidParameter"
