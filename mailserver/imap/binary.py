"""
Pure: BINARY (RFC 3516).

L{decoded} gives ``BINARY[section]``: a body part with its
Content-Transfer-Encoding undone (base64, quoted-printable; 7bit, 8bit
and binary as they are).  L{encode_binary_parts} prepares an APPENDed
message sent as ``~{n}`` (literal8): leaf parts whose body holds NUL bytes
or says ``binary`` are re-encoded as base64 before the message is stored,
since the store keeps text (LF line ends) and BODY[] must stay 7-bit
clean; BINARY[] gives the original bytes back.
"""

from __future__ import annotations

import base64
import binascii

from mailserver.imap import parts as mime

_RAW = ("", "7bit", "8bit", "binary")
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class UnknownCte(ValueError):
    """The part's Content-Transfer-Encoding is one we cannot undo (``NO [UNKNOWN-CTE]``)."""


def _encoding(entity: mime.Entity) -> str:
    value = entity.header("content-transfer-encoding") or b""
    return value.decode("latin-1").strip().lower()


def decode(body: bytes, encoding: str) -> bytes:
    """C{body} with C{encoding} undone; L{UnknownCte} for an encoding we do not know."""
    if encoding in _RAW:
        return body
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)  # skips line ends and other non-alphabet bytes
        except binascii.Error:
            # Broken padding: decode the whole quanta, as mail readers do.
            letters = bytes(b for b in body if b in _B64_ALPHABET)
            return binascii.a2b_base64(letters[: len(letters) // 4 * 4])
    if encoding == "quoted-printable":
        return decode_qp(body)
    raise UnknownCte(f"unknown Content-Transfer-Encoding {encoding!r}")


_HEX = b"0123456789ABCDEFabcdef"


def decode_qp(body: bytes) -> bytes:
    """
    Quoted-printable (RFC 2045 6.7): trailing blanks of each line dropped,
    ``=`` at a line's end joins it to the next, ``=XX`` is an octet; a
    ``=`` that starts no valid escape stays as it is.
    """
    out = bytearray()
    lines = body.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        line = line.rstrip(b"\r").rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        j = 0
        while j < len(line):  # bounded by the line length
            k = line.find(b"=", j)
            if k < 0:
                out += line[j:]
                break
            out += line[j:k]
            pair = line[k + 1:k + 3]
            if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                out.append(int(pair, 16))
                j = k + 3
            else:
                out += b"="
                j = k + 1
        if not soft and not last:
            out += b"\r\n"
    return bytes(out)


def decoded(data: bytes, root: mime.Entity, part: tuple[int, ...]) -> bytes | None:
    """
    The bytes ``BINARY[part]`` names (None: no such part).  The whole
    message and multipart or message/rfc822 parts come as they are.
    """
    if not part:
        return data
    try:
        entity, _ = mime.resolve(root, part)
    except mime.SectionError:
        return None
    body = data[entity.body_start:entity.end]
    if entity.children or entity.message is not None:
        return body
    return decode(body, _encoding(entity))


def _leaves(root: mime.Entity) -> list[mime.Entity]:
    out = []
    stack = [root]
    while stack:  # bounded: the parser limits the parts of a message
        entity = stack.pop()
        if entity.children:
            stack.extend(entity.children)
        elif entity.message is not None:
            stack.append(entity.message)
        else:
            out.append(entity)
    return out


def encode_binary_parts(data: bytes) -> bytes:
    """C{data} (CRLF line ends) with every binary leaf part re-encoded as base64."""
    if b"\0" not in data:
        return data
    root = mime.parse(data)
    for entity in sorted(_leaves(root), key=lambda e: e.start, reverse=True):
        body = data[entity.body_start:entity.end]
        if b"\0" not in body and _encoding(entity) != "binary":
            continue
        fields = b"".join(raw for name, raw in entity.fields if name != "content-transfer-encoding")
        encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
        replacement = fields + b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded
        data = data[:entity.start] + replacement + data[entity.end:]
    return data
