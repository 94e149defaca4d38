"""Greylisting: the pure state with times given, and its state file."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.policy.greylist import (
    SAVE_DELAY,
    DEFER_EARLY, DEFER_NEW, PASS_KNOWN, PASS_NEW, PASS_WHITELISTED, STATE_FILE, Greylist,
    GreylistSettings, GreylistState, client_network,
)  # fmt: skip

DAY = 86400.0
SETTINGS = GreylistSettings(delay=300, retry_window=2 * DAY, max_age=35 * DAY, auto_whitelist_clients=3)


def synchronously(function: Any, *args: Any) -> defer.Deferred[Any]:
    """An in_thread that runs at once (the tests own the disk)."""
    return defer.maybeDeferred(function, *args)


class StateTests(SynchronousTestCase):
    def test_network(self) -> None:
        self.assertEqual(client_network("192.0.2.77"), "192.0.2.0/24")
        self.assertEqual(client_network("::ffff:192.0.2.77"), "192.0.2.0/24")
        self.assertEqual(client_network("2001:db8:1:2:3::9"), "2001:db8:1:2::/64")

    def test_delay_then_pass(self) -> None:
        """New: 450 for the delay; a retry after it passes; then the triplet is known."""
        state = GreylistState(SETTINGS)
        first = state.check("192.0.2.1", "a@example.com", "b@example.org", 1000)
        self.assertEqual((first.passed, first.reason, first.wait), (False, DEFER_NEW, 300))
        self.assertEqual(str(first.error("b@example.org")),
                         "450 4.2.0 <b@example.org>: Recipient address rejected: Greylisted, try again in 300 seconds")
        early = state.check("192.0.2.1", "a@example.com", "b@example.org", 1100)
        self.assertEqual((early.passed, early.reason, early.wait), (False, DEFER_EARLY, 200))
        later = state.check("192.0.2.200", "A@Example.com", "b@example.org", 1300)
        self.assertEqual((later.passed, later.reason), (True, PASS_NEW))
        self.assertIsNone(later.error("b@example.org"))
        known = state.check("192.0.2.1", "a@example.com", "b@example.org", 1300 + 30 * DAY)
        self.assertEqual(known.reason, PASS_KNOWN)

    def test_other_triplets_still_greylisted(self) -> None:
        state = GreylistState(SETTINGS)
        state.check("192.0.2.1", "a@x", "b@y", 0)
        state.check("192.0.2.1", "a@x", "b@y", 400)
        self.assertFalse(state.check("192.0.2.1", "a@x", "c@y", 400).passed)
        self.assertFalse(state.check("198.51.100.1", "a@x", "b@y", 400).passed)

    def test_retry_too_late_starts_again(self) -> None:
        state = GreylistState(SETTINGS)
        state.check("192.0.2.1", "a@x", "b@y", 0)
        late = state.check("192.0.2.1", "a@x", "b@y", 300 + 2 * DAY + 1)
        self.assertEqual((late.passed, late.reason), (False, DEFER_NEW))

    def test_max_age_forgets(self) -> None:
        state = GreylistState(SETTINGS)
        state.check("192.0.2.1", "a@x", "b@y", 0)
        state.check("192.0.2.1", "a@x", "b@y", 300)
        self.assertFalse(state.check("192.0.2.1", "a@x", "b@y", 300 + 36 * DAY).passed)

    def test_auto_whitelist(self) -> None:
        """After N passes from a client network, new triplets from it pass at once."""
        state = GreylistState(SETTINGS)
        for n in range(3):
            state.check("192.0.2.1", f"s{n}@x", "b@y", 0)
            self.assertTrue(state.check("192.0.2.1", f"s{n}@x", "b@y", 301).passed)
        fresh = state.check("192.0.2.9", "new@x", "other@y", 302)
        self.assertEqual((fresh.passed, fresh.reason), (True, PASS_WHITELISTED))
        self.assertFalse(state.check("198.51.100.1", "new@x", "other@y", 302).passed)
        never = GreylistState(GreylistSettings(auto_whitelist_clients=0))
        for n in range(10):
            never.check("192.0.2.1", f"s{n}@x", "b@y", 0)
            never.check("192.0.2.1", f"s{n}@x", "b@y", 301)
        self.assertFalse(never.check("192.0.2.1", "new@x", "b@y", 302).passed)

    def test_bounded(self) -> None:
        """The tables never grow past max_entries (the least recently seen go)."""
        state = GreylistState(SETTINGS, max_entries=100)
        for n in range(1000):
            state.check("192.0.2.1", f"s{n}@x", "b@y", n)
        self.assertLessEqual(len(state.triplets), 100)
        self.assertIn("192.0.2.0/24 s999@x b@y", state.triplets)

    def test_expire(self) -> None:
        state = GreylistState(SETTINGS)
        state.check("192.0.2.1", "a@x", "b@y", 0)
        state.check("192.0.2.1", "a@x", "b@y", 300)
        state.check("192.0.2.1", "c@x", "b@y", 0)
        self.assertEqual(state.expire(3 * DAY), 1)
        self.assertEqual(state.expire(40 * DAY), 2)
        self.assertEqual((state.triplets, state.clients), ({}, {}))

    def test_json_round_trip_and_damage(self) -> None:
        state = GreylistState(SETTINGS)
        state.check("192.0.2.1", "a@x", "b@y", 5)
        again = GreylistState(SETTINGS)
        again.load_json(state.to_json())
        self.assertEqual(again.triplets, state.triplets)
        for bad in (b"[]", b'{"version": 2}', b'{"version": 1, "triplets": []}'):
            self.assertRaises(ValueError, again.load_json, bad)
        again.load_json(b'{"version":1,"triplets":{"k":[1,2],"ok":[1,2,0]},"clients":{"n":["x",1]}}')
        self.assertEqual((again.triplets, again.clients), ({"ok": [1, 2, 0]}, {}))


class PersistenceTests(SynchronousTestCase):
    def test_saved_and_loaded(self) -> None:
        """Decisions are written to data_directory/greylist.json and survive a restart."""
        directory = self.mktemp()
        os.mkdir(directory)
        clock = Clock()
        clock.advance(1000)
        greylist = Greylist(SETTINGS, directory, clock, synchronously)
        self.assertFalse(greylist.check("192.0.2.1", "a@x", "b@y").passed)
        self.successResultOf(greylist.flush())
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            self.assertIn("192.0.2.0/24 a@x b@y", json.loads(f.read())["triplets"])
        clock.advance(301)
        restarted = Greylist(SETTINGS, directory, clock, synchronously)
        self.successResultOf(defer.Deferred.fromCoroutine(restarted.load()))
        self.assertTrue(restarted.check("192.0.2.1", "a@x", "b@y").passed)

    def test_writes_coalesce(self) -> None:
        """While a write is in flight, further changes make one more write, not one each."""
        directory = self.mktemp()
        os.mkdir(directory)
        pending: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...]]] = []

        def held(function: Any, *args: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            pending.append((d, function, args))
            return d

        clock = Clock()
        greylist = Greylist(SETTINGS, directory, clock, held)
        serialised: list[int] = []
        to_json = greylist.state.to_json
        greylist.state.to_json = lambda: serialised.append(1) or to_json()  # type: ignore[method-assign]
        for n in range(5):
            greylist.check("192.0.2.1", f"s{n}@x", "b@y")
        self.assertEqual((pending, serialised), ([], []))  # nothing serialised per RCPT
        clock.advance(SAVE_DELAY)
        self.assertEqual((len(pending), len(serialised)), (1, 1))  # one save for the five changes
        greylist.check("192.0.2.1", "late@x", "b@y")  # while the write is in flight
        flushed = greylist.flush()
        d, function, args = pending.pop()
        d.callback(function(*args))
        self.assertEqual(len(pending), 1)  # flush() asked: the second write goes at once
        self.assertNoResult(flushed)
        d, function, args = pending.pop()
        d.callback(function(*args))
        self.successResultOf(flushed)
        self.assertEqual(len(serialised), 2)
        state = GreylistState(SETTINGS)
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            state.load_json(f.read())
        self.assertEqual(len(state.triplets), 6)  # the late change too

    def test_expire_saves(self) -> None:
        directory = self.mktemp()
        os.mkdir(directory)
        clock = Clock()
        greylist = Greylist(SETTINGS, directory, clock, synchronously)
        greylist.check("192.0.2.1", "a@x", "b@y")
        self.assertEqual(greylist.expire(), 0)
        clock.advance(3 * DAY)
        self.assertEqual(greylist.expire(), 1)
        self.successResultOf(greylist.flush())
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            self.assertEqual(json.loads(f.read())["triplets"], {})

    def test_damaged_file_ignored(self) -> None:
        directory = self.mktemp()
        os.mkdir(directory)
        with open(os.path.join(directory, STATE_FILE), "wb") as f:
            f.write(b"{not json")
        greylist = Greylist(SETTINGS, directory, Clock(), synchronously)
        self.successResultOf(defer.Deferred.fromCoroutine(greylist.load()))
        self.assertEqual(greylist.state.triplets, {})
        self.flushLoggedErrors()
