import os
import shutil

import pytest

from .hop import Hop
from .peers import PosternPeer, PostfixPeer


@pytest.fixture(scope="session")
def peers(tmp_path_factory):
    """Postfix and Postern, each relaying to its own scripted next hop, for the whole run."""
    if os.geteuid() != 0:
        pytest.skip("the conformance suite starts a private Postfix instance, which needs root")
    if not shutil.which("postfix"):
        pytest.skip("Postfix is not installed (make setup installs it)")
    parent = tmp_path_factory.mktemp("conformance")
    parent.chmod(0o755)  # Postfix's processes, running as the postfix user, reach their directories inside
    started = []
    try:
        for kind in (PostfixPeer, PosternPeer):
            hop = Hop().start()
            started.append(hop)
            started.append(kind(hop, parent))
        yield {peer.name: peer for peer in started if not isinstance(peer, Hop)}
    finally:
        for item in reversed(started):
            item.stop()
