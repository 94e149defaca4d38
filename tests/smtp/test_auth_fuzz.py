"""
Property test of the SMTP AUTH exchange (issue 17 item 2): whatever the
client sends after EHLO -- AUTH commands with any mechanism and initial
response, then any responses -- every reply line is a valid SMTP reply
(with an enhanced status code unless it is a 334 challenge), nothing is
logged as an internal error, and the session is never dropped without a
reply.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.smtp.auth_support import AuthSession, b64

_REPLY = re.compile(r"^(334 [A-Za-z0-9+/=]*|[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( .*)?)$")

# Decoded SASL responses that matter: NUL-separated parts, empty parts, the right and wrong logins.
_parts = st.sampled_from([b"", b"alice", b"bob", b"right", b"wrong", b"\0", b"\xff", b"a" * 300])
_decoded = st.lists(_parts, max_size=5).map(lambda parts: b"\0".join(parts))
_response = st.one_of(
    _decoded.map(b64),
    st.sampled_from([b"*", b"=", b"", b" ", b"====", b"AA=A", b"not base64!", b"\x00", b"\xff\xfe"]),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)
_mechanism = st.sampled_from([b"PLAIN", b"LOGIN", b"plain", b"login", b"CRAM-MD5", b"", b"X" * 80])
_command = st.tuples(_mechanism, st.one_of(st.none(), _response), st.sampled_from([b"", b" extra"])).map(
    lambda t: b"AUTH" + (b" " + t[0] if t[0] else b"") + (b" " + t[1] if t[1] is not None else b"") + t[2]
)
_exchange = st.tuples(_command, st.lists(_response, max_size=3))


class AuthFuzzTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_exchange, min_size=1, max_size=4))
    def test_every_exchange_is_answered(self, exchanges) -> None:
        session = AuthSession(limit=5)
        with capturedLogs() as events:
            for command, responses in exchanges:
                for line in (command, *responses):
                    if session.transport.disconnecting:
                        break
                    replies = session.send(line + b"\r\n")
                    for reply in replies:
                        self.assertRegex(reply, _REPLY)
                    self.assertTrue(replies, f"no reply to {line!r}")
        internal = [e for e in events if "log_failure" in e or e.get("log_level") and e["log_level"].name in ("error", "critical")]
        self.assertEqual(internal, [])
