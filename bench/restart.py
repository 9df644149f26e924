"""How long the relay takes to take mail again when it starts on a large queue.

A fresh state directory gets N deferred messages in the daemon's own format
(bench.queue_list.fill_queue, next attempt a day away, so none is tried during the
measurement), the files are flushed to disk, then the daemon is started and a
client tries, again and again, to send one new message over SMTP. The figure is the
time from creating the daemon's process until that message got its 250: what a
sender sees after a restart (a refused or reset connection is retried at once,
as a sending MTA would retry later). The queue files are in the page cache (just
written) unless `cold` drops the cache first, as after a reboot.
"""

from __future__ import annotations

import os
import smtplib
import time
from pathlib import Path

from .postern import PosternInstance
from .queue_list import fill_queue
from .tools import HOST, BenchError, Sink, free_port, tail

RETRY = 0.02  # seconds between two attempts while the daemon does not answer yet


def first_250(instance: PosternInstance, deadline: float) -> tuple[float, float | None]:
    """Send one message until it is accepted: the monotonic times of the 250 and of the
    first connection that got a greeting (None if the 250 came on the first)."""
    greeted = None
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise BenchError(f"the relay daemon exited with {instance.process.returncode}: {tail(instance.log_path)}")
        try:
            with smtplib.SMTP(HOST, instance.port, local_hostname="bench.example.net",
                              timeout=max(deadline - time.monotonic(), 0.1)) as smtp:
                greeted = greeted or time.monotonic()
                smtp.sendmail("sender@bench.example.net", ["recipient@example.com"],
                              b"Subject: after restart\r\n\r\nhello\r\n")
                return time.monotonic(), greeted
        except (OSError, smtplib.SMTPException) as error:  # refused, reset, or a 4xx while starting
            last_error = repr(error)
            time.sleep(RETRY)
    raise BenchError(f"no 250 within the time allowed; the last attempt: {last_error}")


def drop_page_cache() -> None:
    """Write out dirty pages and drop the page cache (root only), as after a reboot."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def measure_restart(messages: int, workdir: Path, cold: bool = False, timeout: float = 300) -> dict:
    """Start a daemon on a queue of `messages` deferred messages; seconds until a new message is accepted."""
    result: dict = {"messages": messages, "cold": cold}
    sink = Sink(workdir)
    instance: PosternInstance | None = None
    try:
        sink.start()
        instance = PosternInstance(sink.port, workdir)
        began = time.monotonic()
        fill_queue(instance.state_dir, messages)
        os.sync()  # the queue's writeback must not run during the measurement
        result["fill_seconds"] = round(time.monotonic() - began, 1)
        if cold:
            drop_page_cache()
        started = instance.launch(free_port())
        accepted, greeted = first_250(instance, started + timeout)
        result.update(ok=True, seconds_to_250=round(accepted - started, 3),
                      seconds_to_greeting=round((greeted or accepted) - started, 3))
        memory = instance.memory() or {}
        result.update(rss=memory.get("rss"), pss=memory.get("pss"))
    except BenchError as error:
        result.update(ok=False, error=str(error))
    finally:
        if instance is not None:
            instance.stop()
        sink.stop()
    return result
