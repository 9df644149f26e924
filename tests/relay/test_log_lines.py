"""Log lines: formatted once for stderr and the control API's buffer, with the time stamp made once a
second, and still exactly the text the standard formatter gives, whatever the time and the message."""

import asyncio
import io
import logging
import sys
import time

import pytest

from relay.daemon import setup_logging
from relay.events import LogBuffer, LogLines, PrintableFormatter

FORMAT = "%(asctime)s %(name)s: %(message)s"


def record(message: str, *args, created: float | None = None, exc_info=None) -> logging.LogRecord:
    made = logging.LogRecord("postern/smtp", logging.INFO, __file__, 1, message, args, exc_info)
    if created is not None:
        made.created = created
        made.msecs = int((created - int(created)) * 1000)
    return made


def standard(made: logging.LogRecord, fmt: str = FORMAT) -> str:
    return logging.Formatter(fmt).format(logging.makeLogRecord(dict(made.__dict__, _postern_lines={})))


def test_lines_across_seconds_are_the_standard_formatters_lines():
    formatter = PrintableFormatter(FORMAT)
    start = time.time()
    # within one second, then the next, then back (a clock set back), then hours later
    for created in (start, start + 0.001, start + 0.999, start + 1.0, start + 1.5, start - 3600.25, start + 86400.75):
        made = record("%s: to=<%s>, status=%s", "0123456789ABCDEF", "bob@example.org", "sent", created=created)
        assert formatter.format(made) == standard(made)


def test_control_characters_still_become_question_marks_once_cached():
    formatter = PrintableFormatter(FORMAT)
    made = record("client said %s", "evil\r\nfake line\x1b[2J")
    first = formatter.format(made)
    assert first.endswith("client said evil??fake line?[2J")
    assert formatter.format(made) == first  # the second handler's copy
    assert PrintableFormatter(FORMAT).format(made) == first  # another formatter of the same format


def test_a_formatter_of_another_format_gets_its_own_line():
    made = record("%s: removed", "0123456789ABCDEF")
    with_time = PrintableFormatter(FORMAT).format(made)
    without = PrintableFormatter("%(name)s: %(message)s").format(made)
    assert without == "postern/smtp: 0123456789ABCDEF: removed"
    assert with_time.endswith(" " + without) and with_time != without


def test_a_traceback_keeps_its_lines_and_is_the_same_for_both_handlers():
    try:
        raise ValueError("bad\x07value")
    except ValueError:
        made = record("delivery failed", exc_info=sys.exc_info())
    line = PrintableFormatter(FORMAT).format(made)
    assert "\nValueError: bad?value" in line and line.startswith(standard(made).split(" ", 2)[0])
    assert PrintableFormatter(FORMAT).format(made) == line


def test_the_daemons_handlers_write_the_same_line_to_stderr_and_the_buffer(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks"):
        monkeypatch.setattr(logging, name, getattr(logging, name, True), raising=False)  # set back afterwards
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        buffer = setup_logging(False)
        logging.getLogger("postern/qmgr").info("%s: removed", "00000000000000AB")
        logging.getLogger("postern/qmgr").info("%s: to=<%s>", "00000000000000AC", "a\nb@example.org")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert isinstance(buffer, LogBuffer)
    assert stderr.getvalue().splitlines() == [line for _, line in buffer.tail(2)]
    assert stderr.getvalue().splitlines()[1].endswith("postern/qmgr: 00000000000000AC: to=<a?b@example.org>")


def test_a_stamped_line_is_the_unstamped_line_with_the_stamp_in_front():
    class Counted:  # counts how often the message is formatted
        calls = 0

        def __str__(self):
            Counted.calls += 1
            return "evil\x1b[2J"

    try:
        raise ValueError("bad\x07value")
    except ValueError:
        made = record("%s: said %s", "0123456789ABCDEF", Counted(), exc_info=sys.exc_info())
    without = PrintableFormatter("%(name)s: %(message)s").format(made)
    with_time = PrintableFormatter(FORMAT).format(made)
    assert Counted.calls == 1  # the message was formatted once for both
    assert without.startswith("postern/smtp: 0123456789ABCDEF: said evil?[2J\nTraceback")
    assert with_time.split(" ", 2)[:2] == standard(made).split(" ", 2)[:2]  # the standard stamp
    assert with_time.split(" ", 2)[2] == without


def test_on_the_journal_stderr_gets_the_buffers_lines_without_their_stamp(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks"):
        monkeypatch.setattr(logging, name, getattr(logging, name, True), raising=False)  # set back afterwards
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        buffer = setup_logging(False)
        logging.getLogger("postern/qmgr").info("%s: removed", "00000000000000AB")
        logging.getLogger("postern/qmgr").info("%s: to=<%s>", "00000000000000AC", "a\nb@example.org")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    buffered = [line for _, line in buffer.tail(2)]
    assert stderr.getvalue().splitlines() == ["postern/qmgr: 00000000000000AB: removed",
                                              "postern/qmgr: 00000000000000AC: to=<a?b@example.org>"]
    for line, bare in zip(buffered, stderr.getvalue().splitlines()):
        date, clock, rest = line.split(" ", 2)
        assert rest == bare and len(date) == 10 and len(clock) == 12  # 2026-12-06 18:05:01,123


class CountedWrites(io.StringIO):
    """stderr that counts its writes."""

    writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


async def test_the_lines_of_one_turn_of_the_loop_go_out_in_one_write_each_way_and_in_order():
    stderr, tails = CountedWrites(), []
    handler = LogLines("%(name)s: %(message)s", tails.append, FORMAT)
    logger = logging.getLogger("postern/test-turns")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "stderr", stderr)
            for n in range(3):  # one message's lines, logged in one turn
                logger.info("line %d", n)
            assert stderr.getvalue() == "" and tails == []  # not yet: at the end of the turn
            await asyncio.sleep(0)
            assert stderr.getvalue() == "postern/test-turns: line 0\npostern/test-turns: line 1\n" \
                                        "postern/test-turns: line 2\n" and stderr.writes == 1
            assert [[line.split(" ", 2)[2] for line in lines] for lines in tails] == [
                ["postern/test-turns: line 0", "postern/test-turns: line 1", "postern/test-turns: line 2"]]
            # a worker thread's line goes out at once, after the loop's lines waiting before it
            logger.info("from the loop")
            await asyncio.to_thread(logger.info, "from a worker thread")
            await asyncio.sleep(0)
            assert stderr.getvalue().splitlines()[-2:] == ["postern/test-turns: from the loop",
                                                           "postern/test-turns: from a worker thread"]
            # lines still waiting when the loop stops are written by logging's flush at exit
            logger.info("the last line")
            handler.flush()
            assert stderr.getvalue().endswith("postern/test-turns: the last line\n")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
