import os
import shutil

import pytest

from .peers import running_peers


@pytest.fixture(scope="session")
def peers(tmp_path_factory):
    """Postfix and Postern, each relaying to its own scripted next hop, for the whole run."""
    if os.geteuid() != 0:
        pytest.skip("the conformance suite starts a private Postfix instance, which needs root")
    if not shutil.which("postfix"):
        pytest.skip("Postfix is not installed (make setup installs it)")
    with running_peers(tmp_path_factory.mktemp("conformance")) as started:
        yield started
