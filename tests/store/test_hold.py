"""Tests for mailserver.store.hold: the durable hold area."""

from __future__ import annotations

import json
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store import hold as hold_module
from mailserver.store.hold import ENVELOPE_VERSION, HoldArea, NoSuchMessage, check_envelope

ENVELOPE = {
    "sender": "alice@example.org",
    "recipients": ["bob@example.net", "carol@example.net"],
    "client_ip": "127.0.0.1",
    "time": 1700000000.5,
    "reason": "header_checks /etc/mailserver/header_checks:3: HOLD bulk mailer",
}
MESSAGE = b"Subject: held\r\n\r\nbody\r\n\x00\xff binary survives\n"


class HoldAreaTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.clock = [1700000001.0]
        self.area = HoldArea(self.directory, clock=lambda: self.clock[0])

    def test_round_trip(self) -> None:
        message_id = self.area.hold(ENVELOPE, MESSAGE)
        envelope, message = self.area.load(message_id)
        self.assertEqual(message, MESSAGE)
        self.assertEqual(envelope, dict(ENVELOPE, version=ENVELOPE_VERSION))
        [entry] = self.area.list()
        self.assertEqual((entry.id, entry.size, entry.problem), (message_id, len(MESSAGE), None))
        self.assertEqual(entry.envelope["recipients"], ENVELOPE["recipients"])

    def test_layout_and_permissions(self) -> None:
        message_id = self.area.hold(ENVELOPE, MESSAGE)
        entry = os.path.join(self.directory, message_id)
        self.assertEqual(sorted(os.listdir(entry)), ["envelope.json", "message"])
        with open(os.path.join(entry, "envelope.json"), encoding="utf-8") as f:
            stored = json.load(f)
        self.assertEqual(stored["version"], 1)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(entry, "message")).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode) & 0o077, 0)
        self.assertEqual(os.listdir(os.path.join(self.directory, "tmp")), [])

    def test_time_defaults_to_the_clock(self) -> None:
        envelope = {k: v for k, v in ENVELOPE.items() if k != "time"}
        message_id = self.area.hold(envelope, MESSAGE)
        self.assertEqual(self.area.load(message_id)[0]["time"], 1700000001.0)

    def test_ids_are_unique_and_listed_oldest_first(self) -> None:
        ids = []
        for index in range(5):
            self.clock[0] += 1
            ids.append(self.area.hold(dict(ENVELOPE, time=1700000000 + 10 - index), MESSAGE))
        self.assertEqual(len(set(ids)), 5)
        self.assertEqual([e.id for e in self.area.list()], list(reversed(ids)))

    def test_release_moves_the_message_for_the_daemon(self) -> None:
        first = self.area.hold(ENVELOPE, MESSAGE)
        second = self.area.hold(ENVELOPE, b"other")
        self.area.mark_released(first)
        self.assertEqual([e.id for e in self.area.list()], [second])
        self.assertRaises(NoSuchMessage, self.area.load, first)
        released = list(self.area.take_released())
        self.assertEqual(released, [(first, dict(ENVELOPE, version=1), MESSAGE)])
        # Taking does not remove: a crash before delivery loses nothing.
        self.assertEqual(len(list(self.area.take_released())), 1)
        self.area.remove_released(first)
        self.assertEqual(list(self.area.take_released()), [])
        self.assertRaises(NoSuchMessage, self.area.remove_released, first)

    def test_delete(self) -> None:
        message_id = self.area.hold(ENVELOPE, MESSAGE)
        self.area.delete(message_id)
        self.assertEqual(self.area.list(), [])
        self.assertRaises(NoSuchMessage, self.area.delete, message_id)
        self.assertRaises(NoSuchMessage, self.area.mark_released, message_id)
        self.assertEqual(os.listdir(os.path.join(self.directory, "tmp")), [])

    def test_missing_directory_lists_nothing(self) -> None:
        self.assertEqual(self.area.list(), [])
        self.assertEqual(list(self.area.take_released()), [])
        self.assertFalse(os.path.exists(self.directory))

    def test_bad_envelopes_are_refused_and_nothing_is_written(self) -> None:
        for bad in (
            {"recipients": ["a@b"]},
            {"sender": "a@b", "recipients": []},
            {"sender": "a@b", "recipients": "a@b"},
            {"sender": "a@b", "recipients": [1]},
            {"sender": "a@b", "recipients": ["a@b"], "time": "now"},
            {"sender": "a@b", "recipients": ["a@b"], "time": True},
            {"sender": "a@b", "recipients": ["a@b"], "pickle": "no"},
            {"sender": None, "recipients": ["a@b"]},
            {"sender": "a@b", "recipients": ["a@b"], "trusted": "yes"},
            {"sender": "a@b", "recipients": ["a@b"], "trusted": 1},
        ):
            self.assertRaises(ValueError, self.area.hold, bad, MESSAGE)
        self.assertEqual(self.area.list(), [])
        self.assertEqual(check_envelope({"sender": "", "recipients": ["a@b"]})["sender"], "")
        self.assertIs(check_envelope({"sender": "", "recipients": ["a@b"], "trusted": True})["trusted"], True)

    def test_path_traversal_ids_are_refused(self) -> None:
        """Security: an id from the command line never names a path outside the hold area."""
        self.area.hold(ENVELOPE, MESSAGE)
        victim = os.path.join(os.path.dirname(os.path.abspath(self.directory)), "victim")
        os.makedirs(victim)
        for bad in ("../victim", "..", ".", "", "tmp", "released", "a/b", "/etc", "A\x00"):
            self.assertRaises(NoSuchMessage, self.area.delete, bad)
            self.assertRaises(NoSuchMessage, self.area.mark_released, bad)
            self.assertRaises(NoSuchMessage, self.area.load, bad)
        self.assertTrue(os.path.isdir(victim))
        self.assertEqual(len(self.area.list()), 1)

    def test_failed_write_leaves_nothing_behind(self) -> None:
        def failing(path: str, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        self.patch(hold_module, "_write_durably", failing)
        self.assertRaises(OSError, self.area.hold, ENVELOPE, MESSAGE)
        self.assertEqual(self.area.list(), [])
        self.assertEqual(os.listdir(os.path.join(self.directory, "tmp")), [])

    def test_unreadable_entries_are_reported_not_fatal(self) -> None:
        good = self.area.hold(ENVELOPE, MESSAGE)
        broken = self.area.hold(ENVELOPE, MESSAGE)
        with open(os.path.join(self.directory, broken, "envelope.json"), "w", encoding="utf-8") as f:
            f.write('{"version": 99}')
        entries = {e.id: e for e in self.area.list()}
        self.assertIsNone(entries[good].problem)
        self.assertIn("unsupported hold envelope version", entries[broken].problem)

    def test_purge_tmp(self) -> None:
        self.area.ensure()
        stale = os.path.join(self.directory, "tmp", "ABC")
        os.mkdir(stale)
        os.utime(stale, (1000, 1000))
        self.assertEqual(self.area.purge_tmp(max_age=3600), 1)
        self.assertFalse(os.path.exists(stale))
