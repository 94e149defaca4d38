"""
Real sessions over loopback: imaplib (in a thread) and twisted's
IMAP4Client against the real factory on 127.0.0.1 port 0.
"""

from __future__ import annotations

import imaplib
import os
import re
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.mail.imap4 import IMAP4Client
from twisted.trial.unittest import SkipTest, TestCase

from tests.imap.support import PASSWORD, LoopbackServer, corpus_directory, crlf

MESSAGE = b"From: Ann <ann@example.org>\nTo: alice@example.org\nSubject: hello\nDate: Tue, 1 Jul 2003 10:52:37 +0200\n\nbody line\n"


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def code(client: imaplib.IMAP4, name: str) -> bytes:
    """The last value of an untagged/response code imaplib collected."""
    return client.untagged_responses.pop(name)[-1]


class ReadBackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_body_is_byte_identical_with_crlf(self) -> None:
        data = MESSAGE + b"with\ttabs and trailing spaces   \n\xe9 8-bit\n\nlast line without newline"
        self.server.deliver(data)

        def session(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            fetched = ok(c.fetch("1", "(BODY.PEEK[] RFC822.SIZE)"))
            return fetched

        fetched = await self.server.imap(session)
        self.assertEqual(fetched[0][1], crlf(data))
        self.assertIn(b"RFC822.SIZE %d" % len(crlf(data)), fetched[1])

    async def test_corpus_round_trip(self) -> None:
        directory = corpus_directory()
        if not os.path.isdir(directory):
            raise SkipTest("corpus not found")
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs)
        originals = []
        for path in paths:
            with open(path, "rb") as f:
                data = f.read().replace(b"\r\n", b"\n")  # stored with LF, as delivery does
            if not data:
                continue
            originals.append(data)
            self.server.deliver(data)

        def session(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            out = []
            for n in range(1, len(originals) + 1):
                out.append(ok(c.fetch(str(n), "(BODY.PEEK[] BODYSTRUCTURE ENVELOPE)"))[0])
            return out

        fetched = await self.server.imap(session)
        self.assertEqual(len(fetched), len(originals))
        for original, item in zip(originals, fetched):
            self.assertEqual(item[1], crlf(original))

    async def test_sections(self) -> None:
        message = (
            b"Subject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n"
            b"preamble\n--b1\nContent-Type: text/plain\n\nfirst part\n"
            b"--b1\nContent-Type: message/rfc822\n\nSubject: inner\nX-A: 1\n\ninner body\n--b1--\n"
        )
        self.server.deliver(message)

        def session(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            items = "(BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2.HEADER.FIELDS (X-A)] BODY.PEEK[2.TEXT] BODY.PEEK[HEADER.FIELDS.NOT (Subject MIME-Version)] BODY.PEEK[]<2.5> BODY.PEEK[3])"
            return ok(c.fetch("1", items))

        data = await self.server.imap(session)
        values = [part[1] for part in data if isinstance(part, tuple)]
        self.assertEqual(values[:6], [
            b"first part",
            b"Content-Type: text/plain\r\n\r\n",
            b"X-A: 1\r\n\r\n",
            b"inner body",
            b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n",
            b"bject",
        ])
        self.assertIn(b"BODY[3] NIL", data[-1])
        self.assertIn(b"BODY[]<2>", b"".join(p[0] for p in data if isinstance(p, tuple)))

    async def test_fetch_sets_seen_unless_peek(self) -> None:
        self.server.deliver(MESSAGE)
        self.server.deliver(MESSAGE)

        def session(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            c.fetch("1", "(BODY.PEEK[TEXT])")
            peeked = ok(c.fetch("1", "FLAGS"))
            body = ok(c.fetch("2", "(BODY[TEXT])"))
            return peeked, body, ok(c.fetch("2", "FLAGS"))

        peeked, body, flags = await self.server.imap(session)
        self.assertNotIn(b"\\Seen", peeked[0])
        self.assertIn(b"FLAGS (\\Recent \\Seen)", body[-1] if isinstance(body[-1], bytes) else body[0][0])
        self.assertIn(b"\\Seen", flags[0])


class PersistenceTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_flags_and_uids_survive_reconnect_and_restart(self) -> None:
        for n in range(3):
            self.server.deliver(MESSAGE.replace(b"hello", b"hello %d" % n))

        def first(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            validity = code(c, "UIDVALIDITY")
            ok(c.store("2", "+FLAGS", "(\\Flagged $Work)"))
            return validity, ok(c.uid("FETCH", "1:*", "(UID FLAGS)"))

        validity, before = await self.server.imap(first)
        await self.server.restart()
        self.server.deliver(MESSAGE.replace(b"hello", b"later"))

        def second(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            return code(c, "UIDVALIDITY"), ok(c.uid("FETCH", "1:*", "(UID FLAGS)"))

        validity2, after = await self.server.imap(second)
        self.assertEqual(validity, validity2)
        def without_recent(lines):
            return [re.sub(rb" ?\\Recent ?", b" ", line).replace(b"( ", b"(").replace(b" )", b")") for line in lines]

        self.assertEqual(without_recent(after[:3]), without_recent(before))
        self.assertIn(b"UID 2 FLAGS (\\Flagged $Work)", after[1])
        self.assertIn(b"UID 4 FLAGS (\\Recent)", after[3])

    async def test_recent_is_reported_to_one_session(self) -> None:
        self.server.deliver(MESSAGE)

        def select(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            return code(c, "RECENT")

        self.assertEqual(await self.server.imap(select), b"1")
        self.assertEqual(await self.server.imap(select), b"0")


class UidplusTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_append_copy_move_uids(self) -> None:
        for n in range(3):
            self.server.deliver(MESSAGE.replace(b"hello", b"msg %d" % n))

        def session(c: imaplib.IMAP4):
            out = {}
            out["append"] = ok(c.append("Drafts", "(\\Draft $Todo)", '"01-Feb-2020 10:00:00 +0100"', b"Subject: draft\r\n\r\ntext\r\n"))
            ok(c.select("INBOX"))
            ok(c.uid("COPY", "3,1", "Drafts"))
            out["copy"] = code(c, "COPYUID")
            typ, data = c._simple_command("UID", "MOVE", "2", "Trash")
            out["move"] = (typ, data, c.untagged_responses.pop("OK", []), c.untagged_responses.pop("EXPUNGE", []))
            ok(c.select("Drafts"))
            out["drafts"] = ok(c.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (Subject)])"))
            ok(c.select("Trash"))
            out["trash"] = ok(c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (Subject)])"))
            out["create_missing"] = c.append("Nope", None, None, b"x\r\n")
            return out

        out = await self.server.imap(session)
        drafts_validity = out["append"][0].split()[1]
        self.assertRegex(out["append"][0], rb"^\[APPENDUID \d+ 1\] APPEND completed$")
        self.assertEqual(out["copy"], drafts_validity + b" 1,3 2:3")
        typ, data, oks, expunges = out["move"]
        self.assertEqual(typ, "OK")
        self.assertRegex(oks[0], rb"^\[COPYUID \d+ 2 1\] Moved$")
        self.assertEqual(expunges, [b"2"])
        drafts = out["drafts"]
        # the first session to select Drafts sees what was appended and copied as \\Recent
        self.assertIn(b"FLAGS (\\Draft \\Recent $Todo)", drafts[0][0])
        self.assertEqual(time.mktime(imaplib.Internaldate2tuple(drafts[0][0])), 1580547600)
        subjects = [p[1] for p in drafts if isinstance(p, tuple)]
        # COPYUID said source 1 -> 2 and 3 -> 3
        self.assertEqual(subjects, [b"Subject: draft\r\n\r\n", b"Subject: msg 0\r\n\r\n", b"Subject: msg 2\r\n\r\n"])
        self.assertEqual([p[1] for p in out["trash"] if isinstance(p, tuple)], [b"Subject: msg 1\r\n\r\n"])
        typ, data = out["create_missing"]
        self.assertEqual(typ, "NO")
        self.assertIn(b"[TRYCREATE]", data[0])

    async def test_uid_expunge_only_named(self) -> None:
        for n in range(3):
            self.server.deliver(MESSAGE)

        def session(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            ok(c.store("1:3", "+FLAGS.SILENT", "(\\Deleted)"))
            typ, data = c.uid("EXPUNGE", "2")
            expunged = c.untagged_responses.pop("EXPUNGE", [])
            remaining = ok(c.uid("SEARCH", "ALL"))
            return typ, expunged, remaining

        typ, expunged, remaining = await self.server.imap(session)
        self.assertEqual((typ, expunged, remaining), ("OK", [b"2"], [b"1 3"]))


class ConcurrentSessionTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_sessions_see_each_others_changes(self) -> None:
        for n in range(3):
            self.server.deliver(MESSAGE)

        def session(a: imaplib.IMAP4):
            b = imaplib.IMAP4("127.0.0.1", self.server.port)
            b.login("alice", PASSWORD)
            try:
                ok(a.select("INBOX"))
                ok(b.select("INBOX"))
                b.untagged_responses.clear()
                ok(a.store("1", "+FLAGS.SILENT", "(\\Flagged)"))
                ok(b.noop())
                flags_seen = b.untagged_responses.pop("FETCH", [])
                ok(a.store("2", "+FLAGS.SILENT", "(\\Deleted)"))
                ok(a.expunge())
                # no EXPUNGE during FETCH: sequence numbers stay put
                ok(b.fetch("3", "(UID)"))
                during_fetch = b.untagged_responses.pop("EXPUNGE", [])
                ok(b.noop())
                after_noop = b.untagged_responses.pop("EXPUNGE", [])
                ok(a.append("INBOX", None, None, b"Subject: new\r\n\r\nx\r\n"))
                ok(b.noop())
                exists = b.untagged_responses.pop("EXISTS", [])
                return flags_seen, during_fetch, after_noop, exists
            finally:
                b.logout()

        flags_seen, during_fetch, after_noop, exists = await self.server.imap(session)
        self.assertEqual(len(flags_seen), 1)
        self.assertIn(b"FLAGS (\\Flagged", flags_seen[0])
        self.assertEqual(during_fetch, [])
        self.assertEqual(after_noop, [b"2"])
        self.assertEqual(exists[-1], b"3")

    async def test_idle_sees_delivery_through_notifier(self) -> None:
        self.server.deliver(MESSAGE)
        idling = Deferred()
        woke = Deferred()

        def session(raw):
            raw.login()
            raw.command(b"s SELECT INBOX")
            raw.send(b"i IDLE\r\n")
            reactor.callFromThread(idling.callback, raw.line())
            line = raw.line()
            raw.send(b"DONE\r\n")
            rest = raw.until(b"i")
            return line, rest

        result = self.server.raw(session)
        self.assertEqual(await idling, b"+ idling\r\n")
        self.server.deliver(MESSAGE)
        self.server.notifier.changed([self.server.maildir()])
        line, rest = await result
        self.assertEqual(line, b"* 2 EXISTS\r\n")
        self.assertEqual(rest[-1], b"i OK IDLE terminated\r\n")
        del woke


class FolderTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_folder_commands(self) -> None:
        def session(c: imaplib.IMAP4):
            out = {}
            out["create"] = ok(c.create("Projects/2024/Q1"))
            out["list_all"] = ok(c.list('""', "*"))
            out["list_top"] = ok(c.list('""', "%"))
            out["list_ref"] = ok(c.list("Projects/", "%"))
            out["sub"] = ok(c.subscribe("Projects/2024/Q1"))
            out["lsub"] = ok(c.lsub('""', "Projects/%"))
            out["rename"] = ok(c.rename("Projects", "Archive/Old"))
            out["after"] = ok(c.list('""', "Archive*"))
            out["status"] = ok(c.status("Archive/Old/2024/Q1", "(MESSAGES UIDNEXT UNSEEN)"))
            out["delete"] = ok(c.delete("Archive/Old/2024/Q1"))
            out["delete_inbox"] = c.delete("INBOX")
            out["unicode"] = ok(c.create("&ZeVnLIqe-"))
            out["list_unicode"] = ok(c.list('""', "&ZeVnLIqe-"))
            out["ns"] = c._simple_command("NAMESPACE")[0], c.untagged_responses.pop("NAMESPACE")
            return out

        out = await self.server.imap(session)
        self.assertIn(b'(\\Noselect \\HasChildren) "/" Projects', out["list_all"])
        self.assertIn(b'(\\HasNoChildren) "/" Projects/2024/Q1', out["list_all"])
        self.assertIn(b'(\\Noselect \\HasChildren) "/" Projects', out["list_top"])
        self.assertNotIn(b'(\\Noselect \\HasChildren) "/" Projects/2024', out["list_top"])
        self.assertEqual(out["list_ref"], [b'(\\Noselect \\HasChildren) "/" Projects/2024'])
        self.assertEqual(out["lsub"], [b'(\\Noselect) "/" Projects/2024'])
        self.assertIn(b'(\\HasNoChildren) "/" Archive/Old/2024/Q1', out["after"])
        self.assertRegex(out["status"][0], rb'Archive/Old/2024/Q1 \(MESSAGES 0 UIDNEXT 1 UNSEEN 0\)')
        self.assertEqual(out["delete_inbox"][0], "NO")
        self.assertEqual(out["list_unicode"], [b'(\\HasNoChildren) "/" &ZeVnLIqe-'])
        self.assertEqual(out["ns"], ("OK", [b'(("" "/")) NIL NIL']))
        self.assertFalse(os.path.exists(os.path.join(self.server.maildir(), ".Archive.Old.2024.Q1")))  # DELETE removed it

    async def test_search(self) -> None:
        self.server.deliver(MESSAGE, when=1_600_000_000)
        self.server.deliver(b"From: bob@x.test\nSubject: =?utf-8?q?caf=C3=A9?=\nX-Tag: blue\n\nthe quick brown fox\n", when=1_700_000_000)
        self.server.deliver(b"Subject: big\n\n" + b"z" * 5000 + b"\n", when=1_700_000_000)

        def session(c: imaplib.IMAP4):
            ok(c.select("INBOX"))
            ok(c.store("1", "+FLAGS", "(\\Answered)"))
            q = {
                "all": ("ALL",),
                "from": ("FROM", "ann"),
                "subject_utf8": ("CHARSET", "UTF-8", "SUBJECT", '"caf\xe9"'),
                "body": ("BODY", "brown"),
                "text": ("TEXT", "BLUE"),
                "header": ("HEADER", "X-Tag", "blue"),
                "larger": ("LARGER", "1000"),
                "not_or": ("NOT", "OR", "ANSWERED", "LARGER", "1000"),
                "since": ("SINCE", "1-Jan-2023"),
                "sentbefore": ("SENTBEFORE", "1-Jan-2004"),
                "uid": ("UID", "2:*"),
                "seq": ("2,3", "UNANSWERED"),
                "keyword": ("UNKEYWORD", "$Nope"),
            }
            out = {}
            for name, args in q.items():
                if name == "subject_utf8":
                    c.literal = "café".encode()
                    out[name] = ok(c.search("UTF-8", "SUBJECT"))[0]
                else:
                    out[name] = ok(c.search(None, *args))[0]
            return out

        out = await self.server.imap(session)
        self.assertEqual(out, {
            "all": b"1 2 3", "from": b"1", "subject_utf8": b"2", "body": b"2", "text": b"2", "header": b"2",
            "larger": b"3", "not_or": b"2", "since": b"2 3", "sentbefore": b"1", "uid": b"2 3", "seq": b"2 3",
            "keyword": b"1 2 3",
        })


class TwistedClientTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def connect(self) -> IMAP4Client:
        greeted: Deferred = Deferred()

        class Client(IMAP4Client):
            def serverGreeting(self, caps):
                greeted.callback(self)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.port)
        await connectProtocol(endpoint, Client())
        client = await greeted
        self.addCleanup(lambda: client.transport.loseConnection())
        return client

    async def test_login_select_fetch_append(self) -> None:
        data = MESSAGE + b"second line\n"
        self.server.deliver(data)
        client = await self.connect()
        await client.login(b"alice", PASSWORD.encode())
        selected = await client.select("INBOX")
        self.assertEqual(selected["EXISTS"], 1)
        self.assertEqual(selected["READ-WRITE"], True)
        body = await client.fetchSpecific("1", peek=True)
        self.assertEqual(body[1][0][-1], crlf(data).decode("latin-1"))
        flags = await client.fetchFlags("1")
        self.assertEqual(flags, {1: {"FLAGS": ["\\Recent"]}})
        envelope = await client.fetchEnvelope("1")
        self.assertEqual(envelope[1]["ENVELOPE"][1], "hello")
        size = await client.fetchSize("1")
        self.assertEqual(size[1]["RFC822.SIZE"], str(len(crlf(data))))
        from io import BytesIO

        await client.append("INBOX", BytesIO(b"Subject: appended\r\n\r\nhi\r\n"), ("\\Seen",))
        await client.noop()
        uids = await client.search("ALL", uid=True)
        self.assertEqual(uids, [1, 2])
        await client.logout()

    async def test_wrong_password(self) -> None:
        client = await self.connect()
        with self.assertRaises(Exception):
            await client.login(b"alice", b"nope")


class InterfaceTests(TestCase):
    """The avatar and mailbox provide twisted's interfaces (for any twisted.mail consumer)."""

    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_interfaces(self) -> None:
        from twisted.mail.imap4 import IAccount, IMailboxInfo, INamespacePresenter, MessageSet
        from twisted.mail.interfaces import IMailboxIMAP
        from zope.interface.verify import verifyObject

        from mailserver.service import maildir_imap_accounts

        self.server.deliver(MESSAGE)
        factory = maildir_imap_accounts(self.server.maildir, self.server.notifier, reactor, registry=self.server.registry)
        account = factory("alice")
        self.assertTrue(verifyObject(IAccount, account))
        self.assertTrue(verifyObject(INamespacePresenter, account))
        await account.open()
        mailbox = await account.select("INBOX")
        self.assertTrue(verifyObject(IMailboxIMAP, mailbox))
        self.assertTrue(verifyObject(IMailboxInfo, mailbox))
        [(seq, message)] = await mailbox.fetch(MessageSet(1, 1), uid=False)
        self.assertEqual(message.getHeaders(False, "subject"), {"subject": "hello"})
        self.assertEqual(message.getBodyFile().read(), b"body line\r\n")
        self.assertEqual(message.getUID(), 1)
        self.assertEqual(mailbox.requestStatus(["MESSAGES", "UIDNEXT"]), {"MESSAGES": 1, "UIDNEXT": 2})
        self.assertIsNone(await account.select("../etc"))
        names = [name for name, _ in await account.listMailboxes("", "*")]
        self.assertEqual(names, ["INBOX", "Drafts", "Junk", "Sent", "Trash"])
