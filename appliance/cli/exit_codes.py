"""Exit codes of `postern-appliance`, one meaning each."""

OK = 0
INVALID = 1  # the configuration or an input is wrong; nothing was changed
USAGE = 2  # the command line itself is wrong (argparse's code)
FAILED = 3  # the system refused a change; the previous state is back in place
ROLLED_BACK = 4  # `try` was not confirmed in time (or was interrupted): the previous state is restored
NOT_PENDING = 5  # `confirm` or `rollback` found no change waiting
CHECK_FAILED = 6  # a diagnostic found a problem (each is printed)
