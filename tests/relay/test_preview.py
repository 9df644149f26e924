"""The readable text of a queued message, as the console's message view shows it."""

from relay.preview import preview


def test_a_plain_message_is_its_body():
    assert preview(b"Subject: hi\r\n\r\nline one\r\nline two\r\n", True) == "line one\nline two"


def test_html_only_mail_is_shown_as_its_source_and_says_so():
    text = preview(b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hallo</p>\r\n", True)
    assert text.splitlines() == ["[HTML only, shown as its source]", "<p>Hallo</p>"]


def test_the_plain_part_wins_over_html_and_other_parts_are_named():
    message = (b"Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n"
               b"--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"w4RyZ2VyIG1pdCBVbWxhdXRlbg==\r\n--x--\r\n")
    assert preview(message, True).splitlines() == ["Ärger mit Umlauten", "", "[part: text/html]"]


def test_long_text_is_cut_at_the_line_limit_with_a_count():
    body = "".join(f"line {n}\r\n" for n in range(500))
    text = preview(("Subject: x\r\n\r\n" + body).encode(), True, lines=200).splitlines()
    assert text[199] == "line 199" and text[200] == "[... 300 more lines]" and len(text) == 201


def test_broken_encodings_and_unknown_charsets_never_raise():
    broken = (b"Content-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              b"%%%not base64\xff\r\n")
    assert isinstance(preview(broken, True), str)
    assert preview(b"Content-Type: multipart/mixed; boundary=never-closed\r\n\r\n--never-closed\r\n", False)


def test_a_message_without_text_says_so():
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\n"
               b"Content-Disposition: attachment; filename=scan.png\r\n\r\nxx\r\n--b--\r\n")
    assert preview(message, True).splitlines() == ["[no text to show]", "", '[part: image/png "scan.png"]']
