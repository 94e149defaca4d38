"""
C{mailserver check --dns}: every record an operator must publish, looked up
through twisted.names (the system's resolv.conf, or C{--dns-server}).

For each mail domain (C{mydestination}, C{virtual_mailbox_domains},
C{dkim_signing_domains}; C{localhost} names and C{myhostname} itself left
out, or the C{--domain} names): MX, SPF, DMARC, MTA-STS and TLS-RPT; the
DKIM key of each signing domain; and this host: C{myhostname}'s addresses,
its reverse DNS (with C{--address}) and its HELO SPF record.
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, gatherResults

from mailserver.cli.dkim_check import dns_findings, key_problems
from mailserver.cli.dns_records import (
    FAIL,
    WARN,
    Fetch,
    Finding,
    Site,
    check_dmarc,
    check_host,
    check_mta_sts,
    check_mx,
    check_spf,
    check_tlsrpt,
    guarded,
)
from mailserver.mailauth.dkim_keys import SigningKey
from mailserver.mailauth.dns import DEFAULT_TIMEOUT, DNSLookup

MakeFetch = Callable[[DNSLookup], Fetch]

EPILOG = """\
--dns prints one line per record: OK, WARN or FAIL, the record found and,
when it is not OK, the record to publish instead.  Checked for each mail
domain: MX (and that its hosts resolve, one being myhostname), SPF (one
v=spf1 record that parses, ends in -all or ~all, and with --address passes
for that address), DKIM (the published key is the key on disk), DMARC
(p=none is a warning), MTA-STS (with --fetch-policy, the policy's mx:
patterns cover the MX hosts) and TLS-RPT; and myhostname's A/AAAA, the
address's PTR (with --address) and the HELO SPF record.  Exit status 1 on
any error or FAIL (a DNS time-out is a FAIL).
"""


def server_address(text: str) -> tuple[str, int]:
    """C{HOST[:PORT]} (C{[v6]:PORT} for IPv6) as a resolver address; port 53 by default."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, normalised."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def add_arguments(check: argparse.ArgumentParser) -> None:
    """The C{--dns} options of C{mailserver check}."""
    check.epilog = EPILOG
    check.formatter_class = argparse.RawDescriptionHelpFormatter
    check.add_argument("--dns", action="store_true",
                       help="also look up the DNS records to publish (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT)")
    check.add_argument("--dns-server", type=server_address, metavar="HOST:PORT",
                       help="ask this resolver (default: the system's, from resolv.conf)")
    check.add_argument("--dns-timeout", type=float, metavar="SECONDS",
                       help=f"seconds to wait for each answer (default: {' then '.join(map(str, DEFAULT_TIMEOUT))})")
    check.add_argument("--address", type=ip_address, metavar="IP",
                       help="this server's public address: SPF must pass for it, its PTR must name myhostname")
    check.add_argument("--fetch-policy", action="store_true", help="fetch the MTA-STS policy over HTTPS and "
                       "check its mx: patterns against the MX hosts")
    check.add_argument("--domain", action="append", metavar="DOMAIN",
                       help="check this domain instead of the configured ones (repeatable)")


def mail_domains(config: Any) -> list[str]:
    """The configured domains that receive or send internet mail, in configuration order."""
    names = [*config.mydestination, *config.virtual_mailbox_domains, *config.dkim_signing_domains]
    return [name for name in dict.fromkeys(name.lower().rstrip(".") for name in names)
            if "." in name and name != config.myhostname.lower().rstrip(".")
            and name != "localhost" and not name.startswith("localhost.")]


async def _domain_findings(lookup: DNSLookup, domain: str, site: Site, keys: Sequence[SigningKey],
                           fetch: Fetch | None, stamp: str) -> list[Finding]:
    mx: list[str] = []

    async def mx_check() -> list[Finding]:
        findings, hosts = await check_mx(lookup, domain, site)
        mx.extend(hosts)
        return findings

    findings = await guarded("MX", domain, mx_check())
    findings += await guarded("SPF", domain, check_spf(lookup, domain, site, "v=spf1 mx -all"))
    findings += await dns_findings([key for key in keys if key.domain == domain], lookup)
    findings += await guarded("DMARC", f"_dmarc.{domain}", check_dmarc(lookup, domain))
    findings += await guarded("MTA-STS", f"_mta-sts.{domain}",
                              check_mta_sts(lookup, domain, mx, site, fetch, stamp))
    findings += await guarded("TLS-RPT", f"_smtp._tls.{domain}", check_tlsrpt(lookup, domain))
    return findings


async def published_findings(config: Any, lookup: DNSLookup, site: Site, domains: Sequence[str],
                             fetch: Fetch | None = None, stamp: str | None = None) -> list[Finding]:
    """Every finding: this host first, then each domain in order (the domains looked up concurrently)."""
    stamp = stamp or time.strftime("%Y%m%d", time.gmtime())
    host = site.hostname
    host_part = guarded("HOST", host, check_host(lookup, site))
    helo_part = guarded("SPF", host, check_spf(lookup, host, site, "v=spf1 a -all", missing=WARN))
    keys = key_problems(config)[1]
    parts = [host_part, helo_part] + [_domain_findings(lookup, domain, site, keys, fetch, stamp)
                                      for domain in domains]
    results = await gatherResults([Deferred.fromCoroutine(part) for part in parts])
    return [finding for result in results for finding in result]


def make_resolver(server: tuple[str, int] | None, reactor: Any) -> Any:
    """
    A twisted.names resolver: C{server}'s, or the system's (resolv.conf and
    the hosts file; C{createResolver} always uses the global reactor).
    """
    from twisted.names import client

    if server is not None:
        return client.Resolver(servers=[server], reactor=reactor)
    return client.createResolver()


async def check_published(args: argparse.Namespace, config: Any, reactor: Any,
                          make_fetch: MakeFetch | None = None) -> list[Finding]:
    """The C{--dns} report for the parsed C{args}.  C{make_fetch}: the HTTPS fetcher (tests give a trust root)."""
    timeout = (args.dns_timeout,) if args.dns_timeout else DEFAULT_TIMEOUT
    lookup = DNSLookup(make_resolver(args.dns_server, reactor), timeout=timeout)
    fetch = None
    if args.fetch_policy:
        if make_fetch is None:
            from mailserver.mailauth.mta_sts import https_fetcher

            fetch = https_fetcher(reactor, lookup, timeout=max(timeout) * 5)
        else:
            fetch = make_fetch(lookup)
    domains = [name.lower().rstrip(".") for name in args.domain] if args.domain else mail_domains(config)
    site = Site(config.myhostname.lower().rstrip("."), args.address)
    return await published_findings(config, lookup, site, domains, fetch)


def run_published(args: argparse.Namespace, config: Any) -> list[Finding]:
    """L{check_published} on the global reactor, run until done (the command line's entry)."""
    from twisted.internet import reactor

    outcome: list[Any] = []
    d = Deferred.fromCoroutine(check_published(args, config, reactor)).addBoth(outcome.append)
    if not outcome:  # the look-ups need the reactor; stop it once they are done
        d.addBoth(lambda _: reactor.stop())
        reactor.run()
    result = outcome[0]
    if not isinstance(result, list):
        return [Finding(FAIL, "DNS", "-", f"the look-ups failed: {result.getErrorMessage()}")]
    return result


def summary(findings: Sequence[Finding]) -> str:
    """C{DNS: 9 OK, 2 WARN, 1 FAIL}."""
    counts = {status: sum(f.status == status for f in findings) for status in ("OK", "WARN", "FAIL")}
    return "DNS: " + ", ".join(f"{count} {status}" for status, count in counts.items())
