"""Delivery status notifications (RFC 3464) for recipients that failed for good."""

from __future__ import annotations

import email.utils
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP

from .config import MtaConfig
from .queue.entry import QueueEntry, Recipient


def _human_text(config: MtaConfig, entry: QueueEntry, failed: list[Recipient]) -> str:
    lines = [
        f"This is the mail system at host {config.hostname}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "                   The mail system",
        "",
    ]
    for recipient in failed:
        lines.append(f"<{recipient.address}>: {recipient.last_reply}")
    return "\n".join(lines) + "\n"


def _status_blocks(config: MtaConfig, entry: QueueEntry, failed: list[Recipient]) -> list[Message]:
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {config.hostname}"
    per_message["X-Postern-Queue-ID"] = entry.id
    per_message["Arrival-Date"] = email.utils.formatdate(entry.envelope.arrival, localtime=True)
    blocks = [per_message]
    for recipient in failed:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {recipient.address}"
        block["Original-Recipient"] = f"rfc822; {recipient.address}"
        block["Action"] = "failed"
        block["Status"] = recipient.dsn or "5.0.0"
        if recipient.relay:
            block["Remote-MTA"] = f"dns; {recipient.relay.split('[')[0]}"
        block["Diagnostic-Code"] = f"smtp; {recipient.last_reply}"
        blocks.append(block)
    return blocks


def build_dsn(config: MtaConfig, entry: QueueEntry, failed: list[Recipient], original_headers: bytes) -> bytes:
    """The notification to the envelope sender, as bytes ready to queue (CRLF line ends)."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"MAILER-DAEMON@{config.hostname} (Mail Delivery System)"
    report["To"] = entry.envelope.sender
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = email.utils.formatdate(localtime=True)
    report["Message-ID"] = email.utils.make_msgid(domain=config.hostname)
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(_human_text(config, entry, failed), "plain", "utf-8"))
    status = MIMEBase("message", "delivery-status")
    status.set_payload(_status_blocks(config, entry, failed))
    report.attach(status)
    headers = MIMEBase("text", "rfc822-headers")
    headers.set_payload(original_headers.decode("ascii", "replace"))
    report.attach(headers)
    return report.as_bytes(policy=SMTP)
