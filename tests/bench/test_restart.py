"""The restart figure, on the real relay daemon with a small queue (a few seconds)."""

import socket
import time

import pytest

from bench.postern import PosternInstance
from bench.restart import first_250, measure_restart
from bench.tools import BenchError, Sink


def test_restart_on_a_queue_is_timed_until_a_new_message_is_accepted(tmp_path):
    result = measure_restart(300, tmp_path)
    assert result["ok"], result.get("error")
    assert 0 < result["seconds_to_greeting"] <= result["seconds_to_250"] < 30
    assert result["rss"] >= result["pss"] > 0
    assert not list(tmp_path.glob("postern-bench-*"))  # the daemon's directory is gone with it


def test_a_daemon_that_cannot_start_is_reported_not_waited_for(tmp_path):
    sink = Sink(tmp_path).start()
    instance = PosternInstance(sink.port, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: the daemon cannot listen there, connecting is refused
        try:
            began = instance.launch(taken.getsockname()[1])
            with pytest.raises(BenchError, match="exited"):
                first_250(instance, began + 60)
            assert time.monotonic() - began < 30
        finally:
            instance.stop()
            sink.stop()
