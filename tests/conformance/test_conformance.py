"""Each case against Postfix and against Postern, compared (see cases.py and docs/conformance.md)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .cases import Case
from .catalogue import CASES


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


def observe(case: Case, peer) -> dict:
    peer.hop.reset(case.script())
    settings = case.postfix_settings if peer.name == "postfix" else case.postern_settings
    peer.configure(settings)
    mark = peer.mark()
    try:
        return case.run(peer)
    finally:
        peer.clear_queue()
        peer.restore(settings)
        if "status=deferred" in peer.log_since(mark):
            # Both servers stop trying a next hop that failed for the minimal backoff time (1 s here);
            # the next case must find it alive again.
            time.sleep(1.1)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_case(case: Case, peers):
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(observe, case, peer) for name, peer in peers.items()}
        observed = {name: future.result() for name, future in futures.items()}
    postfix, postern = observed["postfix"], observed["postern"]
    if case.postfix:
        assert case.postfix(postfix), f"Postfix does not show what the case is about: {postfix}"
    if case.why:
        case.postern(postern, postfix)
    else:
        assert postern == postfix
