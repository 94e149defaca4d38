"""The milter client over real sockets (127.0.0.1 port 0 and a UNIX socket) to a small milter."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from mailserver.milter import codec
from mailserver.milter.client import ACCEPT, TEMPFAIL, MilterSession, check_message, endpoint_connector
from mailserver.milter.settings import MilterSettings, MilterSpec
from tests.milter.nullmilter import NullMilter


MESSAGE = b"Subject: hi\n\nbody\n"


class LoopbackTests(TestCase):
    def socket_path(self) -> str:
        """
        A UNIX socket path under the system's temporary directory: trial's
        own (under the checkout) can pass the 107-byte limit of sun_path in a
        deep worktree, and Twisted's connect then fails with a TypeError.
        """
        directory = tempfile.mkdtemp(prefix="milter-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return os.path.join(directory, "milter.sock")

    def serve(self, endpoint: Any) -> defer.Deferred[Any]:
        factory = Factory.forProtocol(NullMilter)
        factory.connections, factory.closed = [], []  # type: ignore[attr-defined]
        self.factory = factory
        d = endpoint.listen(factory)
        d.addCallback(lambda port: (self.addCleanup(port.stopListening), port)[1])
        return d

    async def conversation(self, spec: MilterSpec) -> None:
        session = MilterSession(MilterSettings(spec), reactor, endpoint_connector(spec, reactor))
        self.assertEqual((await session.connect({}, "client", codec.FAMILY_INET, 1, "192.0.2.1")).action, "continue")
        await session.mail_from(["<a@example.com>"])
        await session.rcpt(["<b@example.com>"])
        verdict = await check_message(session, MESSAGE)
        self.assertEqual(verdict.action, ACCEPT)
        self.assertEqual(verdict.modifications, (codec.AddHeader("X-Tiny", " seen"),))
        await session.quit()

    @defer.inlineCallbacks
    def test_tcp(self) -> Any:
        port = yield self.serve(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
        spec = MilterSpec("inet", host="127.0.0.1", port=port.getHost().port)
        yield defer.Deferred.fromCoroutine(self.conversation(spec))

    @defer.inlineCallbacks
    def test_unix(self) -> Any:
        path = self.socket_path()
        yield self.serve(UNIXServerEndpoint(reactor, path))
        yield defer.Deferred.fromCoroutine(self.conversation(MilterSpec("unix", path=path)))

    @defer.inlineCallbacks
    def test_nobody_listening(self) -> Any:
        """A refused connection is the default action (tempfail), not an error."""
        path = self.socket_path()
        spec = MilterSpec("unix", path=path)
        session = MilterSession(MilterSettings(spec), reactor, endpoint_connector(spec, reactor))
        verdict = yield session.connect({}, "client")
        self.assertEqual((verdict.action, verdict.default), (TEMPFAIL, True))
        self.assertIn("cannot connect", session.failed)
