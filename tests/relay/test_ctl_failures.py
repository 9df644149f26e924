"""posternctl's failures: each in the words of relay.control.errors.explain, each with its own exit code."""

import subprocess
import sys
import time

from relay.control.errors import NoAnswer, Unreachable, explain
from relay.ctl import EXIT_NO_ANSWER, EXIT_UNREACHABLE, main
from tests.support.control_socket import SilentSocket


def test_a_relay_that_takes_the_connection_but_never_answers_is_not_called_not_running(tmp_path, capsys):
    path = str(tmp_path / "control.sock")
    with SilentSocket(path) as silent:
        started = time.monotonic()
        code = main(["status", "--socket", path, "--timeout", "0.5"])
        waited = time.monotonic() - started
        assert silent.connections  # it did connect
    err = capsys.readouterr().err
    assert code == EXIT_NO_ANSWER
    assert err.startswith(f"posternctl: {explain(NoAnswer(path, 0.5))}: {path}")
    assert "did not answer within 0.5 s" in err and "not running" not in err
    assert waited < 5


def test_a_socket_nobody_listens_on_reads_as_the_console_says_it(tmp_path):
    path = str(tmp_path / "nothing.sock")
    result = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", path, "queue", "list"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stderr.startswith(f"posternctl: {explain(Unreachable(path))}: {path}: ")
    assert "Relay: not running" in result.stderr
