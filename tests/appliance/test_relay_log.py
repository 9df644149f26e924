"""The relay's log read where it lives: a real file written, truncated and rotated under the
reader, the journal's JSON lines, and a real journalctl that fails."""

import asyncio
import json
import shutil
from datetime import datetime

import pytest

from appliance.relay_log import RELAY_UNIT, Journal, LogFile, LogLine, parse_file_line, parse_journal_entry


class Follower:
    """Runs RelayLog.follow in a task and keeps what it yields and every problem it reports."""

    def __init__(self, source, history: int = 100):
        self.lines: list[LogLine] = []
        self.problems: list[str] = []
        self.source, self.history = source, history

    async def __aenter__(self):
        async def run():
            async for batch in self.source.follow(self.history, self.problems.append):
                self.lines.extend(batch)

        self.task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def texts(self) -> list[str]:
        return [line.text for line in self.lines]

    async def until(self, condition, what: str, timeout: float = 5.0):
        for _ in range(int(timeout / 0.02)):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}: {self.texts()} {self.problems}")


def stamped(text: str, when: str = "2026-12-06 11:21:58,123") -> str:
    return f"{when} {text}\n"


def test_a_file_line_splits_into_its_time_stamp_and_text():
    assert parse_file_line("2026-12-05 23:59:01,042 postern/smtp: 66A1: to=<bob@example.com>, status=sent") == \
        LogLine(datetime(2026, 12, 5, 23, 59, 1), "postern/smtp: 66A1: to=<bob@example.com>, status=sent")
    # A traceback's lines, and whatever else reached stderr, have no time stamp.
    assert parse_file_line('  File "relay/daemon.py", line 3') == LogLine(None, '  File "relay/daemon.py", line 3')


# What `journalctl --unit postern-relay.service --output json` writes for the relay's lines: one JSON
# object a line; MESSAGE an array of byte values when the line is not valid UTF-8.
JOURNAL_LINES = [
    '{"__CURSOR":"s=2b3c4d5e6f708192a3b4c5d6e7f80910;i=1c3f;b=9f1e2d3c4b5a69788796a5b4c3d2e1f0;m=1d1a2b3c;'
    't=62895c3a1b2c3;x=4e5f6a7b8c9d0e1f","__REALTIME_TIMESTAMP":"1733484118123456",'
    '"__MONOTONIC_TIMESTAMP":"488254268","_BOOT_ID":"9f1e2d3c4b5a69788796a5b4c3d2e1f0","PRIORITY":"6",'
    '"SYSLOG_FACILITY":"3","_UID":"998","_GID":"998","_SYSTEMD_UNIT":"postern-relay.service",'
    '"SYSLOG_IDENTIFIER":"postern-relay","_TRANSPORT":"stdout","_PID":"612","_COMM":"postern-relay",'
    '"MESSAGE":"postern/smtp: 66A1B2C3D4E5F607: to=<bob@example.com>, relay=mx.example.com[192.0.2.7]:25, '
    'dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ)"}',
    '{"__CURSOR":"s=2b3c4d5e6f708192a3b4c5d6e7f80910;i=1c40","__REALTIME_TIMESTAMP":"1733484119000000",'
    '"_SYSTEMD_UNIT":"postern-relay.service","_TRANSPORT":"stdout",'
    '"MESSAGE":[112,111,115,116,101,114,110,47,115,109,116,112,100,58,32,72,69,76,79,32,255,10]}',
    '{"__CURSOR":"s=2b3c4d5e6f708192a3b4c5d6e7f80910;i=1c41","__REALTIME_TIMESTAMP":"1733484120000000",'
    '"_SYSTEMD_UNIT":"postern-relay.service","MESSAGE":null}',
]


def test_journal_entries_give_their_time_and_message():
    sent, odd, too_large = (parse_journal_entry(line) for line in JOURNAL_LINES)
    assert sent == LogLine(datetime.fromtimestamp(1733484118.123456),
                           "postern/smtp: 66A1B2C3D4E5F607: to=<bob@example.com>, relay=mx.example.com[192.0.2.7]:25, "
                           "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ)")
    assert odd.text == "postern/smtpd: HELO \ufffd"  # not UTF-8: decoded with a replacement, line end off
    assert too_large == LogLine(datetime.fromtimestamp(1733484120), "")
    assert parse_journal_entry("-- No entries --") is None
    assert parse_journal_entry('{"MESSAGE": "no time"}') is None


async def test_a_log_file_gives_its_last_lines_then_follows(tmp_path):
    path = tmp_path / "relay.log"
    path.write_text("".join(stamped(f"postern/master: line {n}") for n in range(10)) + "2026-12-06 11:2")
    async with Follower(LogFile(path, poll=0.02), history=3) as log:
        await log.until(lambda: len(log.lines) >= 3, "the history")
        assert log.texts() == ["postern/master: line 7", "postern/master: line 8", "postern/master: line 9"]
        assert log.lines[0].when == datetime(2026, 12, 6, 11, 21, 58)
        with path.open("a") as file:  # the half-written line, completed, and one more
            file.write("2:00,000 postern/smtpd: connect from client\nTraceback (most recent call last):\n")
        await log.until(lambda: len(log.lines) == 5, "the new lines")
        assert log.lines[3] == LogLine(datetime(2026, 12, 6, 11, 22), "postern/smtpd: connect from client")
        assert log.lines[4] == LogLine(None, "Traceback (most recent call last):")


async def test_a_log_file_truncated_or_rotated_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "relay.log"
    path.write_text(stamped("postern/master: before"))
    async with Follower(LogFile(path, poll=0.02)) as log:
        await log.until(lambda: log.texts() == ["postern/master: before"], "the first line")
        path.write_text("")  # as logrotate's copytruncate does; then the relay writes on
        await asyncio.sleep(0.1)
        with path.open("a") as file:
            file.write(stamped("postern/master: after truncation"))
        await log.until(lambda: log.texts()[-1:] == ["postern/master: after truncation"], "the truncated file")
        path.rename(tmp_path / "relay.log.1")
        await asyncio.sleep(0.1)
        path.write_text(stamped("postern/master: a long line in a new file, longer than the old one was"))
        await log.until(lambda: "new file" in log.texts()[-1], "the rotated file")
        assert log.texts() == ["postern/master: before", "postern/master: after truncation",
                               "postern/master: a long line in a new file, longer than the old one was"]


async def test_a_log_file_not_there_yet_is_waited_for(tmp_path):
    path = tmp_path / "relay.log"
    async with Follower(LogFile(path, poll=0.02)) as log:
        await log.until(lambda: log.problems, "the problem")
        assert log.problems == [f"{path} does not exist (yet)"]
        path.write_text(stamped("postern/master: daemon started"))
        await log.until(lambda: log.texts() == ["postern/master: daemon started"], "the line")
        assert len(log.problems) == 1  # said once


def test_the_journal_is_read_for_the_relay_unit_and_resumed_after_the_last_entry():
    journal = Journal()
    assert journal.arguments(200, None) == ["journalctl", "--unit", RELAY_UNIT, "--output", "json", "--follow",
                                            "--no-pager", "--quiet", "--lines", "200"]
    assert journal.arguments(200, "s=1;i=2")[-2:] == ["--after-cursor", "s=1;i=2"]


@pytest.mark.skipif(not shutil.which("journalctl"), reason="needs journalctl")
async def test_a_journalctl_that_fails_is_reported_in_its_own_words(tmp_path):
    """A journal directory that is not there: journalctl says so and stops."""
    missing = tmp_path / "no-journal"
    async with Follower(Journal(command=("journalctl", "--directory", str(missing)))) as log:
        await log.until(lambda: log.problems, "the problem")
    assert log.problems == [f"journalctl stopped: Failed to open {missing}: No such file or directory"]
    assert not log.lines


async def test_a_journal_reader_that_cannot_start_is_reported(tmp_path):
    async with Follower(Journal(command=(str(tmp_path / "no-journalctl"),))) as log:
        await log.until(lambda: log.problems, "the problem")
    assert log.problems == [f"cannot run {tmp_path / 'no-journalctl'}: No such file or directory"]


def test_journal_json_round_trip_keeps_the_message():
    line = json.dumps({"__REALTIME_TIMESTAMP": "1733484118000000", "MESSAGE": "postern/master: reload\n"})
    assert parse_journal_entry(line).text == "postern/master: reload"
