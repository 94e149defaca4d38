"""
SORT and THREAD (RFC 5256): base-subject extraction, sort criteria,
ORDEREDSUBJECT and REFERENCES threading (pure), and the commands over a
session and over imaplib.
"""

from __future__ import annotations

import imaplib

from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.imap import sorting, threads
from mailserver.imap.sorting import Sortable, base_subject, parse_criteria
from tests.imap.support import LoopbackServer, MemorySession, deliver


class BaseSubjectTests(SynchronousTestCase):
    CASES = [
        ("hello", "hello", False),
        ("Re: hello", "hello", True),
        ("RE:hello", "hello", True),
        ("re : hello", "hello", True),
        ("Fw: hello", "hello", True),
        ("FWD: hello", "hello", True),
        ("Re[2]: hello", "hello", True),
        ("Re: Re: Fwd: hello", "hello", True),
        ("[PATCH] Re: hello", "hello", True),
        ("RE: [PATCH] Re: foo (fwd)", "foo", True),
        ("hello (fwd)", "hello", True),
        ("hello (FWD) (fwd)  ", "hello", True),
        ("[fwd: Re: spam]", "spam", True),
        ("[Fwd: [fwd: x]]", "x", True),
        ("[fwd: unterminated", "[fwd: unterminated", False),
        ("[PATCH]", "[PATCH]", False),
        ("[list] hello", "hello", False),
        ("[a][b] c", "c", False),
        ("[a] [b]", "[b]", False),
        ("Fwd:  x  \t y", "x y", True),
        ("  leading", "leading", False),
        ("", "", False),
        ("Rebuild: now", "Rebuild: now", False),
        ("Fwdx: now", "Fwdx: now", False),
        ("(fwd) hello", "(fwd) hello", False),
        ("re: [x]", "[x]", True),
    ]

    def test_rfc5256_base_subjects(self) -> None:
        for subject, base, reply in self.CASES:
            self.assertEqual(base_subject(subject), (base, reply), subject)

    def test_long_subject_is_linear(self) -> None:
        subject = "Re: " * 5000 + "x" + " (fwd)" * 5000
        self.assertEqual(base_subject(subject), ("x", True))


def msg(seq: int, sent: float = 0.0, subject: str = "", msgid: str | None = None, refs: tuple = (),
        reply: bool = False, size: int = 0, arrival: float | None = None, **fields: str) -> Sortable:
    data = {"date": sent, "subject": subject.upper(), "reply": reply, "id": msgid, "refs": list(refs)}
    data.update(fields)
    return Sortable(seq, seq * 10, sent if arrival is None else arrival, size, {"sort": data})


class SortTests(SynchronousTestCase):
    def test_criteria_parse(self) -> None:
        self.assertEqual(parse_criteria(["reverse", "DATE", "SUBJECT"]),
                         [sorting.Criterion("DATE", True), sorting.Criterion("SUBJECT", False)])
        for bad in (["REVERSE"], [], ["NAME"], ["REVERSE", "REVERSE", "DATE"]):
            self.assertRaises(ValueError, parse_criteria, bad)

    def test_sort_keys_and_ties_by_sequence(self) -> None:
        messages = [msg(1, 30, "b", size=5), msg(2, 10, "a", size=5), msg(3, 20, "a", size=1)]
        order = lambda crit: [m.seq for m in sorting.sort(messages, parse_criteria(crit))]
        self.assertEqual(order(["DATE"]), [2, 3, 1])
        self.assertEqual(order(["REVERSE", "DATE"]), [1, 3, 2])
        self.assertEqual(order(["SUBJECT"]), [2, 3, 1])
        self.assertEqual(order(["SUBJECT", "REVERSE", "DATE"]), [3, 2, 1])
        self.assertEqual(order(["SIZE"]), [3, 1, 2])
        self.assertEqual(order(["REVERSE", "SIZE"]), [1, 2, 3])  # ties stay in sequence order

    def test_date_falls_back_to_arrival(self) -> None:
        a = msg(1, arrival=50)
        a.summary["sort"]["date"] = None
        b = msg(2, 40)
        self.assertEqual([m.seq for m in sorting.sort([a, b], parse_criteria(["DATE"]))], [2, 1])

    def test_address_keys(self) -> None:
        messages = [msg(1, **{"from": "ZED"}), msg(2, **{"from": ""}), msg(3, **{"from": "ALICE"})]
        self.assertEqual([m.seq for m in sorting.sort(messages, parse_criteria(["FROM"]))], [2, 3, 1])


def render(roots, uid=False) -> bytes:
    return threads.render(roots, uid)


class OrderedSubjectTests(SynchronousTestCase):
    def test_groups_by_base_subject_in_date_order(self) -> None:
        messages = [
            msg(1, 10, "b"), msg(2, 20, "a"), msg(3, 30, "b"), msg(4, 40, "c"), msg(5, 50, "b"), msg(6, 5, "a"),
        ]
        self.assertEqual(render(threads.ordered_subject(messages)), b"(6 2)(1 (3)(5))(4)")

    def test_uids(self) -> None:
        self.assertEqual(render(threads.ordered_subject([msg(1, 1, "x"), msg(2, 2, "x")]), uid=True), b"(10 20)")

    def test_empty(self) -> None:
        self.assertEqual(render(threads.ordered_subject([])), b"")


class ReferencesTests(SynchronousTestCase):
    def test_chain_and_branches(self) -> None:
        messages = [
            msg(1, 1, "s", "<a>"),
            msg(2, 2, "s", "<b>", ("<a>",), reply=True),
            msg(3, 3, "s", "<c>", ("<a>", "<b>"), reply=True),
            msg(4, 4, "s", "<d>", ("<a>",), reply=True),
            msg(5, 5, "other", "<e>"),
        ]
        self.assertEqual(render(threads.references(messages)), b"(1 (2 3)(4))(5)")

    def test_missing_parent_becomes_dummy_with_siblings(self) -> None:
        messages = [
            msg(1, 1, "x", "<b>", ("<a>",), reply=True),
            msg(2, 2, "y", "<c>", ("<a>",), reply=True),
        ]
        # a dummy root with two children keeps them together
        self.assertEqual(render(threads.references(messages)), b"((1)(2))")

    def test_single_child_of_dummy_root_is_promoted(self) -> None:
        messages = [msg(1, 1, "x", "<b>", ("<a>",), reply=True)]
        self.assertEqual(render(threads.references(messages)), b"(1)")

    def test_subject_merge(self) -> None:
        messages = [
            msg(1, 1, "topic", "<a>"),
            msg(2, 2, "topic", "<z>", reply=True),  # a reply without references
            msg(3, 3, "alone", "<q>"),
            msg(4, 4, "alone", "<r>"),  # neither a reply: a dummy holds both
        ]
        self.assertEqual(render(threads.references(messages)), b"(1 2)((3)(4))")

    def test_loops_and_duplicates_ignored(self) -> None:
        messages = [
            msg(1, 1, "a", "<a>", ("<b>",)),
            msg(2, 2, "b", "<b>", ("<a>",)),
            msg(3, 3, "c", "<a>"),  # duplicate Message-ID: a message of its own
            msg(4, 4, "d", "<self>", ("<self>",)),
        ]
        out = render(threads.references(messages))
        for n in (b"1", b"2", b"3", b"4"):
            self.assertEqual(out.count(n), 1, out)

    def test_regression_deep_chain_does_not_recurse(self) -> None:
        """A 20,000-message reply chain is threaded and rendered without hitting the recursion limit."""
        n = 20000
        messages = [msg(1, 1, "s", "<m1>")]
        messages += [msg(i, i, "s", f"<m{i}>", (f"<m{i - 1}>",), reply=True) for i in range(2, n + 1)]
        out = render(threads.references(messages))
        self.assertEqual(out, b"(" + b" ".join(b"%d" % i for i in range(1, n + 1)) + b")")
        flat = render(threads.ordered_subject(messages))
        self.assertTrue(flat.startswith(b"(1 (2)(3)"))


BASE = 1_700_000_000.0


class SortCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        rows = [
            (b"Subject: Re: beta\nFrom: Zed <zed@x>\nDate: Tue, 14 Nov 2023 10:00:00 +0000\n"
             b"Message-ID: <2@x>\nIn-Reply-To: <1@x>\n\nb\n"),
            b"Subject: beta\nFrom: amy@x\nDate: Tue, 14 Nov 2023 09:00:00 +0000\nMessage-ID: <1@x>\n\nbody\n",
            b"Subject: alpha\nFrom: bob@x\nDate: Tue, 14 Nov 2023 11:00:00 +0000\nMessage-ID: <3@x>\n\nlonger body\n",
        ]
        for n, data in enumerate(rows):
            deliver(self.s.maildir(), data, when=BASE + n)
        self.s.send(b"a LOGIN alice secret\r\ns SELECT INBOX\r\n")

    def test_capabilities(self) -> None:
        out = self.s.send(b"c CAPABILITY\r\n")
        for cap in (b" SORT", b" THREAD=ORDEREDSUBJECT", b" THREAD=REFERENCES"):
            self.assertIn(cap, out)

    def test_sort(self) -> None:
        self.assertIn(b"* SORT 2 1 3\r\n", self.s.send(b"x SORT (DATE) UTF-8 ALL\r\n"))
        self.assertIn(b"* SORT 1 2 3\r\n", self.s.send(b"x SORT (ARRIVAL) US-ASCII ALL\r\n"))
        self.assertIn(b"* SORT 3 1 2\r\n", self.s.send(b"x SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n"))
        self.assertIn(b"* SORT 2 3 1\r\n", self.s.send(b"x SORT (FROM) UTF-8 ALL\r\n"))
        self.assertIn(b"* SORT 2 1\r\n", self.s.send(b"x SORT (DATE) UTF-8 SUBJECT beta\r\n"))
        uids = self.s.send(b"x UID SORT (REVERSE DATE) UTF-8 ALL\r\n")
        self.assertIn(b"* SORT 3 1 2\r\n", uids)

    def test_thread(self) -> None:
        self.assertIn(b"* THREAD (2 1)(3)\r\n", self.s.send(b"t THREAD REFERENCES UTF-8 ALL\r\n"))
        self.assertIn(b"* THREAD (2 1)(3)\r\n", self.s.send(b"t THREAD ORDEREDSUBJECT UTF-8 ALL\r\n"))
        self.assertIn(b"* THREAD\r\n", self.s.send(b"t THREAD REFERENCES UTF-8 SUBJECT nothing\r\n"))

    def test_bad_input(self) -> None:
        self.assertIn(b"x BAD", self.s.send(b"x SORT (NAME) UTF-8 ALL\r\n"))
        self.assertIn(b"x BAD", self.s.send(b"x SORT DATE UTF-8 ALL\r\n"))
        self.assertIn(b"x NO [BADCHARSET", self.s.send(b"x SORT (DATE) KOI8-R ALL\r\n"))
        self.assertIn(b"x BAD", self.s.send(b"x THREAD FANCY UTF-8 ALL\r\n"))
        self.assertIn(b"x BAD", self.s.send(b"x THREAD REFERENCES\r\n"))


class SortLoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_imaplib_sort_and_thread(self) -> None:
        self.server.deliver(b"Subject: b\nMessage-ID: <1@x>\nDate: Tue, 14 Nov 2023 09:00:00 +0000\n\nx\n")
        self.server.deliver(b"Subject: Re: b\nIn-Reply-To: <1@x>\nDate: Tue, 14 Nov 2023 08:00:00 +0000\n\nx\n")
        self.server.deliver(b"Subject: a\nDate: Tue, 14 Nov 2023 10:00:00 +0000\n\nx\n")

        def session(c: imaplib.IMAP4):
            c.select("INBOX")
            return c.sort("(DATE)", "UTF-8", "ALL")[1], c.thread("REFERENCES", "UTF-8", "ALL")[1]

        sort, thread = await self.server.imap(session)
        self.assertEqual(sort, [b"2 1 3"])
        self.assertEqual(thread, [b"(1 2)(3)"])


class ImaptestRegressionTests(SynchronousTestCase):
    def test_regression_thread_earlier_guess_dropped_on_loop(self) -> None:
        """imaptest thread: a message's own references replace a parent guessed from another's, even with no new link."""
        messages = [
            msg(1, 3, "", "<a@b>"),
            msg(2, 1, "", "<b@b>", ("<a@b>", "<c@b>")),
            msg(3, 2, "", "<c@b>", ("<b@b>",)),
        ]
        self.assertEqual(render(threads.references(messages)), b"(3 2)(1)")

    def test_regression_sort_cc_group_name_is_the_mailbox(self) -> None:
        """imaptest sort-addresses: a group's name is the first address's mailbox, as in the ENVELOPE."""
        from mailserver.imap.structure import first_mailbox

        self.assertEqual(first_mailbox(b"user2: blah@domain1.org;"), "user2")
        self.assertEqual(first_mailbox(b"Foo <x@y>, z@w"), "x")
        self.assertEqual(first_mailbox(b""), "")
