"""
Sieve at final delivery: for one local mailbox, run the global-before
scripts, the user's active script and the global-after scripts, and turn
the actions into Maildir copies (folder, flags) and messages for the
outbound queue (redirect, reject notice, vacation reply).

L{SieveFilter.evaluate} blocks (script files, folders, the vacation
memory): the transaction calls it in a thread, before any durable write.
A script error never loses the message: it is kept in INBOX, the error is
logged and appended to the user's ``~/.dovecot.sieve.log``.
"""

from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass, field
from typing import Sequence

from twisted.logger import Logger

from mailserver.envelope import LocalMailbox
from mailserver.durable import replace_atomically
from mailserver.interfaces import IMailStore
from mailserver.sieve import vacation as vacation_policy
from mailserver.sieve.actions import Action, Discard, FileInto, Redirect, Reject, Vacation
from mailserver.sieve.checker import Script
from mailserver.sieve.interpreter import Environment, Limits, run_sequence
from mailserver.sieve.message import MAX_BODY, SieveEnvelope, SieveMessage
from mailserver.sieve.parser import SieveError
from mailserver.sieve.scripts import ScriptCache, ScriptNameError, UserScripts, check_name, script_files
from mailserver.spooled import SpooledMessage

log = Logger(namespace="mailserver.sieve")

#: The vacation memory file, in the user's Maildir.
VACATION_MEMORY = "sieve-vacation.json"
#: Header that marks a message we redirected (a redirect loop stops there).
REDIRECTED = "X-Sieve-Redirected-From"


@dataclass(frozen=True)
class Outgoing:
    """A message for the outbound queue; C{message} None means the delivered message with C{prefix}."""

    sender: str
    recipients: tuple[str, ...]
    message: bytes | None = None
    prefix: bytes = b""


@dataclass
class SieveOutcome:
    """Where one mailbox's copy goes: C{(maildir, info letters)} copies, queued messages, memory writes."""

    copies: list[tuple[str, str]] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    memory: list[tuple[str, bytes]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class SieveFilter:
    """Sieve for every local delivery (built once by service.py); folders come from C{store}."""

    def __init__(
        self,
        store: IMailStore,
        before: Sequence[str] = (),
        after: Sequence[str] = (),
        global_dir: str = "",
        recipient_delimiter: str = "",
        hostname: str = "localhost",
        limits: Limits = Limits(),
        autocreate: bool = False,
        cache: ScriptCache | None = None,
    ) -> None:
        self.store = store
        self.before = tuple(before)
        self.after = tuple(after)
        self.global_dir = global_dir
        self.recipient_delimiter = recipient_delimiter
        self.hostname = hostname
        self.limits = limits
        self.autocreate = autocreate
        self.cache = cache or ScriptCache()
        # Replies decided but whose memory file is not written yet (it is written once
        # they are queued): a second delivery in parallel must not reply too.
        self._pending: dict[tuple[str, str], float] = {}
        self._pending_lock = threading.Lock()

    def evaluate(
        self, mailbox: LocalMailbox, sender: str, recipient: str, message: SpooledMessage,
        can_send: bool, now: float,
    ) -> SieveOutcome:
        """The outcome for C{mailbox}; blocking, never raises: on any failure the copy goes to INBOX."""
        try:
            return self._evaluate(mailbox, sender, recipient, message, can_send, now)
        except Exception as error:  # a bug here must not bounce or defer the mail: INBOX, logged
            log.failure("sieve: {user}: evaluation failed", user=mailbox.user)
            return self._failed(SieveOutcome(), mailbox, UserScripts(mailbox.home or mailbox.maildir), error, now)

    def _evaluate(
        self, mailbox: LocalMailbox, sender: str, recipient: str, message: SpooledMessage,
        can_send: bool, now: float,
    ) -> SieveOutcome:
        home = mailbox.home or mailbox.maildir
        user_scripts = UserScripts(home)
        outcome = SieveOutcome()
        try:
            scripts = self._scripts(user_scripts)
        except (SieveError, OSError, ScriptNameError) as error:
            return self._failed(outcome, mailbox, user_scripts, error, now)
        if not scripts:
            outcome.copies.append((mailbox.maildir, ""))
            return outcome
        parsed = SieveMessage(_head(message, MAX_BODY), len(message))
        env = Environment(
            parsed, SieveEnvelope(sender, recipient), self.recipient_delimiter,
            _datetime(now), self._loader(user_scripts), self.limits,
        )
        try:
            actions = run_sequence(scripts, env)
        except SieveError as error:
            return self._failed(outcome, mailbox, user_scripts, error, now)
        try:
            self._apply(actions, outcome, mailbox, parsed, sender, recipient, can_send, now)
        except OSError as error:
            return self._failed(SieveOutcome(), mailbox, user_scripts, error, now)
        return outcome

    def _scripts(self, user_scripts: UserScripts) -> list[Script]:
        scripts = []
        for group in (self.before, None, self.after):
            if group is None:
                active = user_scripts.active_path()
                script = self.cache.load(active) if active is not None else None
                if script is not None:
                    scripts.append(script)
                continue
            for entry in group:
                for path in script_files(entry):
                    script = self.cache.load(path)
                    if script is None:
                        raise SieveError(0, f"global script {path} does not exist")
                    scripts.append(script)
        return scripts

    def _loader(self, user_scripts: UserScripts):
        def load(location: str, name: str) -> Script | None:
            try:
                if location == "global":
                    if not self.global_dir:
                        return None
                    return self.cache.load(os.path.join(self.global_dir, check_name(name) + ".sieve"))
                return self.cache.load(user_scripts.path(name))
            except ScriptNameError as error:
                raise SieveError(0, str(error)) from None

        return load

    def _failed(self, outcome: SieveOutcome, mailbox: LocalMailbox, user_scripts: UserScripts,
                error: Exception, now: float) -> SieveOutcome:
        text = f"sieve: {mailbox.user}: {error}; message kept in INBOX"
        log.error("{text}", text=text)
        try:
            user_scripts.log_error(str(error), now)
        except OSError as log_error:
            log.error("sieve: cannot write {path}: {error}", path=user_scripts.log_path, error=log_error)
        outcome.copies = [(mailbox.maildir, "")]
        outcome.outgoing = []
        outcome.memory = []
        outcome.events.append(f"error: {error}")
        return outcome

    def _apply(self, actions: list[Action], outcome: SieveOutcome, mailbox: LocalMailbox, message: SieveMessage,
               sender: str, recipient: str, can_send: bool, now: float) -> None:
        keep_inbox = False
        for action in actions:
            if isinstance(action, FileInto):
                self._file_into(action, outcome, mailbox)
            elif isinstance(action, Redirect):
                already = any(mailbox.user.lower() == v.strip().lower() for v in message.header_values(REDIRECTED))
                if not can_send or already:
                    outcome.events.append(f"redirect to {action.address} not possible: kept")
                    keep_inbox = True
                    continue
                outcome.outgoing.append(Outgoing(sender, (action.address,), None, f"{REDIRECTED}: {mailbox.user}\n".encode()))
                outcome.events.append(f"redirected to <{action.address}>")
            elif isinstance(action, Reject):
                if not sender:
                    outcome.events.append("rejected (null sender: no notice), discarded")
                elif not can_send:
                    outcome.events.append("reject not possible without the outbound queue: kept")
                    keep_inbox = True
                else:
                    notice = vacation_policy.rejection(action.reason, message, sender, recipient, self.hostname, now)
                    outcome.outgoing.append(Outgoing("", (sender,), notice))
                    outcome.events.append(f"rejected: {action.reason[:100]}")
            elif isinstance(action, Vacation):
                self._vacation(action, outcome, mailbox, message, sender, recipient, can_send, now)
            elif isinstance(action, Discard):
                outcome.events.append("discarded")
        if keep_inbox and not any(path == mailbox.maildir for path, _ in outcome.copies):
            outcome.copies.append((mailbox.maildir, ""))

    def _file_into(self, action: FileInto, outcome: SieveOutcome, mailbox: LocalMailbox) -> None:
        path, info, events = self.store.file_into(
            mailbox.maildir, action.folder, action.flags, action.create or self.autocreate
        )
        outcome.events.extend(events)
        for index, (existing, _) in enumerate(outcome.copies):
            if existing == path:
                outcome.copies[index] = (path, info)
                return
        outcome.copies.append((path, info))

    def _vacation(self, action: Vacation, outcome: SieveOutcome, mailbox: LocalMailbox, message: SieveMessage,
                  sender: str, recipient: str, can_send: bool, now: float) -> None:
        own = [recipient, mailbox.user]
        if self.recipient_delimiter:
            local, _, domain = recipient.rpartition("@")
            for delimiter in self.recipient_delimiter:
                own.append(f"{local.split(delimiter)[0]}@{domain}")
        reason = vacation_policy.refusal(action, message, sender, own)
        if reason is None and not can_send:
            reason = "no outbound queue"
        memory_path = os.path.join(mailbox.maildir, VACATION_MEMORY)
        key = vacation_policy.memory_key(action, sender)
        memory: dict[str, float] = {}
        if reason is None and action.period > 0:
            try:
                with open(memory_path, "rb") as handle:
                    memory = vacation_policy.load_memory(handle.read(1 << 22))
            except FileNotFoundError:
                pass
            with self._pending_lock:
                pending = self._pending.get((memory_path, key), 0.0) > now
                if vacation_policy.is_remembered(memory, key, now) or pending:
                    reason = "already replied in this period"
                else:
                    self._reserve((memory_path, key), now + action.period, now)
        if reason is not None:
            outcome.events.append(f"vacation: no reply to <{sender}> ({reason})")
            return
        reply = vacation_policy.reply(action, message, sender, recipient, self.hostname, now)
        outcome.outgoing.append(Outgoing("", (sender,), reply))
        if action.period > 0:
            outcome.memory.append((memory_path, vacation_policy.remember(memory, key, now + action.period, now)))
        outcome.events.append(f"vacation: reply to <{sender}>")


    def _reserve(self, key: tuple[str, str], until: float, now: float) -> None:
        """Remember a reply in memory (lock held); expired entries go when there are many."""
        if len(self._pending) >= vacation_policy.MAX_MEMORY:
            self._pending = {k: v for k, v in self._pending.items() if v > now}
            if len(self._pending) >= vacation_policy.MAX_MEMORY:
                self._pending.pop(next(iter(self._pending)))
        self._pending[key] = until


def write_memory(files: list[tuple[str, bytes]]) -> None:
    """Write the vacation memory files (blocking; after the replies are queued)."""
    for path, data in files:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        replace_atomically(path, data)


def _head(message: SpooledMessage, limit: int) -> bytes:
    """At most C{limit} bytes from the start of C{message}."""
    pieces, size = [], 0
    for chunk in message.chunks():
        pieces.append(chunk[: limit - size])
        size += len(pieces[-1])
        if size >= limit:
            break
    return b"".join(pieces)


def _datetime(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc)


class SievePlan:
    """
    Sieve for every local mailbox of one message, as the store's plan
    (L{mailserver.interfaces.IMailStore.deliver} with a callable): called
    in the store's writer thread, it returns the copies to write, so a
    delivery costs one thread trip, not two.  Afterwards C{outgoing}
    (sender, recipients, message bytes or the delivered message with a
    prefix), C{memory} (vacation files) and C{events} (user, text) say what
    else Sieve decided; C{ran} is False if it was never called.
    """

    def __init__(
        self, sieve: SieveFilter, mailboxes: Sequence[tuple[LocalMailbox, str, bytes]], sender: str,
        message: SpooledMessage, can_send: bool, now: float,
    ) -> None:
        self.sieve = sieve
        self.mailboxes = mailboxes  # (mailbox, RCPT address, the copy's prefix)
        self.sender = sender
        self.message = message
        self.can_send = can_send
        self.now = now
        self.ran = False
        self.outgoing: list[tuple[str, list[str], bytes | SpooledMessage]] = []
        self.memory: list[tuple[str, bytes]] = []
        self.events: list[tuple[str, str]] = []

    def __call__(self) -> list[tuple]:
        """The copies to store (blocking; L{SieveFilter.evaluate} never raises)."""
        stored: list[tuple] = []
        self.outgoing, self.memory, self.events = [], [], []
        for mailbox, original, prefix in self.mailboxes:
            outcome = self.sieve.evaluate(mailbox, self.sender, original, self.message, self.can_send, self.now)
            self.events += [(mailbox.user, event) for event in outcome.events]
            stored += [(path, prefix, info) if info else (path, prefix) for path, info in outcome.copies]
            for item in outcome.outgoing:
                data = item.message if item.message is not None else self.message.prepend(item.prefix)
                self.outgoing.append((item.sender, list(item.recipients), data))
            self.memory += outcome.memory
        self.ran = True
        return stored
