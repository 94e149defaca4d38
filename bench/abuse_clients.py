"""
The client side of the abuse benchmark (bench/abuse.py): loopback
connections from chosen source addresses, SMTP and IMAP reply readers, the
probe session (in a process of its own, so a flood's clients cannot delay
it), and the figures read from the host: a process's peak RSS, the accept
queue overflows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from typing import Any

from smtp_delivery import RECIPIENT

PASSWORD = "x"  # ScratchServer's passwd entry is {PLAIN}x
PROBE_INTERVAL = 0.02


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full (all sockets of this host)."""
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:]))
            return int(fields.get("ListenOverflows", 0))
    return 0


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (servers started later inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return target


# -- client helpers ---------------------------------------------------------

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, source: str = "127.0.0.1") -> Connection:
    """A connection to 127.0.0.1:C{port} from the loopback address C{source}."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def smtp_reply(reader: asyncio.StreamReader) -> bytes:
    """The last line of one (multi-line) SMTP reply; b"" if the server closed."""
    for _ in range(100):
        line = await reader.readline()
        if not line or line[3:4] != b"-":
            return line.rstrip()
    return b"(reply longer than 100 lines)"


async def imap_tagged(reader: asyncio.StreamReader, tag: bytes, limit: int = 1_000_000) -> bytes:
    """Read until the tagged reply of C{tag} (or a continuation when tag is b"+"); b"" if closed."""
    for _ in range(limit):
        line = await reader.readline()
        if not line or line.startswith(tag + b" ") or line.startswith(b"* BYE"):
            return line.rstrip()
    return b"(no tagged reply)"


async def greeting(port: int, source: str, timeout: float, imap: bool = False) -> tuple[str, Connection | None]:
    """
    Connect and read the banner within C{timeout} seconds: ("220", conn),
    ("421", conn), ("* OK", conn) for IMAP, or ("closed"|"timeout"|"refused", None).
    """
    try:
        reader, writer = await asyncio.wait_for(connect(port, source), timeout)
    except asyncio.TimeoutError:
        return "timeout", None
    except OSError:
        return "refused", None
    try:
        line = await asyncio.wait_for(reader.readline() if imap else smtp_reply(reader), timeout)
    except (OSError, asyncio.TimeoutError):
        writer.close()
        return "timeout", None
    if not line:
        writer.close()
        return "closed", None
    return line[:4].decode(errors="replace").strip() if imap else line[:3].decode(errors="replace"), (reader, writer)


def close_all(conns: list[Connection | None]) -> None:
    """Reset every connection (no QUIT: an abusive client just goes)."""
    for conn in conns:
        if conn is not None:
            conn[1].transport.abort()


def tally(codes: list[str]) -> str:
    """Counts of each outcome, the most frequent first: "499 220, 501 421"."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return ", ".join(f"{n} {code}" for code, n in sorted(counts.items(), key=lambda kv: -kv[1]))


async def smtp_envelope(port: int, source: str = "127.0.0.1") -> tuple[Connection | None, bytes]:
    """Banner, EHLO, MAIL, RCPT, DATA; the connection after 354, or None and the failing reply."""
    try:
        reader, writer = await connect(port, source)
    except OSError as e:
        return None, str(e).encode()
    line = await smtp_reply(reader)
    for command in (b"EHLO abuse.example", b"MAIL FROM:<abuse@remote.example>", f"RCPT TO:<{RECIPIENT}>".encode(),
                    b"DATA"):
        if not line.startswith((b"2", b"3")):
            writer.transport.abort()
            return None, line
        writer.write(command + b"\r\n")
        line = await smtp_reply(reader)
    if not line.startswith(b"354"):
        writer.transport.abort()
        return None, line
    return (reader, writer), line


def verdict(line: bytes) -> str:
    """A reply at the end of data, as an outcome word."""
    if not line:
        return "connection closed"
    if line.startswith(b"250"):
        return "accepted 250"
    return "refused " + line[:9].decode(errors="replace").strip()


# -- probes -------------------------------------------------------------------

class Probe:
    """A session sending NOOP every 20 ms; remembers the worst reply time (a reply never given counts)."""

    def __init__(self, port: int, imap: bool) -> None:
        self.port = port
        self.imap = imap
        self.worst = 0.0
        self.reconnects = -1
        self._sent = 0.0

    async def _open(self) -> Connection:
        self.reconnects += 1
        reader, writer = await connect(self.port)
        if not self.imap:
            await smtp_reply(reader)
            return reader, writer
        await reader.readline()
        writer.write(f"p0 LOGIN {RECIPIENT} {PASSWORD}\r\n".encode())
        await imap_tagged(reader, b"p0")
        return reader, writer

    async def run(self) -> None:
        start = time.perf_counter()
        self._sent = start
        conn = await self._open()
        self.worst = time.perf_counter() - start
        for n in range(1, 1_000_000):
            reader, writer = conn
            self._sent = time.perf_counter()
            if self.imap:
                writer.write(b"p%d NOOP\r\n" % n)
                line = await imap_tagged(reader, b"p%d" % n)
            else:
                writer.write(b"NOOP\r\n")
                line = await smtp_reply(reader)
            if not line:
                writer.transport.abort()
                conn = await self._open()
            self.worst = max(self.worst, time.perf_counter() - self._sent)
            self._sent = 0.0
            await asyncio.sleep(PROBE_INTERVAL)

    def pending(self) -> float:
        """The worst reply time, counting a NOOP still unanswered now."""
        return max(self.worst, time.perf_counter() - self._sent if self._sent else 0.0)


def _probe_main(port: int, imap: bool, limit: float, ready: Any, stop: Any, results: Any) -> None:
    """A probe process: its own interpreter and event loop, so the flood's clients cannot delay it."""
    async def main() -> None:
        probe = Probe(port, imap)
        task = asyncio.ensure_future(probe.run())
        for _ in range(int((limit + 60) * 40)):
            if probe.reconnects == 0 and probe.worst and not ready.is_set():
                ready.set()
            if stop.is_set() or task.done():
                break
            await asyncio.sleep(0.025)
        error = task.exception() if task.done() and not task.cancelled() else None
        results.put((probe.pending(), max(0, probe.reconnects), f"{error!r}" if error else ""))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


class ProbeProcess:
    """L{Probe} in a child process; L{finish} gives its worst reply time."""

    def __init__(self, port: int, imap: bool, limit: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self.stop, self.results = context.Event(), context.Event(), context.Queue()
        self.process = context.Process(target=_probe_main, args=(port, imap, limit, self.ready, self.stop, self.results),
                                       daemon=True)
        self.process.start()
        if not self.ready.wait(30):
            raise RuntimeError("the probe session did not start")

    def finish(self) -> tuple[float, int, str]:
        """(worst reply time in ms, reconnections, the probe's own error if it died)."""
        self.stop.set()
        worst, reconnects, error = self.results.get(timeout=30)
        self.process.join(10)
        return worst * 1000, reconnects, error
