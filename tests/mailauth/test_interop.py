"""
Interoperability with OpenDKIM (Debian's opendkim, skipped when absent) and
the shared corpus (skipped when absent): our signatures verify with OpenDKIM
and dkimpy, OpenDKIM's verify with ours, every corpus message signs and verifies.

OpenDKIM runs in its test mode (C{opendkim -t}) with C{TestPublicKeys}, the
records the loopback DNS server publishes in the other tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import dkim
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.dkim_verify import DKIMVerifier, _Answers, verify_blocking
from mailserver.mailauth.dns import DNSLookup
from mailserver.mailauth.inbound import Authenticator, InboundPolicy, Verdict, authenticate_blocking
from mailserver.mailauth.spf import SPFResult
from mailserver.mailauth.verify_process import VerifyProcesses
from tests.dns import DNSTestServer
from tests.mailauth.support import MESSAGE, key_records, keys
from tests.store.maildir_harness import corpus_directory

# Beside the repository (CI), or the shared folder seen from a worktree.
CORPUS_CANDIDATES = [corpus_directory(), "/work/shared/corpus/mail-fixtures"]


def corpus_messages() -> list[tuple[str, bytes]]:
    for root in CORPUS_CANDIDATES:
        if os.path.isdir(root):
            break
    else:
        raise SkipTest("shared corpus absent")
    found = []
    for directory, _dirs, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.startswith(".") or name == "LICENSE":
                continue
            with open(os.path.join(directory, name), "rb") as handle:
                message = handle.read()
            # As it would be after SMTP DATA: no mbox "From " envelope line, a final line end.
            if message.startswith(b"From "):
                message = message.split(b"\n", 1)[1] if b"\n" in message else b""
            if message and not message.endswith(b"\n"):
                message += b"\r\n" if b"\r\n" in message else b"\n"
            found.append((os.path.relpath(os.path.join(directory, name), root), message))
    return found


def header_malformed_for_dkim(message: bytes) -> bool:
    """dkimpy (and RFC 6376 signers generally) refuse these header blocks: sent unsigned instead."""
    try:
        dkim.DKIM(message)
    except (dkim.MessageFormatError, TypeError):
        return True
    return not message


class OpenDKIM:
    """C{opendkim -t} in a private directory (OpenDKIM refuses world-writable key paths)."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        if shutil.which("opendkim") is None:
            raise SkipTest("opendkim not installed (apt-get install opendkim opendkim-tools)")
        self.directory = os.path.abspath(testcase.mktemp())
        os.makedirs(self.directory, mode=0o700)
        os.chmod(self.directory, 0o700)

    def write(self, name: str, data: bytes, mode: int = 0o600) -> str:
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def run(self, config: str, *messages: bytes, verbose: bool = False) -> str:
        paths = [self.write(f"m{i}.eml", m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for i, m in enumerate(messages)]
        conf = self.write("opendkim.conf", config.encode())
        command = ["opendkim", *(["-vvv"] if verbose else []), "-x", conf, "-t", ",".join(paths)]
        done = subprocess.run(command, capture_output=True, timeout=120)
        return (done.stdout + done.stderr).decode("utf-8", "replace")

    def verify(self, signing_keys, *messages: bytes, verbose: bool = False) -> str:
        table = "".join(f"{k.dns_name} {k.txt_value}\n" for k in signing_keys)
        keys_path = self.write("keys", table.encode())
        return self.run(f"Mode v\nSyslog no\nTestPublicKeys {keys_path}\n", *messages, verbose=verbose)

    def sign(self, key, message: bytes) -> bytes:
        key_path = self.write("signing.key", key.private)
        out = self.run(
            f"Mode s\nSyslog no\nDomain {key.domain}\nSelector {key.dns_selector}\nKeyFile {key_path}\n"
            "Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\nRequireSafeKeys no\n",
            message,
        )
        start = out.index("DKIM-Signature:")
        field = out[start:].split("\n\n", 1)[0]
        lines = [line for line in field.splitlines() if line and not line.startswith("opendkim:")]
        return ("\n".join(lines) + "\n").encode()


class OpenDKIMTests(SynchronousTestCase):
    def test_our_dual_signatures_verify_with_opendkim(self) -> None:
        rsa, ed = keys()
        opendkim = OpenDKIM(self)
        out = opendkim.verify([rsa, ed], sign_with(MESSAGE, [rsa, ed]) + MESSAGE, verbose=True)
        self.assertIn("dkim=pass (2048-bit key) header.d=example.com", out)
        self.assertIn("header.a=ed25519-sha256 header.s=mail-ed25519", out.replace("\n\t", " "))
        self.assertEqual(out.count("dkim=pass"), 2, out)

    def test_corpus_signed_by_us_verifies_with_opendkim(self) -> None:
        rsa, _ed = keys()
        opendkim = OpenDKIM(self)
        messages = [m for _name, m in corpus_messages() if not header_malformed_for_dkim(m)]
        signed = [sign_with(m, [rsa]) + m for m in messages]
        out = opendkim.verify([rsa], *signed)
        succeeded = out.count("verification (s=mail, d=example.com, 2048-bit key) succeeded")
        # No signature of ours ever fails; OpenDKIM says nothing about the one fixture without From:.
        self.assertNotIn(") failed", out)
        self.assertGreaterEqual(succeeded, len(signed) - 1, out[-3000:])


class OpenDKIMSignedTests(TestCase):
    def setUp(self) -> Deferred:
        self.rsa, self.ed = keys()
        self.dns = DNSTestServer({"example.com": key_records(self.rsa, self.ed)})
        return self.dns.start(self)

    async def test_opendkim_signature_verifies_with_ours(self) -> None:
        opendkim = OpenDKIM(self)
        signed = opendkim.sign(self.rsa, MESSAGE) + MESSAGE
        self.assertIn(b"a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=mail", signed)
        results = await DKIMVerifier(DNSLookup(self.dns.resolver), reactor).verify(signed)
        self.assertEqual([(r.result, r.domain) for r in results.dkim], [("pass", "example.com")])
        tampered = signed.replace(b"Hello", b"Jello")
        results = await DKIMVerifier(DNSLookup(self.dns.resolver), reactor).verify(tampered)
        self.assertEqual([r.result for r in results.dkim], ["fail"])

    async def test_opendkim_signature_verifies_in_a_worker(self) -> None:
        """The same through a mail authentication worker process (the server's default path)."""
        opendkim = OpenDKIM(self)
        signed = opendkim.sign(self.rsa, MESSAGE) + MESSAGE
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.example.net"))
        pool = VerifyProcesses(reactor, 1, authenticator.dkim.in_thread)
        pool.start()
        self.addCleanup(pool.stop)
        authenticator.dkim.processes = pool
        spf = SPFResult("none", "example.com", "mailfrom")
        for message, result in ((signed, b"dkim=pass"), (signed.replace(b"Hello", b"Jello"), b"dkim=fail")):
            verdict = await authenticator.in_worker("192.0.2.1", "client.example", "a@example.com", message, spf)
            self.assertIsInstance(verdict, Verdict)
            self.assertIn(result, verdict.header)
            self.assertIn(b"header.d=example.com header.s=mail header.a=rsa-sha256", verdict.header)


class CorpusTests(SynchronousTestCase):
    def test_every_corpus_message_checked_by_the_workers_code(self) -> None:
        """
        Every corpus message we can sign, checked whole by the workers'
        code (L{authenticate_blocking}): our two signatures pass, nothing raises.
        """
        rsa, ed = keys()
        known = {("txt_bytes", rsa.dns_name): [rsa.txt_value.encode()],
                 ("txt_bytes", ed.dns_name): [ed.txt_value.encode()]}
        policy = InboundPolicy("mx.example.net")
        spf = SPFResult("none", "example.com", "mailfrom")
        checked = 0
        for name, message in corpus_messages():
            if header_malformed_for_dkim(message):
                continue
            signed = sign_with(message, [rsa, ed]) + message
            verdict = authenticate_blocking(lambda kind, n: known.get((kind, n), []), policy, spf, signed,
                                            "a@example.com", "client.example")
            passes = verdict.header.replace(b"\n\t", b" ").count(b"dkim=pass header.d=example.com header.s=mail")
            self.assertEqual(passes, 2, name)
            checked += 1
        self.assertGreater(checked, 0)

    def test_every_corpus_message_signs_and_verifies(self) -> None:
        rsa, ed = keys()
        answers = _Answers({rsa.dns_name: rsa.txt_value.encode(), ed.dns_name: ed.txt_value.encode()}, set())
        unsignable = []
        for name, message in corpus_messages():
            if header_malformed_for_dkim(message):
                unsignable.append(name)
                continue
            signed = sign_with(message, [rsa, ed]) + message
            results = verify_blocking(signed, answers)
            # Ours are the first two; a fixture may carry an old signature of its own.
            self.assertEqual([r.result for r in results.dkim[:2]], ["pass", "pass"], name)
            # dkimpy's own verifier agrees, over CRLF as on the wire.
            wire = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self.assertTrue(dkim.DKIM(wire).verify(
                idx=0, dnsfunc=lambda n, timeout=5: answers.records.get(n.decode().rstrip("."))), name)
        # Obsolete or broken header syntax dkimpy refuses ("To    : x", a stray unfolded
        # line, an empty file); the signer sends these unsigned (test_dkim's regression test).
        self.assertLessEqual(len(unsignable), 4, unsignable)
