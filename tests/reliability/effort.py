"""How hard the reliability tests push: short in `make test`, long in `make reliability`.

POSTERN_RELIABILITY=long gives the property-based tests many more examples, with fresh
random seeds each run; the short form is derandomized, so `make test` is repeatable.
"""

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("POSTERN_RELIABILITY") == "long"

settings.register_profile("short", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("long" if LONG else "short")


def examples(short: int, long: int) -> int:
    return long if LONG else short
