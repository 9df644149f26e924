"""Every SMTP reply the relay sends, named once, in Postfix's wording where it has one."""

OK = "250 2.0.0 Ok"
SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
QUEUED = "250 2.0.0 Ok: queued as {id}"
BYE = "221 2.0.0 Bye"

TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Error: too many connections, try again later"
CLIENT_TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Error: too many connections from {ip}"
SESSION_TOO_LONG = "421 4.4.2 {hostname} Error: session time limit exceeded"
IDLE_TIMEOUT = "421 4.4.2 {hostname} Error: timeout exceeded"
TOO_MANY_JUNK_COMMANDS = "421 4.7.0 {hostname} Error: too many junk commands"
TOO_MANY_ERRORS = "421 4.7.0 {hostname} Error: too many errors"
SHUTTING_DOWN = "421 4.3.2 {hostname} Service shutting down"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage"
QUEUE_WRITE_ERROR = "451 4.3.0 Error: queue file write error"
SIGNING_ERROR = "451 4.7.0 Error: cannot sign the message now, try again later"  # OpenDKIM's tempfail

BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"
BAD_HELO = "501 5.5.2 Helo command rejected: Invalid name"
RELAY_DENIED = "554 5.7.1 <{rcpt}>: Relay access denied"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
NUL_IN_MESSAGE = "554 5.6.0 Error: message content contains NUL characters"
TOO_MANY_HOPS = "554 5.4.0 Error: too many hops"
TLS_ALREADY_ACTIVE = "554 5.5.1 Error: TLS already active"

# Gateway policies: inbound TLS, migration hold, Microsoft 365 tenants, loops, recipient verification.
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"
DOMAIN_PAUSED = "451 4.3.2 Service temporarily unavailable, try again later"
DMARC_REJECT = "550 5.7.1 Email rejected per DMARC policy for {domain}"  # OpenDMARC's words
TENANT_REFUSED = "550 5.7.1 Relay access denied: Microsoft 365 tenant check failed: {reason}"
MAIL_LOOP = "554 5.4.6 Error: mail loop: the message passed {value} {count} times already ({header})"
RECIPIENT_UNDELIVERABLE = "{code} {dsn} <{rcpt}>: Recipient address rejected: undeliverable address: {reason}"
RECIPIENT_UNVERIFIED = "450 4.1.1 <{rcpt}>: Recipient address rejected: unverified address: {reason}"

# aiosmtpd answers some commands itself, without enhanced status codes; the relay
# adds the code that class of reply carries (RFC 3463) so every reply has one.
ENHANCED_DEFAULTS = {
    "221": "2.0.0",
    "250": "2.0.0",
    "421": "4.7.0",
    "451": "4.3.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.5.0",
    "555": "5.5.4",
}

# aiosmtpd's own size replies, reworded as Postfix says them.
_REWORDED = {
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "250 OK": OK,
    "221 Bye": BYE,
}


def with_enhanced_code(reply: str) -> str:
    """Add an RFC 3463 enhanced status code to a one-line reply that lacks one."""
    if reply in _REWORDED:
        return _REWORDED[reply]
    code, _, text = reply.partition(" ")
    if code not in ENHANCED_DEFAULTS or text[:1].isdigit():
        return reply
    return f"{code} {ENHANCED_DEFAULTS[code]} {text}"

# CHUNKING (RFC 3030): BDAT and the commands around it, as Postfix's smtpd answers them.
CHUNK_OK = "250 2.0.0 Ok: {size} bytes"
BDAT_SYNTAX = "521 5.5.4 Syntax: BDAT count [LAST]"
NULL_BDAT = "551 5.7.1 Null BDAT request"
BDAT_DISCARDED = "551 5.0.0 Discarded {size} bytes after earlier error"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
NO_VALID_RECIPIENTS = "554 5.5.1 Error: no valid recipients"
CHUNK_TOO_BIG = "552 5.3.4 Chunk exceeds message size limit"
MAIL_AFTER_BDAT = "503 5.5.1 Error: MAIL after BDAT"
RCPT_AFTER_BDAT = "503 5.5.1 Error: RCPT after BDAT"
DATA_AFTER_BDAT = "503 5.5.1 Error: DATA after BDAT"

# The receiving side's protocol replies, in Postfix's smtpd wording (see relay/esmtp.py).
COMMAND_TOO_LONG = "500 5.5.2 {hostname} Error: command too long"
BAD_UTF8 = "500 5.5.2 Error: bad UTF-8 syntax"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
BAD_SIZE_SYNTAX = "501 5.5.4 Bad message size syntax"
BAD_RET_SYNTAX = "501 5.5.4 Bad RET parameter syntax"
BAD_ENVID_SYNTAX = "501 5.5.4 Bad ENVID parameter syntax"
BAD_NOTIFY_SYNTAX = "501 5.5.4 Error: Bad NOTIFY parameter syntax"
BAD_ORCPT_SYNTAX = "501 5.5.4 Error: Bad ORCPT parameter syntax"
UNSUPPORTED_OPTION = "555 5.5.4 Unsupported option: {option}"
