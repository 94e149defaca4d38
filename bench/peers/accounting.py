"""
CPU and memory accounting for a server and all its processes.

Each server runs in a cgroup (v1 ``cpuacct``, or v2) of its own when
``/sys/fs/cgroup`` lets us create one: its CPU time then includes every
process and thread it ever ran, exited children too.  Without a cgroup the
figures are summed over the process tree under the server's first pid from
``/proc/PID/stat`` (utime + stime of the living, cutime + cstime for the
children they reaped).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
_CGROUP_ROOTS = ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")


class Accounting:
    """CPU seconds and PSS of one server (all its processes)."""

    def __init__(self, name: str) -> None:
        self.cgroup = _make_cgroup(f"mxbench-{os.getpid()}-{name}")
        self.pid: int | None = None
        self.process: subprocess.Popen | None = None

    def enter(self) -> None:
        """In the child before exec (``preexec_fn``): a session of its own, and the cgroup."""
        os.setsid()
        if self.cgroup:
            with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as handle:
                handle.write(str(os.getpid()))

    def spawn(self, argv: list[str], output: str | None = None, **popen) -> subprocess.Popen:
        """Start the server's first process (in foreground mode) under this accounting."""
        out = open(output, "wb") if output else None
        self.process = subprocess.Popen(
            argv, preexec_fn=self.enter, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT if out else None, **popen,
        )
        self.pid = self.process.pid
        return self.process

    def stop(self) -> None:
        """TERM to the first process (its own pid), which stops its children; then the cgroup goes."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for _ in range(50):  # children exit just after their master
            if not self.cgroup or not self.pids():
                break
            time.sleep(0.1)
        self.close()

    def pids(self) -> list[int]:
        if self.cgroup:
            with open(os.path.join(self.cgroup, "cgroup.procs")) as handle:
                return [int(line) for line in handle if line.strip()]
        return _tree(self.pid) if self.pid else []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by every process of the server."""
        if self.cgroup:
            usage = os.path.join(self.cgroup, "cpuacct.usage")
            if os.path.exists(usage):
                with open(usage) as handle:
                    return int(handle.read()) / 1e9
            with open(os.path.join(self.cgroup, "cpu.stat")) as handle:
                for line in handle:
                    if line.startswith("usage_usec"):
                        return int(line.split()[1]) / 1e6
        total = 0
        for pid in self.pids():
            fields = _stat(pid)
            if fields:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / CLK_TCK

    def pss_bytes(self) -> int:
        """Proportional set size summed over the server's processes."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as handle:
                    for line in handle:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                pass
        return total

    def close(self) -> None:
        """Remove the cgroup (its processes must have exited)."""
        if self.cgroup:
            try:
                os.rmdir(self.cgroup)
            except OSError:
                pass


def _make_cgroup(name: str) -> str | None:
    for root in _CGROUP_ROOTS:
        if os.path.exists(os.path.join(root, "cgroup.procs")):
            path = os.path.join(root, name)
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                return path
            except OSError:
                continue
    return None


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the state on: index 0 is field 3


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo and len(found) < 100_000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found
