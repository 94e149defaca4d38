"""
The seams between mailserver's parts.

This module imports nothing of ours: value types named in the docstrings
live in the modules that implement them.
"""

from zope.interface import Attribute, Interface


class IUserDatabase(Interface):
    """Users and their passwords (a Dovecot passwd-file, or a fake)."""

    def lookup(name):
        """
        The L{mailserver.tables.passwd.UserRecord} for C{name} or L{None}.

        @param name: C{"user@domain"} (domain lower-cased) or a bare C{"user"};
            the local part is matched case-insensitively.
        """

    def users():
        """Every L{mailserver.tables.passwd.UserRecord}, in file order."""

    def domains():
        """The set of lower-cased domains that users are declared in."""


class IMailStore(Interface):
    """Where local mail is written durably (Maildir)."""

    def deliver(message, copies):
        """
        Write one message into several mailboxes, durably.

        @param message: the message as bytes, lines ending in LF, or a
            L{mailserver.spooled.SpooledMessage} (mostly in a spool file,
            copied from there, never loaded whole).
        @param copies: a sequence of C{(maildir_path, prefix)}: the Maildir
            directory (created when missing) and the header bytes to put in
            front of C{message} for that copy; or C{(maildir_path, prefix,
            info)} with Maildir info letters (C{"S"}, C{"FS"}): that copy is
            stored in C{cur/} already flagged (Sieve :flags).  Or a blocking
            callable returning that sequence, called where the store writes
            (its writer thread) before anything is written.
        @return: a Deferred firing with the list of file names written (one
            per copy) once every copy is fsynced and renamed into C{new/} and
            the directories are fsynced; or failing with L{MailError} 451
            having left nothing in any C{new/}.
        """

    def file_into(maildir, folder, flags=(), create=False):
        """
        Where a copy filed into C{folder} goes (Sieve fileinto, at final
        delivery, before L{deliver}); blocking: call it from a thread.

        @param maildir: the user's Maildir (INBOX).
        @param folder: an IMAP mailbox name.
        @param flags: IMAP flags for the copy (Sieve :flags); keywords are
            added to the folder's keyword table.
        @param create: make the folder (and subscribe it) if missing
            (``:create``, C{lda_mailbox_autocreate}); SPECIAL-USE folders are
            always made.
        @return: C{(maildir_path, info letters, events)}: the folder's Maildir
            (INBOX when the folder is missing or its name bad: never raises
            for that), the Maildir info letters for L{deliver}'s copy, and
            what happened, for the Sieve log.
        """


class IMaildirReader(Interface):
    """
    The read side of one Maildir directory: the base that POP3's
    L{IMailboxReader} and IMAP's L{IFolderReader} share.  Every method of the
    family blocks (directory listings, reads, renames): call it from a thread.
    A message is known by its Maildir unique name, the same in C{new/} and
    C{cur/} whatever its flags, so a file renamed by another program meanwhile
    is found again; a file that is gone is simply gone, never an error.
    """

    path = Attribute("The Maildir directory: the mailbox's identity (change notices and IDLE use it).")


class IMailboxReader(IMaildirReader):
    """
    A Maildir INBOX for a session that lists it once and streams files from
    it (POP3): no UIDs, no cached summaries, nothing parsed.
    """

    def prepare():
        """Create the Maildir if it is missing; True if anything was made."""

    def list():
        """
        The messages of C{new/} and C{cur/}, oldest delivery first, each once:
        L{mailserver.store.reader.StoredMessage}s (C{unique}: the Maildir
        unique name, stable across renames; C{path}; C{size} with CRLF line
        ends; C{letters}: the Maildir flags).
        """

    def open(path, unique):
        """
        C{(file opened for binary reading, its current path)} for the message
        last seen at C{path}, or L{None} if it is gone.
        """

    def mark_seen(path, unique):
        """Add the Seen flag (the file moves into C{cur/}); its new path, or L{None} if gone."""

    def delete(messages):
        """
        Remove C{messages} (C{(path, unique)} pairs), fsync the directories and
        update the quota; return how many were removed (a file already gone
        is not counted and is not an error).
        """


class IFolderReader(IMaildirReader):
    """
    One Maildir folder as IMAP reads it: an index shared by every session of
    the process, published as immutable snapshots (so the reactor thread
    reads them while a refresh runs in a thread).
    """

    snapshot = Attribute(
        """
        The last L{mailserver.store.records.Snapshot}: UIDVALIDITY, UIDNEXT,
        HIGHESTMODSEQ, the keyword table and the messages in UID order as
        L{mailserver.store.records.MessageRecord}s (UID, unique name, file
        name, flag letters, internal date, size, and the cached summary the
        index was given: CRLF size, envelope, body structure, sort fields)
        with each message's MODSEQ.
        """
    )

    def refresh(force=False):
        """
        Bring C{snapshot} up to date with the directory and return it; cheap
        when nothing changed (two C{stat}s).  C{force}: list even so.
        """

    def read(uid):
        """The message's bytes with CRLF line ends, or L{None} if it was expunged."""

    def read_many(uids, transform=None):
        """C{{uid: bytes or None}} for several messages in one call (one thread trip per FETCH batch)."""

    def size_of(uids, snap=None):
        """C{(bytes, count)} of the messages C{uids} that exist in C{snap} (default C{snapshot}), for quotas."""

    def vanished_since(modseq):
        """
        C{(uids, exact)}: the UIDs expunged after C{modseq}; C{exact} is False
        when older expunges were forgotten (QRESYNC, RFC 7162).
        """


class IFolderWriter(Interface):
    """
    The write side of one IMAP folder.  Every method blocks, publishes a new
    snapshot with the changed messages' MODSEQs and keeps the quota usage
    current; nothing is acknowledged before it is durable.
    """

    def append(data, flags, mtime):
        """
        Store a new message (CRLF or LF line ends; kept with LF), fsynced, with
        C{mtime} (or now) as internal date; return C{(uidvalidity, uid)}.

        @raise mailserver.store.index.FolderGone: the folder was deleted.
        """

    def store(uids, flags, mode):
        """
        Change the flags of C{uids} (C{mode} 0 set, 1 add, -1 remove); a
        concurrent change by another program is kept.  C{{uid: record}} of
        the messages that still exist.

        @raise mailserver.store.flags.FlagError: a bad keyword, or too many.
        """

    def conditional_store(uids, flags, mode, unchangedsince):
        """
        L{store}, leaving alone the messages whose MODSEQ is above
        C{unchangedsince} (when not None): C{({uid: record}, [their uids])}.
        """

    def claim_recent():
        """
        Move C{new/} into C{cur/}; the UIDs this call claimed (\\Recent for
        the calling session only), with those this process placed in
        C{cur/} since the last claim.
        """

    def expunge(uids=None):
        """Remove the messages flagged \\Deleted (only among C{uids} if given); their UIDs."""

    def transfer(uids, target, move):
        """
        COPY (C{move} False) or MOVE C{uids} into C{target} (another folder
        of the same store), flags kept, new UIDs given in order and the
        directories fsynced before returning; messages expunged meanwhile
        are skipped.  C{[(source uid, target uid)]}.
        """


class IFolder(IFolderReader, IFolderWriter):
    """One IMAP folder: both sides, as a session that selects it uses them."""


class IFolderTree(Interface):
    """
    One user's tree of folders (Maildir++ directories under the INBOX Maildir)
    and their subscriptions: what IMAP's CREATE, DELETE, RENAME, LIST, LSUB and
    (UN)SUBSCRIBE change.  Names are IMAP mailbox names (C{store.folder_names});
    bad or missing ones raise C{FolderError} subclasses.  Every method blocks:
    call it from a thread.
    """

    root = Attribute("The user's Maildir (INBOX), an absolute path.")
    special_use = Attribute("Folder name -> SPECIAL-USE attribute (made on first login).")

    def path(name):
        """The Maildir directory of folder C{name}, checked to be inside C{root}."""

    def exists(name):
        """True if folder C{name} exists."""

    def names():
        """Every existing folder: INBOX first, then in name order."""

    def has_children(name, names=None):
        """True if some folder (of C{names}, default all) lies below C{name}."""

    def ensure_defaults():
        """Create INBOX and the missing special-use folders, subscribe those; the names made."""

    def create(name):
        """Create folder C{name}; its normalised name."""

    def delete(name):
        """Remove folder C{name} and its messages (sub-folders stay); its normalised name."""

    def rename(old, new):
        """Rename C{old} and every folder below it; the C{(old, new)} name pairs."""

    def subscriptions():
        """The subscribed names, in file order."""

    def subscribe(name):
        """Subscribe to existing folder C{name}; its normalised name."""

    def unsubscribe(name):
        """Drop the subscription to C{name}; its normalised name."""


class IFolderRegistry(Interface):
    """
    The folders of this process, one shared L{IFolder} per directory (the
    factory IMAP accounts are given).  Blocking: call from a thread.
    """

    def get(path, root):
        """The L{IFolder} of the Maildir folder at C{path}; C{root}: the user's Maildir."""

    def forget(path):
        """C{path} and the folders below it were renamed or deleted: drop what is cached."""


class IMailboxNotifier(Interface):
    """In-process "mailbox changed" events (IMAP IDLE, POP3), keyed by Maildir path."""

    def subscribe(path, callback):
        """Call C{callback(key)} on the reactor thread when the mailbox at C{path} changes; the unsubscribe function."""

    def changed(paths):
        """The mailboxes at C{paths} changed: wake their subscribers."""


class IRecipientStage(Interface):
    """One step of the RCPT TO restriction list (recipients, relay, aliases)."""

    name = Attribute("Short name used in logs, like Postfix restriction names.")

    def check(envelope, recipient):
        """
        Decide on one recipient.

        @param envelope: the L{mailserver.envelope.Envelope} so far.
        @param recipient: the L{mailserver.address.Address} as given.
        @return: a L{mailserver.envelope.Verdict} or a Deferred of one.
        """


class IContentCheck(Interface):
    """
    A content check run once per message at end of DATA (header_checks,
    body_checks, mime_header_checks): pure CPU work, so callers run it in
    a thread and the reactor never waits on it.
    """

    name = Attribute("Short name used in logs.")

    def inspect(envelope, message):
        """
        Inspect a whole message.

        @param envelope: the L{mailserver.envelope.Envelope}.
        @param message: the message bytes, lines ending in LF; for a
            spooled message a L{mailserver.spooled.MessageView} (C{len},
            slices, C{find}) over the spool file, valid during the call only.
        @return: a L{mailserver.delivery.checks.ContentVerdict} (what to do:
            reject with a L{MailError}, discard, hold, redirect, bcc, and the
            possibly rewritten message bytes).
        """


class IMessageFilter(Interface):
    """
    A step at end of DATA that may wait on the network (mail authentication,
    milters): asynchronous, run before the content checks.
    """

    name = Attribute("Short name used in logs.")

    def filter(envelope, message):
        """
        Look at (and possibly change) one message.

        @param envelope: the L{mailserver.envelope.Envelope}.
        @param message: the L{mailserver.spooled.SpooledMessage}, missing
            Message-ID and Date already added.
        @return: a Deferred firing with a
            L{mailserver.delivery.filters.FilterResult}.
        """


class IImmediateFilter(IMessageFilter):
    """
    A filter that can also look at a message in memory in callback style,
    for the transaction's quick path (no coroutine per message).
    """

    def filter_now(envelope, message):
        """
        L{IMessageFilter.filter} of a message in memory.

        @param message: the message's bytes.
        @return: the L{mailserver.delivery.filters.FilterResult} when
            nothing had to be awaited, else a Deferred firing with it.
        """


class ISenderCheck(Interface):
    """A step at MAIL FROM that may wait on the network (SPF): asynchronous."""

    name = Attribute("Short name used in logs.")

    def check(envelope):
        """
        Look at the new L{mailserver.envelope.Envelope} (and note
        results on it); an awaitable that raises L{mailserver.errors.MailError}
        to refuse the sender.
        """


class ILookupTable(Interface):
    """A key -> values table (aliases, virtual aliases) that reloads atomically."""

    def lookup(key):
        """Return the list of values for C{key} or L{None}."""


class IOutboundQueue(Interface):
    """The persistent queue of mail for other hosts."""

    def enqueue(sender, recipients, message, client=None):
        """
        Store durably; return a Deferred firing with the queue id.
        C{message} is bytes or a L{mailserver.spooled.SpooledMessage}.

        @param client: the L{mailserver.envelope.Client} the mail
            came from, or L{None}; decorators (DKIM signing) decide from it.
        """


class IMilterSession(Interface):
    """
    One SMTP connection's milters (one milter, or several in order): each
    stage returns a Deferred L{mailserver.milter.client.Verdict} and never
    fails; a broken milter gives C{milter_default_action}'s verdict.
    """

    def connect(macros, hostname, family, port, address):
        """The client connected (opens the milter connection)."""

    def helo(name, macros):
        """HELO/EHLO."""

    def mail_from(args, macros):
        """MAIL FROM: C{["<sender>", "ESMTP=arg", ...]}; starts a message."""

    def rcpt(args, macros):
        """RCPT TO: a reject refuses this recipient only."""

    def data(macros):
        """DATA."""

    def header(name, value):
        """One header: the text after the colon, folded lines joined by LF."""

    def eoh(macros):
        """End of headers."""

    def body(chunk):
        """Body bytes, CRLF lines."""

    def eom(macros):
        """End of message: the final verdict with the modifications."""

    def unknown(command, macros):
        """An unknown SMTP command."""

    def abort():
        """The current message is abandoned (RSET, or after its final reply)."""

    def quit():
        """Close the milter connection(s); a Deferred firing once closed."""
class ISMTPDelivery(Interface):
    """
    One SMTP client's delivery session: what C{smtp/server.py} drives from
    MAIL FROM to end of data (provided by
    L{mailserver.delivery.pipeline.DeliveryPipeline}).

    twisted.mail's C{IMessageDelivery} cannot carry our ordering and limits
    (its C{validateTo} sees one recipient with no envelope, C{IMessage} gets
    lines one by one with no back-pressure and no per-transaction reply
    text), so the ESMTP subclass uses this instead; the cred avatar is still
    twisted.mail's C{IMessageDeliveryFactory}, whose C{getMessageDelivery}
    returns an C{ISMTPDelivery}.  Methods raise or fail with
    L{mailserver.errors.MailError} (code, enhanced status, text).
    """

    sasl_user = Attribute("The SASL-authenticated user name, or None for an anonymous client.")

    def begin(client, sender, size=None):
        """MAIL FROM: a new C{Envelope} (C{sender} an C{Address} or None for C{<>}, C{size} from SIZE=)."""

    def check_sender(sender, envelope):
        """Awaitable: refuse a sender the authenticated user does not own (reject_sender_login_mismatch)."""

    def check_recipient(envelope, address):
        """Awaitable: RCPT TO through the recipient stages in order; the accepted C{Recipient}, added."""

    def open_transaction(envelope):
        """DATA: an L{ISMTPTransaction} for C{envelope}."""


class ISMTPTransaction(Interface):
    """The DATA phase of one envelope: stream the message in, then commit durably."""

    size = Attribute("Bytes received so far.")
    behind = Attribute("True while the spool writer is behind: stop reading until when_caught_up.")

    def write(data):
        """Append message bytes (LF line ends, dot-unstuffed)."""

    def when_caught_up(callback):
        """Call C{callback} once the spool writer has caught up (now if it is not behind)."""

    def fail(error):
        """Refuse the message at end of data with C{error}; keep reading until then."""

    def abort():
        """The client went away or reset: discard everything."""

    def commit():
        """End of data: a Deferred firing with the 250 text once every destination is durable."""

    def commit_each():
        """
        End of data for LMTP (RFC 2033): a Deferred firing with one
        C{(Recipient, 250 text or MailError)} per accepted recipient.
        """


class ISieveScripts(Interface):
    """
    The ManageSieve avatar: one user's Sieve scripts.  Methods block (the
    protocol calls them in a thread) and raise
    L{mailserver.sieve.account.ScriptRefused} with a response code.
    """

    def list():
        """C{[(name, active)]} in name order."""

    def get(name):
        """The script's bytes; refused with NONEXISTENT."""

    def check(data):
        """Compile C{data}; refused with the parser's C{line N: ...} message."""

    def put(name, data):
        """Check, then store atomically within the quotas (QUOTA/MAXSCRIPTS, QUOTA/MAXSIZE)."""

    def have_space(name, size):
        """Would a script of C{size} bytes named C{name} fit the quotas?"""

    def set_active(name):
        """Make C{name} active; None or "" deactivates."""

    def delete(name):
        """Remove a script (not the active one: ACTIVE)."""

    def rename(old, new):
        """Rename (ALREADYEXISTS, NONEXISTENT); the active link follows."""
class IQuota(Interface):
    """Per-user storage and message-count quotas (L{mailserver.store.quota})."""

    def limits_of(user):
        """C{user}'s L{mailserver.quota_rule.QuotaLimits}, at once (no disk): unlimited users cost nothing more."""

    def usage(user, maildir):
        """A Deferred firing with C{(Usage, QuotaLimits)} of C{user}'s Maildir C{maildir}."""

    def check(user, maildir, size):
        """
        A Deferred firing with L{None} if one more message of C{size} bytes
        fits in C{user}'s quota, else with the L{MailError} (552 5.2.2) to give.
        """

    def warn(user, maildir, before, size):
        """
        After a delivery of C{size} bytes to a mailbox whose usage was
        C{before} (a L{mailserver.store.quota.Usage}): deliver the warning
        notice if this delivery crossed the warning level.  Reads nothing.
        """
