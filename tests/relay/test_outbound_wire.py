"""The DATA content as it goes on the wire: the whole-message way for the common case must give
exactly the bytes the line-by-line way gives, for every message, odd ones above all."""

import random

import pytest

from relay import outbound


def by_line(message: bytes, limit: int = outbound.LINE_LENGTH_LIMIT) -> bytes:
    return b"".join(outbound._wire_chunks_by_line(message, limit))


def wire(message: bytes, limit: int = outbound.LINE_LENGTH_LIMIT) -> bytes:
    return b"".join(outbound.wire_chunks(message, limit))


@pytest.mark.parametrize("message", [
    b"",
    b"\r\n",
    b".",
    b".\r\n",
    b"..\r\n.\r\n",
    b"a\r\n.\r\nb\r\n",            # a lone dot line must not end the data early
    b"a\r\n..hidden\r\n",
    b"no line end at the end",
    b"ends in a bare CR\r",
    b"a\r\r\nb\r\n",
    b"bare\rCR inside\r\n",
    b"bare LF\nhere\r\n",
    b"\n.starts after a bare LF\r\n",
    b"x" * 998 + b"\r\n",
    b"x" * 999 + b"\r\n",
    b"x" * 1000 + b"\r\n.x\r\n",
    b"x" * 998,
    b"x" * 999,
    b"short\r\n" + b"y" * 997 + b"\r\r\n",   # 998 octets with the bare CR: fits
    b"short\r\n" + b"y" * 998 + b"\r\r\n",   # 999: broken
])
def test_odd_messages_go_out_as_the_line_by_line_way_sends_them(message):
    assert wire(message) == by_line(message)


def test_dots_are_stuffed_and_line_ends_kept_in_an_ordinary_message():
    message = b"Subject: x\r\n\r\n.one\r\ntwo.\r\n.\r\n...\r\n"
    assert wire(message) == b"Subject: x\r\n\r\n..one\r\ntwo.\r\n..\r\n....\r\n"


def test_random_messages_near_the_line_limit_give_the_same_bytes():
    rng = random.Random(5321)
    pieces = [b"a", b"b", b".", b"\r\n", b"\r\n.", b"\r", b"\n", b" "]
    weights = [30, 10, 5, 8, 3, 1, 1, 5]
    for _ in range(3000):
        limit = rng.randint(2, 12)  # a small limit puts lines at, over and under it all the time
        message = b"".join(rng.choices(pieces, weights, k=rng.randint(0, 60)))
        assert wire(message, limit) == by_line(message, limit), (message, limit)


def test_a_large_message_comes_in_chunks_that_add_up_to_it():
    line = b"z" * 70 + b"\r\n"
    message = b".first\r\n" + line * 3000  # about 210 KB
    chunks = list(outbound.wire_chunks(message))
    assert len(chunks) > 1 and all(len(chunk) <= outbound.CHUNK_SIZE for chunk in chunks)
    assert b"".join(chunks) == by_line(message)


def test_a_line_past_the_limit_deep_inside_a_large_message_is_still_broken():
    line = b"z" * 70 + b"\r\n"
    message = line * 2000 + b"w" * 1200 + b"\r\n" + line * 10
    out = wire(message)
    assert out == by_line(message)
    assert max(len(piece) for piece in out.split(b"\r\n")) == outbound.LINE_LENGTH_LIMIT
