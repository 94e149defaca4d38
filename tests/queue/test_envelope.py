"""The versioned JSON envelope of queue files."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from mailserver.queue.envelope import (
    BOUNCED,
    DELIVERED,
    EnvelopeError,
    QueueEnvelope,
    RecipientState,
    dumps,
    is_queue_id,
    loads,
)


def sample() -> QueueEnvelope:
    return QueueEnvelope(
        queue_id="0A1B2C3D4E5F",
        sender="alice@example.com",
        recipients=[
            RecipientState("bob@example.org"),
            RecipientState("carol@example.org", status=BOUNCED, attempts=2, last_error="550 no", enhanced="5.1.1"),
        ],
        arrival=1000.5,
        next_attempt=1300.0,
        attempts=2,
        last_attempt=1200.0,
        size=42,
    )


class EnvelopeTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        envelope = sample()
        self.assertEqual(loads(dumps(envelope)), envelope)

    def test_is_json_with_version(self) -> None:
        document = json.loads(dumps(sample()))
        self.assertEqual(document["version"], 1)
        self.assertEqual(document["recipients"][1]["status"], "bounced")

    def test_unknown_version_refused(self) -> None:
        document = json.loads(dumps(sample()))
        document["version"] = 2
        self.assertRaises(EnvelopeError, loads, json.dumps(document).encode())

    def test_garbage_refused(self) -> None:
        for data in (b"", b"\x80\x81", b"[]", b'{"version": 1}', b"\x80\x02}q."):
            self.assertRaises(EnvelopeError, loads, data)

    def test_wrong_types_refused(self) -> None:
        for key, value in (("attempts", True), ("arrival", "soon"), ("sender", None), ("recipients", [])):
            document = json.loads(dumps(sample()))
            document[key] = value
            self.assertRaises(EnvelopeError, loads, json.dumps(document).encode())

    def test_unknown_recipient_status_refused(self) -> None:
        document = json.loads(dumps(sample()))
        document["recipients"][0]["status"] = "lost"
        self.assertRaises(EnvelopeError, loads, json.dumps(document).encode())

    def test_bad_queue_id_refused(self) -> None:
        document = json.loads(dumps(sample()))
        document["queue_id"] = "../../etc/passwd"
        self.assertRaises(EnvelopeError, loads, json.dumps(document).encode())

    def test_finished(self) -> None:
        envelope = sample()
        self.assertFalse(envelope.finished)
        envelope.recipients[0].status = DELIVERED
        self.assertFalse(envelope.finished)  # the bounce is not reported yet
        envelope.recipients[1].notified = True
        self.assertTrue(envelope.finished)

    def test_queue_ids(self) -> None:
        self.assertTrue(is_queue_id("0A1B2C3D4E5F"))
        for bad in ("", "abc", "0a1b2c3d4e5f", "../0A1B2C3D4E", "0A1B2C3D4E5F/"):
            self.assertFalse(is_queue_id(bad), bad)
