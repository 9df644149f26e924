"""Cases on the receiving side: what a client sends, what it is answered, what goes on."""

from .cases import RCPT, SENDER, Session, below_trace, case, cls, code, message, outcome, rejects, relayed


@case("receive", "replies; message below the trace headers")
def plain_message(peer):
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail(content=message())
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies], "content": below_trace(relayed(peer)[0].content, peer)}
