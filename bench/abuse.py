"""
Abuse benchmark: floods against a running server, one fresh server per
scenario, loopback only.

Each scenario starts ``twistd -n mailserver`` (``smtp_delivery.ScratchServer``)
in a scratch directory with SMTP and IMAP on free loopback ports, the default
limits, the sample ``etc/`` tables, no client in ``mynetworks`` and one user
(``bench@example.com``, password ``x``).  It runs one flood, bounded in count
and time (clients bound to 127.0.0.2 .. 127.0.0.101 where many source
addresses are simulated), while a probe session in its own process sends an
SMTP ``NOOP`` every 20 ms (and, for IMAP scenarios, another an IMAP ``NOOP``).
One row per scenario: parameters, outcome, the server's peak RSS
(``VmHWM``), the probe's worst reply time and the bytes the server logged::

    python bench/abuse.py --list
    python bench/abuse.py --quick                      # every scenario, smaller counts
    python bench/abuse.py --scenario slow-data --scenario deep-mime-5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abuse_clients import (  # noqa: E402
    PASSWORD, PROBE_INTERVAL, Connection, ProbeProcess, close_all, connect, greeting, imap_tagged,
    listen_overflows, peak_rss_mb, raise_nofile, smtp_envelope, smtp_reply, tally, verdict,
)
from smtp_delivery import RECIPIENT, ScratchServer, free_port, send, wait_for  # noqa: E402

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")
#: Source addresses simulating many clients: all on this machine's loopback.
SOURCES = [f"127.0.0.{n}" for n in range(2, 102)]
#: No flood runs longer than this (plus --drip-seconds), whatever its parameters.
SCENARIO_LIMIT = 150.0
MAX_DRIP_SECONDS = 3600
EXE_LEAF = (b'Content-Type: application/octet-stream; name="invoice.exe"\r\n'
            b'Content-Disposition: attachment; filename="invoice.exe"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n")


@dataclass
class Context:
    """The server of one scenario and its ports."""

    server: ScratchServer
    smtp: int
    imap: int
    root: str
    #: --drip-seconds: how long slow clients drip (0: the scenario's default)
    drip_seconds: int = 0

    def time_limit(self) -> float:
        return SCENARIO_LIMIT + self.drip_seconds


@dataclass
class Scenario:
    """A named flood; its server is started and measured by L{run_scenario}."""

    name: str
    #: (context, quick) -> (parameters text, the flood: a coroutine function giving the outcome text)
    flood: Callable[[Context, bool], tuple[str, Callable[[], Awaitable[str]]]]
    imap_probe: bool = False
    #: synchronous preparation before the log is measured (e.g. filling the mailbox)
    setup: Callable[[Context, bool], None] | None = None


def server_config(imap_port: int) -> dict[str, str]:
    """Default limits (ScratchServer lifts some for throughput), IMAP on, the sample tables, no trusted client."""
    return {
        "imap_listen": f"tcp:{imap_port}:interface=127.0.0.1", "smtpd_client_connection_count_limit": "50",
        "message_size_limit": "10240000", "smtpd_timeout": "300s",
        "header_checks": f"regexp:{ETC}/header_checks", "mime_header_checks": f"regexp:{ETC}/mime_header_checks",
        "body_checks": f"regexp:{ETC}/body_checks",
        # Loopback clients (the probe too) play outside clients: not in mynetworks.
        "mynetworks": "192.0.2.0/24",
    }


async def newcomer(ctx: Context) -> str:
    """Whether a new SMTP client from 127.0.0.1 still gets its banner, and how fast."""
    start = time.perf_counter()
    code, conn = await greeting(ctx.smtp, "127.0.0.1", 10)
    close_all([conn])
    return f"new client: {code} in {(time.perf_counter() - start) * 1000:.0f} ms"


# -- scenarios ------------------------------------------------------------------

def idle_flood(ctx: Context, count: int, hold: int, imap: bool) -> Callable[[], Awaitable[str]]:
    """C{count} connections from the 100 addresses that wait for their greeting, then idle C{hold} s."""
    async def flood() -> str:
        port = ctx.imap if imap else ctx.smtp
        results = await asyncio.gather(*(greeting(port, SOURCES[n % len(SOURCES)], 15, imap) for n in range(count)))
        await asyncio.sleep(hold)
        try:
            return f"greetings: {tally([code for code, _ in results])}; after {hold} s SMTP {await newcomer(ctx)}"
        finally:
            close_all([conn for _, conn in results])

    return flood


def idle_smtp(ctx: Context, quick: bool):
    count, hold = (300, 10) if quick else (1000, 30)
    return f"{count} idle pre-MAIL conns from 100 addrs, held {hold} s", idle_flood(ctx, count, hold, imap=False)


def burst(ctx: Context, quick: bool):
    count = 500 if quick else 1500

    async def flood() -> str:
        results = await asyncio.gather(*(greeting(ctx.smtp, SOURCES[n % len(SOURCES)], 15) for n in range(count)))
        close_all([conn for _, conn in results])
        return "banners: " + tally([code for code, _ in results])

    return f"{count} connects at once from 100 addrs, 15 s for a banner", flood


async def drip(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, seconds: int,
               byte: bytes) -> tuple[float | None, bytes]:
    """One byte a second for C{seconds}; (seconds until the server closed or answered, its line) or (None, b"")."""
    start = time.perf_counter()
    answer = asyncio.ensure_future(reader.readline())
    try:
        for _ in range(seconds):
            try:
                writer.write(byte)
                await writer.drain()
            except OSError:
                break
            done, _ = await asyncio.wait([answer], timeout=1)
            if done:
                break
        if answer.done():
            return time.perf_counter() - start, answer.result().rstrip()
        return None, b""
    finally:
        answer.cancel()
        writer.transport.abort()


def cut_summary(results: list[tuple[float | None, bytes]], seconds: int) -> str:
    """Results of L{drip}; a negative time marks a client that never got to drip (its reply says why)."""
    failed = [line for t, line in results if t is not None and t < 0]
    cut = sorted((t, line) for t, line in results if t is not None and t >= 0)
    dripping = len(results) - len(failed)
    if not cut:
        summary = f"none of {dripping} cut within {seconds} s (bench limit)"
    else:
        first, line = cut[0]
        summary = (f"{len(cut)}/{dripping} cut, first after {first:.0f} s, last after {cut[-1][0]:.0f} s "
                   f"({line[:40].decode(errors='replace') or 'closed'})")
    if failed:
        summary += f"; {len(failed)} did not start ({failed[0][:40].decode(errors='replace')})"
    return summary


def drip_flood(clients: int, seconds: int,
               start: Callable[[int], Awaitable[tuple[Connection | None, bytes]]]) -> Callable[[], Awaitable[str]]:
    """C{clients} sessions set up by C{start(n)} (a connection, or None and why), each dripping 1 byte/s."""
    async def one(n: int) -> tuple[float | None, bytes]:
        conn, why = await start(n)
        if conn is None:
            return -1.0, why
        return await drip(conn[1], conn[0], seconds, b"x")

    async def flood() -> str:
        return cut_summary(await asyncio.gather(*(one(n) for n in range(clients))), seconds)

    return flood


def slow_data(ctx: Context, quick: bool):
    clients, seconds = (5, 20) if quick else (20, 60)
    seconds = ctx.drip_seconds or seconds

    async def start(n: int) -> tuple[Connection | None, bytes]:
        conn, line = await smtp_envelope(ctx.smtp, SOURCES[n % len(SOURCES)])
        if conn is None:
            return None, line or b"closed"
        conn[1].write(b"Subject: slow\r\n\r\n")
        return conn, b""

    return f"{clients} clients in DATA sending 1 byte/s for up to {seconds} s", drip_flood(clients, seconds, start)


def slowloris(ctx: Context, quick: bool):
    clients, seconds = (100, 20) if quick else (400, 60)
    seconds = ctx.drip_seconds or seconds

    async def start(n: int) -> tuple[Connection | None, bytes]:
        code, conn = await greeting(ctx.smtp, SOURCES[n % len(SOURCES)], 15)
        if conn is None or code != "220":
            close_all([conn])
            return None, b"banner: " + code.encode()
        conn[1].write(b"NOOP ")
        return conn, b""

    return (f"{clients} conns from 100 addrs, a command line at 1 byte/s for up to {seconds} s",
            drip_flood(clients, seconds, start))


def smtp_pipeline(ctx: Context, quick: bool):
    clients, commands = (4, 20_000) if quick else (10, 50_000)
    chunk = b"NOOP\r\n" * 1000

    async def one(n: int) -> str:
        code, conn = await greeting(ctx.smtp, SOURCES[n], 15)
        if conn is None:
            return code
        reader, writer = conn
        sent = 0
        try:
            for _ in range(commands // 1000):
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 20)
                sent += 1000
        except (OSError, asyncio.TimeoutError):
            pass
        replies, last = 0, b""
        try:
            for _ in range(commands + 10):
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    break
                replies += 1
                if not line.startswith(b"250"):
                    last = line.rstrip()
        except (OSError, asyncio.TimeoutError):
            pass
        writer.transport.abort()
        return f"{sent} sent/{replies} replies" + (f" ({last[:40].decode(errors='replace')})" if last else "")

    async def flood() -> str:
        results = await asyncio.gather(*(one(n) for n in range(clients)))
        return "; ".join(sorted(set(results)))

    return f"{clients} clients each writing {commands} NOOPs without reading", flood


def literal_bomb(ctx: Context, quick: bool):
    clients, size = (20, 10_000_000) if quick else (100, 10_000_000)
    block = b"x" * 65536

    async def one(n: int) -> str:
        try:
            reader, writer = await connect(ctx.imap, SOURCES[n % len(SOURCES)])
            await reader.readline()
            writer.write(b"a APPEND INBOX {%d}\r\n" % size)
            line = await asyncio.wait_for(reader.readline(), 15)
        except (OSError, asyncio.TimeoutError):
            return "no answer"
        if not line.startswith(b"+"):
            writer.transport.abort()
            return "refused " + line[2:12].decode(errors="replace").strip()
        left = size - 1  # all but the last byte: the literal stays pending in the server
        try:
            while left > 0:
                writer.write(block[:left])
                left -= min(left, len(block))
                await asyncio.wait_for(writer.drain(), 30)
        except (OSError, asyncio.TimeoutError):
            return "cut while sending"
        try:
            said = await asyncio.wait_for(reader.readline(), 3)
        except asyncio.TimeoutError:
            return "literal sent, held"
        except OSError:
            said = b""
        finally:
            writer.transport.abort()
        return "literal sent, then " + (said[:30].decode(errors="replace").strip() or "closed")

    async def flood() -> str:
        results = await asyncio.gather(*(one(n) for n in range(clients)))
        return "before login: " + tally(results)

    return f"{clients} unauthenticated APPEND {{{size // 1_000_000} MB}} literals, all but 1 byte", flood


def fill_mailbox(ctx: Context, quick: bool) -> None:
    """Messages of 100 KB for the FETCH flood, delivered over SMTP."""
    count = 10 if quick else 20
    send(ctx.smtp, count, 100_000, 2)
    wait_for(ctx.server.maildir, count)


def imap_fetch_flood(ctx: Context, quick: bool):
    messages, fetches = (10, 200) if quick else (20, 1000)

    async def flood() -> str:
        reader, writer = await connect(ctx.imap)
        await reader.readline()
        writer.write(f"a LOGIN {RECIPIENT} {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
        await imap_tagged(reader, b"b")
        writer.write(b"".join(b"f%d FETCH 1:* BODY[]\r\n" % n for n in range(fetches)))
        await writer.drain()
        await asyncio.sleep(1)
        writer.transport.abort()
        log = os.path.join(ctx.root, "twistd.log")
        sizes = [os.path.getsize(log)]
        for _ in range(15):
            await asyncio.sleep(1)
            sizes.append(os.path.getsize(log))
        growing = sum(1 for a, b in zip(sizes, sizes[1:]) if b > a)
        return f"disconnected after 1 s; log grew during {growing} of the next 15 s"

    return f"{fetches} pipelined FETCH 1:* BODY[] ({messages} x 100 KB), then disconnect", flood


def idle_imap(ctx: Context, quick: bool):
    count, hold = (500, 10) if quick else (2000, 20)
    return (f"{count} idle unauthenticated IMAP conns from 100 addrs, held {hold} s",
            idle_flood(ctx, count, hold, imap=True))


def big_messages(ctx: Context, quick: bool):
    count, size = (30, 10_000_000) if quick else (150, 10_000_000)
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (size // len(line)) + b".\r\n"

    async def one(n: int) -> str:
        conn, reply = await smtp_envelope(ctx.smtp, SOURCES[n % len(SOURCES)])
        if conn is None:
            return verdict(reply)
        reader, writer = conn
        try:
            for offset in range(0, len(body), 1 << 20):
                writer.write(body[offset:offset + (1 << 20)])
                await writer.drain()
            return verdict(await smtp_reply(reader))
        except OSError:
            return "connection closed"
        finally:
            writer.transport.abort()

    async def flood() -> str:
        return tally(await asyncio.gather(*(one(n) for n in range(count))))

    return f"{count} x {size // 1_000_000} MB messages at once from 100 addrs", flood


def deep_mime_message(depth: int) -> bytes:
    """A message of C{depth} nested multiparts whose innermost part is an .exe attachment, dot-terminated."""
    head = (f"From: <abuse@remote.example>\r\nTo: <{RECIPIENT}>\r\nSubject: deep\r\n"
            "MIME-Version: 1.0\r\n").encode()
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
                       for n in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(depth)))
    return head + opening + EXE_LEAF + closing + b".\r\n"


def deep_mime(depth: int):
    def scenario(ctx: Context, quick: bool):
        content = deep_mime_message(depth)

        async def flood() -> str:
            conn, reply = await smtp_envelope(ctx.smtp)
            if conn is None:
                return verdict(reply)
            conn[1].write(content)
            try:
                return verdict(await asyncio.wait_for(smtp_reply(conn[0]), 60))
            except asyncio.TimeoutError:
                return "no reply in 60 s"
            finally:
                conn[1].transport.abort()

        return f"{depth} nested multiparts, .exe leaf, sample mime_header_checks", flood
    return scenario


def list_wildcards(pairs: int):
    def scenario(ctx: Context, quick: bool):
        name = "a" * 200
        pattern = "*%" * pairs + "b"

        async def flood() -> str:
            reader, writer = await connect(ctx.imap)
            await reader.readline()
            writer.write(f"a LOGIN {RECIPIENT} {PASSWORD}\r\nb CREATE {name}\r\n".encode())
            created = await imap_tagged(reader, b"b")
            start = time.perf_counter()
            writer.write(f'c LIST "" "{pattern}"\r\n'.encode())
            try:
                line = await asyncio.wait_for(imap_tagged(reader, b"c"), 30)
                return f"CREATE {created[2:4].decode()}; LIST {line[2:4].decode()} after {time.perf_counter() - start:.1f} s"
            except asyncio.TimeoutError:
                return f"CREATE {created[2:4].decode()}; LIST: no reply in 30 s (server killed)"
            finally:
                writer.transport.abort()

        return f'LIST "" "{pattern}" ({2 * pairs} wildcards), 200-char folder', flood
    return scenario


SCENARIOS = {s.name: s for s in (
    Scenario("idle-smtp", idle_smtp),
    Scenario("burst", burst),
    Scenario("slowloris", slowloris),
    Scenario("slow-data", slow_data),
    Scenario("smtp-pipeline", smtp_pipeline),
    Scenario("big-messages", big_messages),
    Scenario("deep-mime-1", deep_mime(1)),
    Scenario("deep-mime-101", deep_mime(101)),
    Scenario("deep-mime-1000", deep_mime(1000)),
    Scenario("deep-mime-5000", deep_mime(5000)),
    Scenario("idle-imap", idle_imap, imap_probe=True),
    Scenario("literal-bomb", literal_bomb, imap_probe=True),
    Scenario("imap-fetch-flood", imap_fetch_flood, imap_probe=True, setup=fill_mailbox),
    Scenario("list-wildcards-4", list_wildcards(2), imap_probe=True),
    Scenario("list-wildcards-6", list_wildcards(3), imap_probe=True),
)}


# -- driver ---------------------------------------------------------------------

@dataclass
class Row:
    scenario: str
    parameters: str
    outcome: str
    rss_mb: float
    probe_ms: list[float] = field(default_factory=list)
    log_bytes: int = 0
    seconds: float = 0.0


async def drive(ctx: Context, scenario: Scenario, quick: bool) -> tuple[str, str]:
    parameters, flood = scenario.flood(ctx, quick)
    try:
        outcome = await asyncio.wait_for(flood(), ctx.time_limit())
    except asyncio.TimeoutError:
        outcome = f"bench limit of {ctx.time_limit():.0f} s hit"
    except OSError as e:
        outcome = f"client error: {e}"
    return parameters, outcome


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def run_scenario(scenario: Scenario, quick: bool, scratch: str, drip_seconds: int = 0) -> Row:
    root = tempfile.mkdtemp(prefix=scenario.name + "-", dir=scratch)
    imap_port = free_port()
    server = ScratchServer(root, settings=server_config(imap_port))
    try:
        wait_port(imap_port)
        ctx = Context(server, server.port, imap_port, root, drip_seconds)
        if scenario.setup is not None:
            scenario.setup(ctx, quick)
        log = os.path.join(root, "twistd.log")
        logged = os.path.getsize(log)
        probes = [ProbeProcess(ctx.smtp, imap=False, limit=ctx.time_limit())]
        if scenario.imap_probe:
            probes.append(ProbeProcess(ctx.imap, imap=True, limit=ctx.time_limit()))
        start, overflows = time.perf_counter(), listen_overflows()
        parameters, outcome = asyncio.run(drive(ctx, scenario, quick))
        seconds = time.perf_counter() - start
        overflows = listen_overflows() - overflows
        if overflows:
            outcome += f"; accept queue overflowed {overflows}x"
        worst = []
        for probe in probes:
            ms, reconnects, error = probe.finish()
            worst.append(ms)
            if reconnects:
                outcome += f" [probe reconnected {reconnects}x]"
            if error:
                outcome += f" [probe failed: {error[:60]}]"
        rss = peak_rss_mb(server.process.pid)
        with open(log, "rb") as handle:
            handle.seek(logged)
            written = handle.read()
        tracebacks = written.count(b"Traceback (most recent call last)")
        if tracebacks:
            outcome += f"; {tracebacks} tracebacks logged"
        return Row(scenario.name, parameters, outcome, rss, worst, len(written), seconds)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def print_row(row: Row) -> None:
    probe = " / ".join(f"{ms:.0f}" for ms in row.probe_ms)
    print(f"| {row.scenario} | {row.parameters} | {row.outcome} | {row.rss_mb:.0f} | {probe} | "
          f"{row.log_bytes:,} | {row.seconds:.0f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME",
                        help="run this scenario (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter holds")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--drip-seconds", type=int, default=0, metavar="S",
                        help=f"slowloris and slow-data drip for S seconds (default 60, or 20 with --quick; "
                             f"at most {MAX_DRIP_SECONDS}) to see when a slow client is cut")
    args = parser.parse_args(argv)
    if not 0 <= args.drip_seconds <= MAX_DRIP_SECONDS:
        parser.error(f"--drip-seconds must be 0..{MAX_DRIP_SECONDS}")
    if args.list:
        for scenario in SCENARIOS.values():
            ctx = Context(None, 0, 0, "", args.drip_seconds)  # type: ignore[arg-type]
            print(f"{scenario.name:18} {scenario.flood(ctx, args.quick)[0]}")
        return
    nofile = raise_nofile()
    if nofile < 5000:
        print(f"warning: RLIMIT_NOFILE hard limit is {nofile}; the bigger floods will fail in the client")
    scratch = tempfile.mkdtemp(prefix="abuse-bench-")
    print(f"RLIMIT_NOFILE {nofile} (servers inherit it); probe: SMTP NOOP every {PROBE_INTERVAL * 1000:.0f} ms"
          " (/ IMAP NOOP); peak RSS = server VmHWM\n")
    print("| scenario | parameters | outcome | peak RSS MB | probe worst ms | log bytes | s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    try:
        for name in args.scenario or list(SCENARIOS):
            print_row(run_scenario(SCENARIOS[name], args.quick, scratch, args.drip_seconds))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
