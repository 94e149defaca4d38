"""
TLS server contexts for every listener (STARTTLS, STLS and implicit TLS).

One L{ReloadableContextFactory} per certificate/key pair: it builds a
pyOpenSSL context (TLS 1.2 minimum, the configured cipher list, no
compression, server cipher preference, no renegotiation) and hands each new
connection the current context.  L{ReloadableContextFactory.reload} reads
the files again, so a certificate renewed by an ACME client applies to new
connections while established ones keep the context they started with; a
bad new pair is refused and the old one kept.

Without a configured certificate, L{ensure_certificate} makes a self-signed
one for C{myhostname} in C{$data_directory/tls/} on first start and reuses
it afterwards.  L{PlaintextPolicy} says whether a connection may carry a
plain-text password (Dovecot's C{disable_plaintext_auth}).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from service_identity import CertificateError as NoIdentity
from service_identity import VerificationError
from service_identity.cryptography import verify_certificate_hostname
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, ISSLTransport
from twisted.internet.ssl import ContextFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from mailserver.config.values import tls_protocol_range
from mailserver.durable import replace_atomically

log = Logger()

#: OpenSSL protocol version numbers by Postfix's protocol names.
_VERSIONS = {
    "SSLv3": SSL.SSL3_VERSION,
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}

#: Lifetime of the generated certificate: the longest browsers ever accepted.
SELF_SIGNED_DAYS = 825
#: A generated certificate this close to expiry is replaced at start.
RENEW_BEFORE = datetime.timedelta(days=30)
#: A configured certificate this close to expiry is warned about at (re)load.
WARN_BEFORE = datetime.timedelta(days=14)

SELF_SIGNED_CERT = "selfsigned-cert.pem"
SELF_SIGNED_KEY = "selfsigned-key.pem"


class CertificateError(Exception):
    """A certificate or key file cannot be used; the message says why and which file."""


# Settings


@dataclass(frozen=True)
class CertificateFiles:
    """A PEM certificate chain (leaf first) and its private key (may be the same file)."""

    cert_file: str
    key_file: str


@dataclass(frozen=True)
class TLSSettings:
    """
    What the configuration says about TLS.  A service whose files are None
    uses the generated self-signed pair.
    """

    smtpd: CertificateFiles | None
    imap: CertificateFiles | None
    pop3: CertificateFiles | None
    min_protocol: str = "TLSv1.2"
    max_protocol: str = "TLSv1.3"
    cipherlist: str = ""

    @classmethod
    def from_config(cls, config: Any) -> TLSSettings:
        """
        Read C{smtpd_tls_cert_file}/C{smtpd_tls_key_file} (IMAP and POP3
        default to them unless C{imap_tls_*}/C{pop3_tls_*} are set),
        C{smtpd_tls_mandatory_protocols} and C{tls_high_cipherlist}.

        As in Postfix, a key file left unset means the key is in the
        certificate file.
        """
        minimum, maximum = tls_protocol_range(config.smtpd_tls_mandatory_protocols)
        return cls(
            smtpd=_files(config, "smtpd_tls_cert_file", "smtpd_tls_key_file"),
            imap=_files(config, "imap_tls_cert_file", "imap_tls_key_file"),
            pop3=_files(config, "pop3_tls_cert_file", "pop3_tls_key_file"),
            min_protocol=minimum,
            max_protocol=maximum,
            cipherlist=config.tls_high_cipherlist,
        )


def _files(config: Any, cert_name: str, key_name: str) -> CertificateFiles | None:
    cert = getattr(config, cert_name)
    if not cert:
        return None
    key = getattr(config, key_name)
    # imap_tls_key_file defaults to smtpd_tls_key_file: with its own
    # certificate and no key of its own, the key is in its certificate file.
    if not key or (_is_default(config, key_name) and not _is_default(config, cert_name)):
        key = cert
    return CertificateFiles(cert, key)


def _is_default(config: Any, name: str) -> bool:
    where = getattr(config, "where", None)
    return where is None or where(name)[0] == "<default>"


# PEM parsing (pure)

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL
)


def _blocks(data: bytes, kinds: Iterable[bytes]) -> list[bytes]:
    wanted = set(kinds)
    return [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) in wanted]


def parse_pem_pair(
    cert_pem: bytes, key_pem: bytes, cert_name: str = "certificate", key_name: str = "key"
) -> tuple[list[x509.Certificate], Any]:
    """
    The certificate chain (leaf first) and the private key from PEM text.
    The key may sit in the same text as the certificates and the other way
    round.  Raises L{CertificateError} naming the file at fault.
    """
    chain_blocks = _blocks(cert_pem, [b"CERTIFICATE"])
    if not chain_blocks:
        raise CertificateError(f"{cert_name}: no PEM certificate found")
    try:
        chain = [x509.load_pem_x509_certificate(block) for block in chain_blocks]
    except ValueError as e:
        raise CertificateError(f"{cert_name}: invalid certificate: {e}") from e
    if _blocks(key_pem, [b"ENCRYPTED PRIVATE KEY"]) or b"Proc-Type: 4,ENCRYPTED" in key_pem:
        raise CertificateError(f"{key_name}: the private key is encrypted; a daemon cannot type its passphrase")
    key_blocks = _blocks(key_pem, [b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"])
    if not key_blocks:
        raise CertificateError(f"{key_name}: no PEM private key found")
    try:
        key = serialization.load_pem_private_key(key_blocks[0], password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"{key_name}: invalid private key: {e}") from e
    leaf_key = chain[0].public_key()
    if leaf_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(f"{key_name}: the private key does not match the certificate in {cert_name}")
    return chain, key


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError(f"{path}: cannot read: {e.strerror or e}") from e


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def describe(cert: x509.Certificate) -> str:
    """Subject, expiry and SHA-256 fingerprint, for the log."""
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    return (
        f"subject={cert.subject.rfc4514_string()} "
        f"not_after={_not_after(cert):%Y-%m-%dT%H:%M:%SZ} sha256={fingerprint[:16]}"
    )


def covers(cert: x509.Certificate, hostname: str) -> bool:
    """Whether C{cert} is valid for C{hostname} (RFC 6125, via service_identity)."""
    try:
        verify_certificate_hostname(cert, hostname)
    except (VerificationError, NoIdentity, ValueError):
        return False
    return True


# Contexts


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableContextFactory(ContextFactory):
    """
    The server TLS context for one certificate/key pair, replaceable while
    connections run.

    Usable as C{transport.startTLS(factory)} (STARTTLS, STLS) and as the
    context factory of a C{TLSMemoryBIOFactory} (implicit TLS): both ask
    for a new connection object per connection (L{serverConnectionForTLS}),
    made from the context current at that moment.

    @raise CertificateError: when the pair cannot be loaded at start.
    """

    isClient = False

    def __init__(
        self,
        cert_file: str,
        key_file: str | None = None,
        *,
        min_protocol: str = "TLSv1.2",
        max_protocol: str = "TLSv1.3",
        cipherlist: str = "",
        hostname: str | None = None,
        now: Any = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file or cert_file
        self.min_protocol = min_protocol
        self.max_protocol = max_protocol
        self.cipherlist = cipherlist
        self.hostname = hostname
        self._now = now or (lambda: datetime.datetime.now(datetime.timezone.utc))
        self._context, self.certificate = self._load()
        log.info(
            "tls: loaded {cert_file}: {description}",
            cert_file=self.cert_file,
            description=describe(self.certificate),
        )

    def getContext(self) -> SSL.Context:
        """The context new connections use now."""
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)

    def reload(self) -> bool:
        """
        Read the certificate and key again.  New connections get them;
        established connections keep theirs.  On error the old pair stays,
        the error is logged, and False is returned.
        """
        try:
            context, certificate = self._load()
        except CertificateError as e:
            log.error("tls: reload failed, keeping the previous certificate: {error}", error=str(e))
            return False
        self._context, self.certificate = context, certificate
        log.info(
            "tls: reloaded {cert_file}: {description}",
            cert_file=self.cert_file,
            description=describe(certificate),
        )
        return True

    def _load(self) -> tuple[SSL.Context, x509.Certificate]:
        cert_pem = _read(self.cert_file)
        key_pem = cert_pem if self.key_file == self.cert_file else _read(self.key_file)
        chain, key = parse_pem_pair(cert_pem, key_pem, self.cert_file, self.key_file)
        self._check(chain[0])
        try:
            context = self._context_for(chain, key)
        except SSL.Error as e:
            raise CertificateError(f"{self.cert_file}: OpenSSL refused the pair: {e}") from e
        return context, chain[0]

    def _check(self, leaf: x509.Certificate) -> None:
        now = self._now()
        if _not_after(leaf) <= now:
            log.error("tls: {cert_file} has expired ({description})",
                      cert_file=self.cert_file, description=describe(leaf))
        elif _not_after(leaf) - now <= WARN_BEFORE:
            log.warn("tls: {cert_file} expires soon ({description})",
                     cert_file=self.cert_file, description=describe(leaf))
        if self.hostname and not covers(leaf, self.hostname):
            log.warn("tls: {cert_file} is not valid for {hostname} ({description})",
                     cert_file=self.cert_file, hostname=self.hostname, description=describe(leaf))

    def _context_for(self, chain: list[x509.Certificate], key: Any) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(_VERSIONS.get(self.min_protocol, SSL.SSL3_VERSION))
        if self.max_protocol in _VERSIONS:
            context.set_max_proto_version(_VERSIONS[self.max_protocol])
        context.set_options(
            SSL.OP_NO_COMPRESSION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_NO_RENEGOTIATION
            | SSL.OP_SINGLE_DH_USE
            | SSL.OP_SINGLE_ECDH_USE
        )
        if self.cipherlist:
            context.set_cipher_list(self.cipherlist.encode("ascii"))
        context.set_session_id(b"mailserver")
        context.use_certificate(crypto.X509.from_cryptography(chain[0]))
        for extra in chain[1:]:
            context.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
        context.use_privatekey(crypto.PKey.from_cryptography_key(key))
        context.check_privatekey()
        return context


@dataclass(frozen=True)
class ServiceContexts:
    """The context factory of each service; services with the same files share one."""

    smtpd: ReloadableContextFactory
    imap: ReloadableContextFactory
    pop3: ReloadableContextFactory

    def all(self) -> list[ReloadableContextFactory]:
        """Each distinct factory once."""
        seen: dict[int, ReloadableContextFactory] = {}
        for factory in (self.smtpd, self.imap, self.pop3):
            seen.setdefault(id(factory), factory)
        return list(seen.values())

    def reload(self) -> bool:
        """Reload every pair (SIGHUP, C{mailserver reload}); True if all reloaded."""
        results = [factory.reload() for factory in self.all()]
        return all(results)


def build_contexts(
    settings: TLSSettings, data_directory: str, hostname: str, *, now: Any = None
) -> ServiceContexts:
    """
    Context factories for SMTP, IMAP and POP3 from L{TLSSettings},
    generating the self-signed pair first if a service needs it.

    Runs at start-up, before the reactor: it may write the generated files.

    @raise CertificateError: a configured pair cannot be used.
    """
    generated: CertificateFiles | None = None
    made: dict[CertificateFiles, ReloadableContextFactory] = {}

    def factory_for(files: CertificateFiles | None) -> ReloadableContextFactory:
        nonlocal generated
        if files is None:
            if generated is None:
                generated = CertificateFiles(*ensure_certificate(data_directory, hostname, now=now))
            files = generated
        if files not in made:
            made[files] = ReloadableContextFactory(
                files.cert_file,
                files.key_file,
                min_protocol=settings.min_protocol,
                max_protocol=settings.max_protocol,
                cipherlist=settings.cipherlist,
                hostname=hostname,
                now=now,
            )
        return made[files]

    return ServiceContexts(
        smtpd=factory_for(settings.smtpd),
        imap=factory_for(settings.imap),
        pop3=factory_for(settings.pop3),
    )


def wrap_implicit(factory: Any, context: Any) -> TLSMemoryBIOFactory:
    """C{factory} behind TLS from the first byte (smtps 465, imaps 993, pop3s 995)."""
    wrapped = TLSMemoryBIOFactory(context, False, factory)
    wrapped.noisy = getattr(factory, "noisy", False)
    return wrapped


# The self-signed default


def ensure_certificate(
    data_directory: str, hostname: str, *, now: Any = None, key_type: str = "rsa"
) -> tuple[str, str]:
    """
    The paths of a self-signed certificate for C{hostname} and its key in
    C{data_directory/tls/}, generated (and logged) when missing, unreadable,
    made for another host name, or within 30 days of expiry; reused otherwise.

    The key is written with mode 0600; both files atomically (temporary
    file, fsync, rename, fsync of the directory).  Blocking: call at start.
    """
    current = (now or (lambda: datetime.datetime.now(datetime.timezone.utc)))()
    directory = os.path.join(data_directory, "tls")
    cert_path = os.path.join(directory, SELF_SIGNED_CERT)
    key_path = os.path.join(directory, SELF_SIGNED_KEY)
    why = _reuse_problem(cert_path, key_path, hostname, current)
    if why is None:
        log.info("tls: using the self-signed certificate {path} for {hostname}", path=cert_path, hostname=hostname)
        return cert_path, key_path
    cert_pem, key_pem = generate_self_signed(hostname, current, key_type=key_type)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    replace_atomically(key_path, key_pem, 0o600)
    replace_atomically(cert_path, cert_pem, 0o644)
    if os.geteuid() == 0:  # twistd --uid: built as root, reloaded as the data directory's owner
        owner = os.stat(data_directory)
        for path in (directory, key_path, cert_path):
            os.chown(path, owner.st_uid, owner.st_gid)
    log.warn(
        "tls: generated a self-signed certificate for {hostname} ({why}) in {path}, valid "
        "{days} days; clients will warn about it: set smtpd_tls_cert_file and "
        "smtpd_tls_key_file to a certificate from a CA",
        hostname=hostname,
        why=why,
        path=cert_path,
        days=SELF_SIGNED_DAYS,
    )
    return cert_path, key_path


def _reuse_problem(cert_path: str, key_path: str, hostname: str, now: datetime.datetime) -> str | None:
    """Why the generated pair on disk cannot be reused, or None if it can."""
    if not os.path.exists(cert_path) or not os.path.exists(key_path):
        return "none yet"
    try:
        chain, _ = parse_pem_pair(_read(cert_path), _read(key_path), cert_path, key_path)
    except CertificateError as e:
        return f"the old one is unusable: {e}"
    leaf = chain[0]
    if not covers(leaf, hostname):
        return "the old one is for another host name"
    if _not_after(leaf) - now <= RENEW_BEFORE:
        return "the old one expires soon"
    return None


def generate_self_signed(
    hostname: str, now: datetime.datetime, *, key_type: str = "rsa", days: int = SELF_SIGNED_DAYS
) -> tuple[bytes, bytes]:
    """
    A self-signed server certificate for C{hostname} (CN and DNS SAN) and
    its unencrypted PKCS#8 key, as PEM.  C{key_type}: C{"rsa"} (2048 bits,
    for the oldest clients) or C{"ec"} (P-256).
    """
    if key_type == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        usage = x509.KeyUsage(
            digital_signature=True, key_encipherment=True, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False,
        )  # fmt: skip
    elif key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.KeyUsage(
            digital_signature=True, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False,
        )  # fmt: skip
    else:
        raise ValueError(f"key_type must be 'rsa' or 'ec', not {key_type!r}")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


# Plain-text passwords

LOOPBACK_NETWORKS: tuple[Any, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def is_secure(transport: Any) -> bool:
    """Whether C{transport} is encrypted (implicit TLS, or after STARTTLS/STLS)."""
    return ISSLTransport.providedBy(transport)


def peer_ip(transport: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's IP address (IPv4-mapped IPv6 as IPv4), or None for non-IP transports."""
    host = getattr(transport.getPeer(), "host", None)
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class PlaintextPolicy:
    """
    C{policy(transport) -> bool}: may a password be sent in the clear on this
    connection (USER/PASS, LOGIN, AUTH PLAIN/LOGIN)?

    Always on encrypted connections and from C{trusted_networks} (loopback:
    webmail on the same host, and what an eavesdropper cannot see); else
    only when C{disable_plaintext_auth} is off (labs, as in Dovecot's
    tutorial).  Protocols also stop advertising the mechanisms when refused.
    """

    disable_plaintext_auth: bool = True
    trusted_networks: tuple[Any, ...] = LOOPBACK_NETWORKS

    @classmethod
    def from_config(cls, config: Any) -> PlaintextPolicy:
        return cls(disable_plaintext_auth=bool(config.disable_plaintext_auth))

    def __call__(self, transport: Any) -> bool:
        if not self.disable_plaintext_auth or is_secure(transport):
            return True
        address = peer_ip(transport)
        return address is not None and any(
            address.version == network.version and address in network
            for network in self.trusted_networks
        )
