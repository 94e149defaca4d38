"""Fuzz: what the store and the queue read back from disk: dovecot-uidlist, Maildir names, queue envelopes."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailserver.queue.envelope import EnvelopeError, loads
from mailserver.store.names import parse_name, split_name, virtual_size
from mailserver.store.uidlist import delivery_order, parse_uidlist
from tests.fuzz.bounds import bounded
from tests.fuzz.strategies import UNICODE_DIGITS, salted

UIDLIST_TOKENS = ["3", "1", " ", "\n", ":", "V", "N", "G", "W", "0", "5", "4294967295", "4294967296", "99999999999999",
                  ":2,S", "/", "1700000000.M1P2Q3.host", ",S=10", ",W=12"] + UNICODE_DIGITS
NAME_TOKENS = ["1700000000", ".", "M", "P", "Q", "V", "I", "host", ",", "S=", "W=", ":", "2,", "FS", "=", "x"] + \
    UNICODE_DIGITS


def envelope_documents() -> st.SearchStrategy[bytes]:
    """JSON close to what dumps() writes, with any field replaced by anything."""
    scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
    anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=10)
    recipient = st.fixed_dictionaries({}, optional={
        "address": st.sampled_from(["bob@example.com", ""]) | anything,
        "status": st.sampled_from(["pending", "sent", "deferred", "bounced", "x"]) | anything,
        "reason": anything, "original": anything})
    document = st.fixed_dictionaries({}, optional={
        "version": st.sampled_from([1, 2, "1"]) | anything, "queue_id": st.sampled_from(["4F2A1C0B", "x/../y"]) | anything,
        "sender": anything, "arrival": anything, "next_attempt": anything, "attempts": anything,
        "last_attempt": anything, "size": anything, "recipients": st.lists(recipient, max_size=3) | anything})
    return document.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200)


class StoreFileTests(SynchronousTestCase):
    @given(salted(UIDLIST_TOKENS))
    def test_parse_uidlist_never_raises(self, text: str) -> None:
        parsed = bounded(parse_uidlist, text)
        if parsed is not None:
            self.assertTrue(all(parsed.uidnext > uid for uid in parsed.uids.values()))

    @given(salted(NAME_TOKENS))
    def test_maildir_names_never_raise(self, name: str) -> None:
        bounded(split_name, name)
        bounded(parse_name, name)
        bounded(virtual_size, name)
        bounded(delivery_order, name)


class QueueEnvelopeTests(SynchronousTestCase):
    @given(envelope_documents())
    def test_loads_raises_only_envelope_error(self, data: bytes) -> None:
        bounded(loads, data, allowed=(EnvelopeError,))
