"""Every conformance case, in the order they run and appear in docs/conformance.md."""

from . import cases_delivery, cases_mx, cases_receive  # noqa: F401  (importing them registers their cases)
from .cases import CASES

__all__ = ["CASES"]
