"""The SMTP delivery seam: DeliveryPipeline and Transaction provide our interfaces, not IMessageDelivery."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.envelope import Client
from mailserver.delivery.pipeline import DeliveryAgent, DeliveryPipeline
from mailserver.delivery.transaction import Transaction
from mailserver.interfaces import ISMTPDelivery, ISMTPTransaction
from tests.fakes import build_core


class SMTPDeliverySeamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.core = build_core(Clock())

    def test_pipeline_provides_ismtpdelivery(self) -> None:
        pipeline = DeliveryAgent(self.core, "alice").getMessageDelivery()
        self.assertTrue(verifyObject(ISMTPDelivery, pipeline))
        self.assertEqual(pipeline.sasl_user, "alice")

    def test_transaction_provides_ismtptransaction(self) -> None:
        pipeline = DeliveryPipeline(self.core)
        transaction = pipeline.open_transaction(pipeline.begin(Client(ip="192.0.2.1"), None))
        self.assertIsInstance(transaction, Transaction)
        self.assertTrue(verifyObject(ISMTPTransaction, transaction))
        transaction.abort()

    def test_agent_is_twisted_mails_cred_avatar(self) -> None:
        """The portal hands ESMTP a twisted.mail IMessageDeliveryFactory (its deliveryFactory)."""
        self.assertTrue(smtp.IMessageDeliveryFactory.providedBy(DeliveryAgent(self.core, None)))

    def test_regression_no_dead_imessagedelivery_adapter(self) -> None:
        """The unused IMessageDelivery/IMessage adapters are gone: one path, the one smtp/server.py uses."""
        pipeline = DeliveryPipeline(self.core)
        self.assertFalse(smtp.IMessageDelivery.providedBy(pipeline))
        for name in ("validateTo", "validateFrom", "receivedHeader"):
            self.assertFalse(hasattr(pipeline, name), name)
        self.assertFalse(hasattr(Transaction, "as_message"))
