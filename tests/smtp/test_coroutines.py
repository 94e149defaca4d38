"""L{mailserver.smtp.coroutines.run_now}: coroutines that never wait make no Deferred."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from mailserver.smtp.coroutines import run_now


class RunNowTests(SynchronousTestCase):
    def test_ends_at_once(self) -> None:
        """A coroutine awaiting only fired Deferreds runs to its end in the call: None, no Deferred."""
        seen: list[int] = []

        async def command() -> int:
            seen.append(await succeed(1))
            seen.append(await succeed(2))
            return 3

        self.assertIsNone(run_now(command()))
        self.assertEqual(seen, [1, 2])

    def test_error_at_once_is_raised(self) -> None:
        async def command() -> None:
            await succeed(None)
            raise ValueError("refused")

        self.assertRaises(ValueError, run_now, command())

    def test_waiting_coroutine_becomes_a_deferred(self) -> None:
        """A coroutine that waits goes on when the Deferred fires, and its result or error comes out."""
        first, second = Deferred(), Deferred()

        async def command() -> str:
            a = await first
            b = await second
            return a + b

        d = run_now(command())
        assert d is not None
        self.assertNoResult(d)
        first.callback("x")
        self.assertNoResult(d)
        second.callback("y")
        self.assertEqual(self.successResultOf(d), "xy")

        failing: Deferred[str] = Deferred()

        async def refused() -> str:
            try:
                await failing
            except KeyError:
                return "caught"
            return "not caught"

        d = run_now(refused())
        assert d is not None
        failing.errback(KeyError("x"))
        self.assertEqual(self.successResultOf(d), "caught")

    def test_cancel_reaches_the_coroutine(self) -> None:
        waiting: Deferred[None] = Deferred()
        cleaned: list[bool] = []

        async def command() -> None:
            try:
                await waiting
            finally:
                cleaned.append(True)

        d = run_now(command())
        assert d is not None
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(cleaned, [True])
