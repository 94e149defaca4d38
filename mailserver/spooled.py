"""
A message as the delivery pipeline hands it on: in memory, or mostly in a
spool file (SMTP DATA past the spill threshold).

L{SpooledMessage} is ``head + file[offset:offset + length]``: the head is
held in memory (a small message whole; for a spooled one its header with
the headers added at end of data and the trace header), the rest stays in
the file.  Writers copy it with L{SpooledMessage.write_to} and readers walk
it in bounded chunks, so a large message is never loaded whole.

Everything here that touches the file blocks: call it from a thread.
Used by the store, the queue and the delivery pipeline alike, so it
imports nothing of ours.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, replace
from typing import Iterator

#: Bytes read or copied per step.
CHUNK = 1 << 16

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class SpooledMessage:
    """C{head} followed by C{length} bytes of the file C{path} from C{offset} (no file: C{head} only)."""

    head: bytes
    path: str | None = None
    offset: int = 0
    length: int = 0

    def __len__(self) -> int:
        return len(self.head) + self.length

    def prepend(self, data: bytes) -> SpooledMessage:
        """This message with C{data} in front (a trace header)."""
        return SpooledMessage(data + self.head, self.path, self.offset, self.length)

    def replace_start(self, count: int, data: bytes) -> SpooledMessage:
        """This message with its first C{count} bytes replaced by C{data}."""
        if count <= len(self.head):
            return replace(self, head=data + self.head[count:])
        skip = count - len(self.head)
        return replace(self, head=data, offset=self.offset + skip, length=self.length - skip)

    def in_memory(self) -> bytes | None:
        """The bytes when the whole message is in memory, else None."""
        return self.head if self.path is None else None

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The message in pieces of at most C{size} bytes (the head first, whole)."""
        if self.head:
            yield self.head
        if self.path is None or not self.length:
            return
        fd = os.open(self.path, _READ_FLAGS)
        try:
            position, end = self.offset, self.offset + self.length
            while position < end:
                data = os.pread(fd, min(size, end - position), position)
                if not data:
                    raise OSError(f"spool file {self.path} is shorter than expected")
                position += len(data)
                yield data
        finally:
            os.close(fd)

    def read(self) -> bytes:
        """The whole message in memory (small messages, file and command targets)."""
        return b"".join(self.chunks())

    def virtual_size(self) -> int:
        """Size with every line ending as CRLF (IMAP's RFC822.SIZE), counted in chunks."""
        extra, last = 0, b""
        for data in self.chunks():
            extra += data.count(b"\n") - data.count(b"\r\n")
            if last == b"\r" and data[:1] == b"\n":
                extra -= 1  # a CRLF split between two chunks
            last = data[-1:]
        return len(self) + extra

    def write_to(self, fd: int, prefix: bytes = b"") -> None:
        """Write C{prefix} and the message to C{fd}, the file part copied in the kernel where it can."""
        write_all(fd, prefix, self.head)
        if self.path is None or not self.length:
            return
        source = os.open(self.path, _READ_FLAGS)
        try:
            _copy_range(source, fd, self.offset, self.length)
        finally:
            os.close(source)

    def view(self) -> MessageView:
        """A read-only bytes-like view for content checks (close it when done)."""
        return MessageView(self)


def to_crlf(data: bytes) -> bytes:
    """C{data} with every line ending CRLF (IMAP's view of a message, milter body chunks)."""
    if b"\r" not in data:  # as we store it (LF only): one pass, a third of the time
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def write_message(fd: int, message: bytes | SpooledMessage, prefix: bytes = b"") -> None:
    """Write C{prefix} and C{message} (bytes, or spooled) to C{fd}; blocking."""
    if isinstance(message, SpooledMessage):
        message.write_to(fd, prefix)
    else:
        write_all(fd, prefix, message)


def write_all(fd: int, *parts: bytes) -> None:
    """Write every part, in order, with as few system calls as the kernel allows."""
    written = os.writev(fd, parts)
    if written == sum(map(len, parts)):
        return
    view = memoryview(b"".join(parts))[written:]
    while view:
        view = view[os.write(fd, view):]


def _copy_range(source: int, target: int, offset: int, length: int) -> None:
    """Copy C{length} bytes of C{source} from C{offset} to C{target}'s position."""
    end = offset + length
    position = offset
    copy = getattr(os, "copy_file_range", None)
    while position < end and copy is not None:
        try:
            done = copy(source, target, min(end - position, 1 << 30), position)
        except OSError:  # EXDEV on old kernels, ENOSYS, EINVAL: copy by hand below
            break
        if done <= 0:
            break
        position += done
    while position < end:
        data = os.pread(source, min(CHUNK, end - position), position)
        if not data:
            raise OSError("spool file is shorter than expected")
        write_all(target, data)
        position += len(data)


class MessageView:
    """
    The bytes of a L{SpooledMessage} as content checks read them: C{len},
    slices and C{find} over the head and a read-only C{mmap} of the file
    part.  The mapping is file-backed: the kernel pages it in and out, it is
    not a copy in our heap.
    """

    def __init__(self, message: SpooledMessage) -> None:
        self.head = message.head
        self._length = len(message)
        self._map: mmap.mmap | None = None
        self._delta = 0
        if message.path is not None and message.length:
            aligned = message.offset - message.offset % mmap.ALLOCATIONGRANULARITY
            self._delta = message.offset - aligned
            fd = os.open(message.path, _READ_FLAGS)
            try:
                self._map = mmap.mmap(fd, message.length + self._delta, access=mmap.ACCESS_READ, offset=aligned)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> MessageView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("MessageView supports slices only")
        start, stop, step = index.indices(self._length)
        if step != 1:
            raise ValueError("MessageView supports contiguous slices only")
        if stop <= start:
            return b""
        split = len(self.head)
        pieces = []
        if start < split:
            pieces.append(self.head[start:min(stop, split)])
        if stop > split and self._map is not None:
            low = max(start, split) - split + self._delta
            pieces.append(self._map[low : stop - split + self._delta])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        start, end, _ = slice(start, end).indices(self._length)
        split = len(self.head)
        if start < split:
            found = self.head.find(sub, start, min(end, split))
            if found >= 0:
                return found
            if end > split and len(sub) > 1:  # a match across the seam
                low = max(start, split - len(sub) + 1)
                found = self[low : min(end, split + len(sub) - 1)].find(sub)
                if found >= 0:
                    return low + found
        if end > split and self._map is not None:
            low = max(start, split) - split + self._delta
            found = self._map.find(sub, low, end - split + self._delta)
            if found >= 0:
                return found - self._delta + split
        return -1

    def startswith(self, prefix: bytes) -> bool:
        return self[: len(prefix)] == prefix
