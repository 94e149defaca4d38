"""Several milters in order, as Postfix runs them."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from zope.interface.verify import verifyObject

from mailserver.interfaces import IMilterSession
from mailserver.milter import codec
from mailserver.milter.chain import MilterChain
from mailserver.milter.client import CONTINUE, REJECT
from tests.milter.fakes import ScriptedMilter


def started(*milters: ScriptedMilter) -> MilterChain:
    chain = MilterChain([m.session() for m in milters])
    d = chain.connect({}, "h")
    for milter in milters:
        milter.negotiate()
        milter.reply(codec.Continue())
        milter.commands()
    assert d.called
    return chain


class ChainTests(SynchronousTestCase):
    def test_in_order_and_joined(self) -> None:
        """Each milter is asked in turn; modifications are joined in milter order."""
        first, second = ScriptedMilter(), ScriptedMilter()
        chain = started(first, second)
        d = chain.eom()
        self.assertEqual(first.commands(), [codec.EndOfMessage()])
        self.assertEqual(second.commands(), [])
        first.reply(codec.AddHeader("X-First", "1"), codec.Accept())
        self.assertEqual(second.commands(), [codec.EndOfMessage()])
        second.reply(codec.AddHeader("X-Second", "2"), codec.Quarantine("held"), codec.Continue())
        verdict = self.successResultOf(d)
        self.assertEqual(verdict.action, CONTINUE)
        self.assertEqual([m.name for m in verdict.modifications], ["X-First", "X-Second"])
        self.assertEqual(verdict.quarantine, "held")

    def test_reject_stops_the_chain(self) -> None:
        first, second = ScriptedMilter(), ScriptedMilter()
        chain = started(first, second)
        d = chain.mail_from(["<a@b>"])
        first.reply(codec.ReplyCode("554 5.7.1 No"))
        verdict = self.successResultOf(d)
        self.assertEqual((verdict.action, str(verdict.error)), (REJECT, "554 5.7.1 No"))
        self.assertEqual(second.commands(), [])

    def test_interface(self) -> None:
        """Both the one-milter session and the chain provide IMilterSession."""
        milter = ScriptedMilter()
        verifyObject(IMilterSession, milter.session())
        verifyObject(IMilterSession, MilterChain([milter.session()]))

    def test_quit_all(self) -> None:
        first, second = ScriptedMilter(), ScriptedMilter()
        chain = started(first, second)
        chain.abort()
        self.assertEqual((first.commands(), second.commands()), ([codec.Abort()], [codec.Abort()]))
        chain.quit()
        self.assertEqual((first.commands(), second.commands()), ([codec.Quit()], [codec.Quit()]))
