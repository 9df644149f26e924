"""ARC (RFC 8617): verifying the chain a message arrives with, sealing it when passed on.

A relay that forwards mail breaks SPF and, when it edits the message, DKIM. ARC lets it
say what it saw on arrival: each hop adds one set of three headers (ARC-Authentication-
Results, ARC-Message-Signature, ARC-Seal) with instance i=, and the seal covers every set
before it, so the final receiver can trust the earlier results as far as it trusts the
sealers.

dkimpy does the cryptography and the canonicalisation; this module only adapts it to
the relay: one TXT lookup callable for the keys, our own Authentication-Results body for
the new set, the chain's status (cv=) from our own verification, and the 50-instance
limit turned into "do not seal" rather than an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import authres
import authres.arc
import dkim

log = logging.getLogger(__name__)

TxtLookup = Callable[[str], "list[bytes] | None"]
"""The TXT records of a name, each record's strings joined; None (or []) when there are none."""

INSTANCE_LIMIT = 50
"""RFC 8617 4.2.1: i= goes from 1 to 50; a message with 50 sets cannot be sealed again."""


@dataclass(frozen=True)
class ChainResult:
    """The chain validation status of a message (cv= of RFC 8617) and why."""

    result: str  # none | pass | fail
    instances: int  # how many ARC sets the message carries
    detail: str  # why, for the log and the console


def _dnsfunc(txt: TxtLookup) -> Callable[..., bytes | None]:
    """dkimpy's key lookup (a bytes name with a trailing dot, one record back) over `txt`.

    Of several records the DKIM key record (v=DKIM1) is taken, else the first, as dkimpy's
    own resolver does; a lookup that fails raises, and dkimpy reports the set as invalid.
    """

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii") if isinstance(name, bytes) else name
        records = txt(text.rstrip("."))
        if not records:
            return None
        for record in records:
            if record.lstrip().startswith(b"v=DKIM1"):
                return record
        return records[0]

    return lookup


_ARC_FIELDS = {b"arc-seal", b"arc-message-signature", b"arc-authentication-results"}


def _instances(message: bytes) -> int:
    """The highest i= of the ARC headers on the message (0 when there are none).

    dkimpy skips ARC headers whose i= it cannot read; headers that are there but carry no
    instance are a broken chain, not an absent one, so they raise here.
    """
    arc = dkim.ARC(message)
    highest, _ = arc.sorted_arc_headers()
    if highest == 0 and any(name.lower() in _ARC_FIELDS for name, _ in arc.headers):
        raise ValueError("ARC headers without a valid instance (i=)")
    return highest


def verify_chain(message: bytes, txt: TxtLookup) -> ChainResult:
    """Validate the ARC chain of `message` (RFC 8617 5.2): none, pass or fail, with the reason.

    Anything malformed (a missing or duplicated header of a set, a gap in the instances, a
    key that cannot be found, a signature that does not match) is a fail, never an exception:
    the message came from outside and its headers are whatever the sender chose.
    """
    try:
        instances = _instances(message)
    except Exception as error:  # a malformed i= tag, an unparsable header
        return ChainResult("fail", 0, f"malformed ARC headers: {error}")
    if instances == 0:
        return ChainResult("none", 0, "the message carries no ARC headers")
    try:
        cv, results, reason = dkim.arc_verify(message, dnsfunc=_dnsfunc(txt))
    except Exception as error:  # dkimpy lets some DNS and parse errors through
        return ChainResult("fail", instances, f"ARC verification failed: {error}")
    if cv is None:
        # An earlier sealer already found the chain broken (cv=fail in its seal): it stays broken.
        return ChainResult("fail", instances, reason)
    if cv == dkim.CV_Pass:
        return ChainResult("pass", instances, f"{instances} ARC set(s) verified")
    if cv == dkim.CV_None:
        return ChainResult("none", instances, reason)
    return ChainResult("fail", instances, reason)


def _auth_results_with_cv(auth_results: str, authserv_id: str, cv: str) -> bytes:
    """Our Authentication-Results body with the chain's status as its one arc= result.

    dkimpy takes cv= from the arc= result of the Authentication-Results header it finds
    for `authserv_id`; any arc= result the body had is replaced by ours.
    """
    header = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + auth_results)
    if header.authserv_id != authserv_id:
        raise ValueError(f"the Authentication-Results are {header.authserv_id!r}'s, not {authserv_id!r}'s")
    results = [result for result in header.results if result.method != "arc"]
    results.append(authres.arc.ARCAuthenticationResult(result=cv))
    return "; ".join([authserv_id] + [str(result) for result in results]).encode("utf-8")


def seal(message: bytes, *, domain: str, selector: str, private_key: bytes, authserv_id: str,
         auth_results: str, txt: TxtLookup, now: int | None = None) -> bytes:
    """The next ARC set for `message`, CRLF-terminated headers to put on top of it.

    `auth_results` is the body of our own Authentication-Results header (what follows
    "Authentication-Results: "); it becomes the ARC-Authentication-Results of the set, with
    the chain's status from `verify_chain` as its arc= result and the seal's cv=. The key is
    an RSA private key in PEM (RFC 8617 allows only rsa-sha256).

    A message that already has 50 sets is not sealed: b"" comes back and a warning says why.
    """
    chain = verify_chain(message, txt)
    if chain.instances >= INSTANCE_LIMIT:
        log.warning("ARC: not sealed, the message already has %d ARC sets (at most %d)",
                    chain.instances, INSTANCE_LIMIT)
        return b""
    if chain.instances and chain.result == "none":
        # dkimpy reports "none" for a chain it could not read at all; a chain that is there but
        # unreadable is a broken one (RFC 8617 5.2).
        chain = ChainResult("fail", chain.instances, chain.detail)
    ours = _auth_results_with_cv(auth_results, authserv_id, chain.result)
    # dkimpy reads the status and the results from an Authentication-Results header on the
    # message; it never signs that header, so the set is valid for the message without it.
    stamped = b"Authentication-Results: " + ours + b"\r\n" + message
    headers = dkim.ARC(stamped, signature_algorithm=b"rsa-sha256", linesep=b"\r\n").sign(
        selector.encode("ascii"), domain.encode("ascii"), private_key, authserv_id.encode("utf-8"),
        timestamp=int(time.time()) if now is None else now)
    if not headers:
        raise RuntimeError("ARC: dkimpy produced no ARC set")
    return b"".join(headers)
