"""Installs mailserver: the package, the twistd plugin and the console scripts."""

from setuptools import find_packages, setup

setup(
    name="mailserver",
    version="0.1.0",
    description="ESMTP, Maildir, POP3 and IMAP4 mail server in one Twisted process",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=find_packages(include=["mailserver", "mailserver.*"]) + ["twisted.plugins"],
    package_data={"mailserver": ["py.typed"], "twisted.plugins": ["mailserver_plugin.py"]},
    include_package_data=True,
    install_requires=[
        "twisted>=24.7",  # the reactor and twisted.mail's ESMTP, POP3 and IMAP4 servers
        "zope.interface>=6",  # interfaces at every seam
        "service-identity>=24.1",  # certificate host name checks for TLS
        "pyopenssl>=24.2",  # TLS through Twisted
        "cryptography>=42",  # certificate generation and inspection (self-signed default, reload checks)
        "argon2-cffi>=23.1",  # {ARGON2ID} password hashes
        "bcrypt>=4.1",  # {BLF-CRYPT} password hashes
        "dkimpy>=1.1",  # DKIM signing/verification and ARC verification (RFC 6376, 8463, 8617)
        "pynacl>=1.5",  # Ed25519 DKIM signatures: dkimpy needs it for ed25519-sha256
        "authres>=1.2",  # dkimpy's ARC needs it; Authentication-Results parsing
        "publicsuffixlist>=1.0",  # DMARC organizational domains from the bundled Public Suffix List (offline)
        "google-re2>=1.1",  # Sieve :regex and :matches in linear time (no catastrophic backtracking on user patterns)
        "prometheus_client>=0.20",  # /metrics (metrics_listen): registry, collectors, text exposition format
    ],
    extras_require={
        # Property tests (tests/fuzz): hypothesis generates hostile input for every pure parser.
        "test": ["hypothesis>=6", "docutils>=0.20"],  # fuzzing; every .rst page parses (tests/test_docs.py)
    },
    entry_points={
        "console_scripts": [
            "mailserver = mailserver.cli.main:main",
            "newaliases = mailserver.cli.main:newaliases",
            "sendmail = mailserver.cli.sendmail:sendmail_main",
            "mailq = mailserver.cli.queue:mailq_main",
        ]
    },
    zip_safe=False,
)
