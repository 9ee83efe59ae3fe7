"""The claim builds a chunk outside any write: other writers commit meanwhile, and what they change while the chunk
is being built (an unsubscribe, a new address, another sender's claim) decides what is sent."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from suppilo.contacts.models import Contact
from suppilo.messaging import outbox, suppression
from suppilo.messaging.outbox_models import OutboxMessage
from tests.integration.messaging.outbox_support import RENDERED, SmtpSink, add_contact, drain, make_sender


def _enqueue(factory, ws_id, contact_ids, prefix):
    with factory() as s:
        outbox.enqueue_many(
            s,
            ws_id,
            [{"dedupe_key": f"{prefix}:{cid}", "contact_id": cid, "rendered": RENDERED} for cid in contact_ids],
        )
        s.commit()
        return {
            cid: s.query(OutboxMessage.id).filter_by(workspace_id=ws_id, contact_id=cid).scalar() for cid in contact_ids
        }


def _during_build(sender, action):
    """Run ``action`` (in another thread, with its own session) while the sender builds its first claimed chunk;
    returns a list that holds True once the action committed within 10 s."""
    done: list[bool] = []
    build = sender._build_all

    def hooked(jobs):
        if not done:
            worker = threading.Thread(target=action)
            worker.start()
            worker.join(10)
            done.append(not worker.is_alive())
        return build(jobs)

    sender._build_all = hooked
    return done


def test_an_unsubscribe_while_the_chunk_is_built_commits_at_once_and_stops_the_message(session_factory, workspace):
    ws = workspace.id
    alice = add_contact(session_factory, ws, "alice@example.com", country="US")
    bob = add_contact(session_factory, ws, "bob@example.com", country="US")
    ids = _enqueue(session_factory, ws, [alice, bob], "unsub")

    def unsubscribe():
        with session_factory() as s:
            suppression.suppress(s, ws, "alice@example.com", "unsubscribe", source="test")
            s.commit()

    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        committed = _during_build(sender, unsubscribe)
        stats = asyncio.run(drain(sender, transport))
    assert committed == [True]  # the unsubscribe did not wait for the claim's write lock
    assert [r.rcpt_tos for r in sink.received] == [["bob@example.com"]]
    assert stats.sent == 1 and stats.suppressed == 1
    with session_factory() as s:
        assert s.get(OutboxMessage, ids[alice]).status == "suppressed"
        assert s.get(OutboxMessage, ids[bob]).status == "sent"


def test_a_message_whose_address_changed_while_it_was_built_goes_to_the_new_address_once(session_factory, workspace):
    ws = workspace.id
    carol = add_contact(session_factory, ws, "carol@old.example.com", country="US")
    ids = _enqueue(session_factory, ws, [carol], "moved")

    def move():
        with session_factory() as s:
            s.get(Contact, carol).email = "carol@new.example.com"
            s.commit()

    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        committed = _during_build(sender, move)
        stats = asyncio.run(drain(sender, transport))
    assert committed == [True]
    assert [r.rcpt_tos for r in sink.received] == [["carol@new.example.com"]]
    assert stats.sent == 1
    with session_factory() as s:
        row = s.get(OutboxMessage, ids[carol])
        assert (row.status, row.to_address, row.attempts) == ("sent", "carol@new.example.com", 1)


def test_rows_another_sender_claims_while_the_chunk_is_built_are_sent_once(session_factory, workspace):
    """SQLite: the second sender reads, builds and marks the first one's rows before it; the first sender's write
    finds them taken, leaves them and claims the next rows. PostgreSQL: the second sender skips the rows the first
    one holds. Either way every message goes once and every row ends sent."""
    ws = workspace.id
    contacts = [add_contact(session_factory, ws, f"race{i}@example.com", country="US") for i in range(40)]
    _enqueue(session_factory, ws, contacts, "race")
    with SmtpSink() as sink:
        first, first_transport = make_sender(session_factory, sink, ws, chunk_size=20)
        second, second_transport = make_sender(session_factory, sink, ws, chunk_size=20)

        def second_sender_sends_a_chunk():
            claimed = second.claim(20)

            async def send():
                try:
                    return [await second._send_one(p) for p in claimed]
                finally:
                    await second_transport.close()

            second.finish(asyncio.run(send()))

        committed = _during_build(first, second_sender_sends_a_chunk)
        first_stats = asyncio.run(drain(first, first_transport))
    assert committed == [True]
    assert first_stats.sent == 20 and second.stats.sent == 20
    counts = Counter(r.rcpt_tos[0] for r in sink.received)
    assert len(counts) == 40 and set(counts.values()) == {1}
    with session_factory() as s:
        assert outbox.counts(s, ws) == {"sent": 40}
